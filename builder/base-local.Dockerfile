# Base stage (local profile): a genuine FrankenPHP toolchain from Debian bookworm's packages and
# the Go module proxy only, for machines that reach package mirrors but no image registry.
#   PHP 8.2 from Debian's php8.2 source package: ZTS, libphp linked statically into the binary,
#   exactly the extensions PHP_EXTENSIONS names (php-extensions.sh; redis from Debian's
#   php-redis source). The binary then only needs Debian's shared libraries
#   (orangescrum-ee/debian-runtime-packages.txt).
#   Go from the module proxy (golang.org/toolchain), FrankenPHP from its Go modules (frankenphp/).
#   Composer (Debian's package, run by this PHP so its platform check sees the binary's
#   extensions) and git, for the embed stage's dependency step.
# The Go module and build caches stay in the image: the embed stage only adds the app and relinks.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The package lists stay until the next step has fetched the PHP sources.
# hadolint ignore=DL3008,DL3009
RUN echo 'deb-src http://deb.debian.org/debian bookworm main' > /etc/apt/sources.list.d/deb-src.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates build-essential dpkg-dev pkg-config autoconf automake libtool bison re2c \
        file xz-utils golang-go git unzip \
        libxml2-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev zlib1g-dev libonig-dev \
        libicu-dev libpng-dev libjpeg-dev libwebp-dev libfreetype-dev libzip-dev libsodium-dev \
        libpq-dev libargon2-dev libbrotli-dev libbz2-dev libgmp-dev libxslt1-dev

# PHP as Debian ships it (upstream source + Debian's patches), with redis as a built-in extension.
WORKDIR /usr/src
RUN apt-get source --download-only php8.2 php-redis >/dev/null \
    && dpkg-source -x php8.2_*.dsc php-src >/dev/null \
    && dpkg-source -x php-redis_*.dsc php-redis >/dev/null \
    && redis_dir=$(find php-redis -maxdepth 1 -type d -name 'redis-*' | sort -V | tail -1) \
    && cp -a "$redis_dir" php-src/ext/redis \
    && rm -rf /var/lib/apt/lists/* ./*.tar.* ./*.dsc php-redis

# The extension set: the same names as the static profile's PHP_EXTENSIONS (the `php_extensions`
# setting). opcache is built as the shared zend_extension PHP 8.2 makes of it.
ARG PHP_EXTENSIONS=bcmath,ctype,curl,dom,fileinfo,filter,gd,iconv,intl,mbstring,opcache,openssl,pdo,pdo_pgsql,pgsql,phar,redis,session,simplexml,sockets,sodium,tokenizer,xml,xmlreader,xmlwriter,zip,zlib
ENV PHP_EXTENSIONS=${PHP_EXTENSIONS}
COPY php-extensions.sh /usr/local/bin/php-extensions
WORKDIR /usr/src/php-src
# hadolint ignore=SC2086
RUN flags=$(php-extensions "$PHP_EXTENSIONS") \
    && ./buildconf --force >/dev/null \
    && ./configure --prefix=/usr/local --with-config-file-path=/usr/local/etc/php \
        --enable-embed=static --enable-zts --disable-zend-signals \
        --enable-zend-max-execution-timers --disable-cgi --disable-phpdbg \
        --disable-all --with-password-argon2 $flags \
        > /usr/src/php-configure.log \
    && if ! make -j"$(nproc)" > /usr/src/php-make.log 2>&1; then \
        tail -60 /usr/src/php-make.log; exit 1; \
    fi
# libphp.a.dynsym lists PHP's symbols for the linker's --dynamic-list, so that a shared
# zend_extension (opcache) can bind to the PHP inside the binary; upstream's gnu static build
# links the same way (static-php-cli UnixBuilderBase.php, `-Wl,--dynamic-list=...libphp.a.dynsym`).
# hadolint ignore=SC2086
RUN make install > /dev/null \
    && libphp=$(find /usr/local/lib -name libphp.a | head -1) \
    && { [ "$libphp" = /usr/local/lib/libphp.a ] || ln -s "$libphp" /usr/local/lib/libphp.a; } \
    && { echo '{'; nm --defined-only -g /usr/local/lib/libphp.a 2>/dev/null \
        | awk 'NF == 3 && $2 ~ /^[BDRTVW]$/ { print "  " $3 ";" }' | sort -u; echo '};'; } \
        > /usr/local/lib/libphp.a.dynsym \
    && php -r 'exit(PHP_ZTS ? 0 : 1);' \
    && for ext in $(echo "$PHP_EXTENSIONS" | tr , ' '); do \
        if [ "$ext" = opcache ]; then load='-d zend_extension=opcache'; name='Zend OPcache'; \
        else load=''; name=$ext; fi; \
        php $load -r "exit(extension_loaded('$name') ? 0 : 1);" \
            || { echo "missing extension $ext"; exit 1; }; \
    done \
    && php -v

# Composer from Debian (pinned to its upstream version: Debian's security revisions may move),
# run by the PHP above.
ARG COMPOSER_VERSION=2.5.5
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends composer \
    && rm -rf /var/lib/apt/lists/* \
    && printf '#!/bin/sh\nexec /usr/local/bin/php -d memory_limit=-1 /usr/bin/composer "$@"\n' \
        > /usr/local/bin/composer \
    && chmod 755 /usr/local/bin/composer \
    && if ! composer --version 2>/dev/null | grep -q "^Composer version ${COMPOSER_VERSION} "; then \
        echo "composer ${COMPOSER_VERSION} is not what Debian installed: $(composer --version)"; \
        exit 1; \
    fi

# Machines behind a TLS-inspecting proxy put its CA in builder/certs/ (scripts/host-ca-certs.sh).
COPY certs/ /usr/local/share/ca-certificates/durango/
RUN update-ca-certificates > /dev/null

# Go: Debian's go 1.19 only bootstraps; the pinned toolchain comes from the module proxy.
ARG GO_VERSION=1.27.3
ENV GOPATH=/go GOMODCACHE=/go/pkg/mod GOCACHE=/root/.cache/go-build GOFLAGS=-modcacherw \
    GOTOOLCHAIN=local PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /tmp
RUN toolchain="golang.org/toolchain@v0.0.1-go${GO_VERSION}.linux-$(dpkg --print-architecture)" \
    && GOMODCACHE=/tmp/toolchain /usr/bin/go mod download "$toolchain" \
    && cp -a "/tmp/toolchain/${toolchain}" /usr/local/go \
    && chmod -R u+w /usr/local/go && chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/* \
    && rm -rf /tmp/toolchain && apt-get purge -y golang-go > /dev/null && go version

# FrankenPHP from its Go modules, pinned by frankenphp/go.mod and go.sum. The frankenphp module
# is copied out of the module cache to a writable place: its app.tar is where an app is embedded.
# Only go.mod and go.sum are read here: the command's own Go files (main.go, appdir/) come with
# the embed stage, so changing them never rebuilds this image. Every package the command links
# is compiled once into Go's build cache (`frankenphp-relink --warm`).
ARG FRANKENPHP_VERSION=1.12.7
ARG FRANKENPHP_TAGS=nobadger,nomysql,nopgx,nowatcher,nomercure
ENV FRANKENPHP_VERSION=${FRANKENPHP_VERSION} FRANKENPHP_TAGS=${FRANKENPHP_TAGS} \
    FRANKENPHP_SRC=/go/src/frankenphp FRANKENPHP_BUILD=/go/src/frankenphp-build
WORKDIR /go/src/frankenphp-build
COPY frankenphp/go.mod frankenphp/go.sum ./
RUN go mod download && go mod verify > /dev/null \
    && cp -a "$(go list -m -f '{{.Dir}}' github.com/dunglas/frankenphp)" "$FRANKENPHP_SRC" \
    && chmod -R u+w "$FRANKENPHP_SRC" \
    && go mod edit -replace "github.com/dunglas/frankenphp=$FRANKENPHP_SRC"
COPY relink-local.sh /usr/local/bin/frankenphp-relink
RUN frankenphp-relink --warm

WORKDIR /go/src/app
