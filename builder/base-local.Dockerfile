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

# Composer 2.8 from Debian trixie's packages (bookworm's is 2.5), run by the PHP above.
# composer-debian.txt pins composer and the PHP libraries it needs (all Architecture all) by
# version and SHA-256. apt-get downloads them through a private apt state that reads trixie's
# signed index; they are never installed (trixie's php-cli would pull trixie's libc): their PHP
# tree and the composer script are unpacked where Debian puts them, /usr/share/php and /usr/bin,
# the absolute paths their autoloaders require.
ARG COMPOSER_VERSION=2.8.8
COPY composer-debian.txt /usr/src/composer-debian.txt
# hadolint ignore=DL3003,SC2046
RUN apt=/tmp/composer-apt && pins=/usr/src/composer-debian.txt \
    && mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/debs" "$apt/root" \
    && printf '%s\n' 'deb http://deb.debian.org/debian trixie main' \
        'deb http://deb.debian.org/debian-security trixie-security main' > "$apt/sources.list" \
    && opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::archives=$apt/archives" \
        -o Dir::State::status=/dev/null -o APT::Sandbox::User=root) \
    && apt-get "${opts[@]}" -qq update \
    && (cd "$apt/debs" && apt-get "${opts[@]}" -qq download \
        $(awk '!/^#/ && NF { print $1 "=" $2 }' "$pins") > /dev/null) \
    && awk '!/^#/ && NF { v = $2; sub(":", "%3a", v); print $3 "  " $1 "_" v "_all.deb" }' "$pins" \
        | (cd "$apt/debs" && sha256sum --quiet -c -) \
    && for deb in "$apt"/debs/*.deb; do dpkg-deb -x "$deb" "$apt/root"; done \
    && if [ -e /usr/share/php ] || [ -e /usr/bin/composer ]; then \
        echo "composer: /usr/share/php or /usr/bin/composer exists already (Debian's php-*?)"; \
        exit 1; \
    fi \
    && cp -a "$apt/root/usr/share/php" /usr/share/php \
    && install -m 755 "$apt/root/usr/bin/composer" /usr/bin/composer && rm -rf "$apt" \
    && printf '#!/bin/sh\nexec /usr/local/bin/php -d memory_limit=-1 /usr/bin/composer "$@"\n' \
        > /usr/local/bin/composer \
    && chmod 755 /usr/local/bin/composer \
    && if ! composer --version 2>/dev/null | grep -q "^Composer version ${COMPOSER_VERSION} "; then \
        echo "composer ${COMPOSER_VERSION} is not what was unpacked: $(composer --version)"; \
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
# is used from a copy out of the module cache; its app.tar stays empty (apps are appended to the
# binary instead).
# Every package the command links is compiled once into Go's build cache (`frankenphp-relink
# --warm`) before the command's own Go files are copied: changing them relinks only.
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

# The base binary, linked once per base key: FrankenPHP, our command (main.go, appdir/, payload/)
# and an empty app. The extract stage appends each app to it (builder/frankenphp/payload), so an
# app change never links, compiles or builds an image. PHP's production defaults ride along:
# the embedded php.ini starts from them.
COPY frankenphp/*.go ./
COPY frankenphp/appdir/ ./appdir/
COPY frankenphp/payload/ ./payload/
WORKDIR /go/src/app
RUN frankenphp-relink "/go/src/app/dist/frankenphp-linux-$(uname -m)" \
    && install -D -m 0644 /usr/src/php-src/php.ini-production \
        /usr/local/share/durango/php.ini-production
