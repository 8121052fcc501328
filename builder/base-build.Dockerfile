# Base stage (static profile): the upstream FrankenPHP static builder with PHP and its
# extensions compiled once, without the app. Slow (about 30 minutes); the pipeline rebuilds it
# only when this file, its build arguments or a file of builder/ it can read changes.
ARG FRANKENPHP_BUILDER_IMAGE=dunglas/frankenphp:static-builder-gnu-1.12.7
FROM ${FRANKENPHP_BUILDER_IMAGE}

ARG PHP_VERSION=8.3.27
ENV PHP_VERSION=${PHP_VERSION} \
    PHP_EXTENSIONS=bcmath,ctype,curl,dom,fileinfo,filter,gd,iconv,intl,mbstring,opcache,openssl,pdo,pdo_pgsql,pgsql,phar,redis,session,simplexml,sockets,sodium,tokenizer,xml,xmlreader,xmlwriter,zip,zlib \
    PHP_EXTENSION_LIBS=freetype,libjpeg,libwebp,libavif \
    NO_COMPRESS=1

WORKDIR /go/src/app
COPY Caddyfile php.ini ./dist/
# Compile PHP and FrankenPHP once; the static-php-cli work tree stays in the image so the
# embed stage only adds the app and links again.
RUN ./build-static.sh
