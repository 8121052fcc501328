# Base stage (static profiles, production): upstream FrankenPHP's static builder with PHP and its
# libraries compiled once by static-php-cli (spc), and the base binary linked once by
# relink-static.sh with an empty app. Needs the upstream builder image and the internet.
#   gnu builder (default, profile `static`): glibc dynamic, everything else static, for a glibc
#   runtime: glibc's allocator and opcache's JIT (FrankenPHP's performance docs advise against
#   musl in production).
#   musl builder (profile `static-musl`): a fully static binary for Alpine 3.23, without the JIT.
# What each step mirrors in upstream's build-static.sh (v1.12.7) is in docs/STATIC_BUILD.md.
ARG FRANKENPHP_BUILDER_IMAGE=dunglas/frankenphp:static-builder-gnu-1.12.7
# Composer's own single-file image, pinned (upstream's musl builder copies an unpinned 2.x the
# same way, static-builder-musl.Dockerfile:89-91; the gnu builder has none).
ARG COMPOSER_IMAGE=composer/composer:2.8.12-bin
FROM ${COMPOSER_IMAGE} AS composer

FROM ${FRANKENPHP_BUILDER_IMAGE}

ARG SPC_LIBC=glibc
ARG SPC_VERSION=2.8.5
ARG PHP_VERSION=8.3.27
ARG PHP_EXTENSIONS=bcmath,ctype,curl,dom,fileinfo,filter,gd,iconv,intl,mbstring,opcache,openssl,pdo,pdo_pgsql,pgsql,phar,redis,session,simplexml,sockets,sodium,tokenizer,xml,xmlreader,xmlwriter,zip,zlib
ARG PHP_EXTENSION_LIBS=freetype,libjpeg,libwebp,libavif
ARG FRANKENPHP_VERSION=1.12.7
ENV SPC_LIBC=${SPC_LIBC} PHP_VERSION=${PHP_VERSION} PHP_EXTENSIONS=${PHP_EXTENSIONS} \
    PHP_EXTENSION_LIBS=${PHP_EXTENSION_LIBS} FRANKENPHP_VERSION=${FRANKENPHP_VERSION} \
    FRANKENPHP_SRC=/go/src/app FRANKENPHP_BUILD=/go/src/frankenphp-build \
    SPC_DEFAULT_C_FLAGS="-fPIC -O2" \
    SPC_CMD_VAR_PHP_MAKE_EXTRA_CFLAGS=" -fPIE -fstack-protector-strong -O2 -w -s"

WORKDIR /go/src/app
# spc pinned to a release (build-static.sh downloads an unpinned nightly, build-static.sh:136),
# a fresh buildroot every time (CLEAN=1, build-static.sh:103-106: the published image's
# buildroot would otherwise be reused, upstream issue #1313), then the same download and build
# build-static.sh runs (build-static.sh:48-57, 186-221), embed SAPI and CLI only: the binary is
# linked by relink-static.sh with our pinned modules. The GitHub token is a build secret.
# hadolint ignore=DL3003,DL4006,SC2086
RUN --mount=type=secret,id=github-token \
    rm -rf dist && mkdir -p dist/static-php-cli && cd dist/static-php-cli \
    && curl -fsSL "https://github.com/crazywhalecc/static-php-cli/releases/download/${SPC_VERSION}/spc-linux-$(uname -m).tar.gz" \
        | tar -xz \
    && chmod +x spc \
    && if [ "$SPC_LIBC" = musl ]; then opts="--disable-opcache-jit"; pre="--prefer-pre-built"; \
       else opts=""; pre=""; fi \
    && GITHUB_TOKEN="$(cat /run/secrets/github-token 2>/dev/null || true)" \
       ./spc download --with-php="$PHP_VERSION" --for-extensions="$PHP_EXTENSIONS" \
           --for-libs="$PHP_EXTENSION_LIBS,brotli" --ignore-cache-sources=php-src --retry 5 $pre \
    && ./spc build --enable-zts --build-embed --build-cli $opts \
           --with-config-file-path=/etc/frankenphp --with-config-file-scan-dir=/etc/frankenphp/php.d \
           "$PHP_EXTENSIONS" --with-libs="$PHP_EXTENSION_LIBS,brotli" \
    && install -D -m 0644 source/php-src/php.ini-production \
        /usr/local/share/durango/php.ini-production \
    && rm -rf downloads source

# Composer, run by the static PHP CLI just built (its platform check sees the binary's
# extensions); GNU tar for pack-deps.sh (the musl image's may be busybox's).
COPY --from=composer /composer /usr/local/bin/composer.phar
# hadolint ignore=DL3018
RUN printf '#!/bin/sh\nexec /go/src/app/dist/static-php-cli/buildroot/bin/php -d memory_limit=-1 /usr/local/bin/composer.phar "$@"\n' \
        > /usr/local/bin/composer \
    && chmod 755 /usr/local/bin/composer \
    && if command -v apk > /dev/null; then apk add --no-cache tar; fi \
    && composer --version

# FrankenPHP's command from our pinned modules; the frankenphp module is upstream's checkout in
# this image (same version), its app.tar empty: apps are appended to the binary instead.
WORKDIR /go/src/frankenphp-build
COPY frankenphp/go.mod frankenphp/go.sum ./
RUN go mod download && go mod verify > /dev/null \
    && go mod edit -replace "github.com/dunglas/frankenphp=$FRANKENPHP_SRC"
COPY relink-static.sh /usr/local/bin/frankenphp-relink
RUN frankenphp-relink --warm
# The base binary, linked once per base key with an empty app: the extract stage appends each
# app to it (builder/frankenphp/payload), as upstream's build-static.sh would embed it.
COPY frankenphp/*.go ./
COPY frankenphp/appdir/ ./appdir/
COPY frankenphp/payload/ ./payload/
WORKDIR /go/src/app
RUN frankenphp-relink "/go/src/app/dist/frankenphp-linux-$(uname -m)"
