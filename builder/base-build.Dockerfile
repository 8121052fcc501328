# Base stage (static profile, production): the upstream FrankenPHP static builder with PHP and
# its extensions compiled once, without the app (about 30 minutes). The static-php-cli work tree
# (buildroot with libphp.a) stays in the image, so the shared embed stage only relinks.
# Needs the upstream builder image (a registry, or a local copy); the local profile does not.
ARG FRANKENPHP_BUILDER_IMAGE=dunglas/frankenphp:static-builder-gnu-1.12.7
FROM ${FRANKENPHP_BUILDER_IMAGE}

ARG PHP_VERSION=8.3.27
ARG PHP_EXTENSIONS=bcmath,ctype,curl,dom,fileinfo,filter,gd,iconv,intl,mbstring,opcache,openssl,pdo,pdo_pgsql,pgsql,phar,redis,session,simplexml,sockets,sodium,tokenizer,xml,xmlreader,xmlwriter,zip,zlib
ARG PHP_EXTENSION_LIBS=freetype,libjpeg,libwebp,libavif
ARG FRANKENPHP_VERSION=1.12.7
ENV PHP_VERSION=${PHP_VERSION} PHP_EXTENSIONS=${PHP_EXTENSIONS} \
    PHP_EXTENSION_LIBS=${PHP_EXTENSION_LIBS} FRANKENPHP_VERSION=${FRANKENPHP_VERSION} \
    FRANKENPHP_SRC=/go/src/app NO_COMPRESS=1

WORKDIR /go/src/app
# Compile PHP, its libraries and a first FrankenPHP (no app) once.
RUN ./build-static.sh
COPY relink-static.sh /usr/local/bin/frankenphp-relink
