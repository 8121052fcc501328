# Base stage (local profile): a genuine FrankenPHP toolchain from Debian bookworm's packages and
# the Go module proxy only, for machines that reach package mirrors but no image registry.
#   PHP 8.2 from Debian's php8.2 source package: ZTS, libphp linked statically into the binary,
#   extensions compiled in (redis from Debian's php-redis source). The binary then only needs
#   Debian's shared libraries (orangescrum-ee/debian-runtime-packages.txt).
#   Go from the module proxy (golang.org/toolchain), FrankenPHP from its Go modules (frankenphp/).
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
        file xz-utils golang-go \
        libxml2-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev zlib1g-dev libonig-dev \
        libicu-dev libpng-dev libjpeg-dev libwebp-dev libfreetype-dev libzip-dev libsodium-dev \
        libpq-dev libargon2-dev libbrotli-dev

# PHP as Debian ships it (upstream source + Debian's patches), with redis as a built-in extension.
# opcache is missing on purpose: PHP 8.2 can only build it as a shared zend_extension, which a
# single self-contained binary cannot load.
ARG PHP_EXTENSIONS=bcmath,ctype,curl,dom,fileinfo,filter,gd,iconv,intl,mbstring,openssl,pdo,pdo_pgsql,pgsql,phar,redis,session,simplexml,sockets,sodium,tokenizer,xml,xmlreader,xmlwriter,zip,zlib
ENV PHP_EXTENSIONS=${PHP_EXTENSIONS}
WORKDIR /usr/src
RUN apt-get source --download-only php8.2 php-redis >/dev/null \
    && dpkg-source -x php8.2_*.dsc php-src >/dev/null \
    && dpkg-source -x php-redis_*.dsc php-redis >/dev/null \
    && redis_dir=$(find php-redis -maxdepth 1 -type d -name 'redis-*' | sort -V | tail -1) \
    && cp -a "$redis_dir" php-src/ext/redis \
    && rm -rf /var/lib/apt/lists/* ./*.tar.* ./*.dsc php-redis

WORKDIR /usr/src/php-src
RUN ./buildconf --force >/dev/null \
    && ./configure --prefix=/usr/local --with-config-file-path=/usr/local/etc/php \
        --enable-embed=static --enable-zts --disable-zend-signals \
        --enable-zend-max-execution-timers --disable-cgi --disable-phpdbg --disable-opcache \
        --without-sqlite3 --without-pdo-sqlite \
        --enable-bcmath --enable-ctype --with-curl --enable-dom --enable-fileinfo --enable-filter \
        --enable-gd --with-jpeg --with-webp --with-freetype --with-iconv --enable-intl \
        --enable-mbstring --with-openssl --enable-pdo --with-pdo-pgsql --with-pgsql \
        --enable-phar --enable-session --enable-simplexml --enable-sockets --with-sodium \
        --enable-tokenizer --enable-xml --enable-xmlreader --enable-xmlwriter --with-zip \
        --with-zlib --enable-redis --with-password-argon2 > /usr/src/php-configure.log \
    && if ! make -j"$(nproc)" > /usr/src/php-make.log 2>&1; then \
        tail -60 /usr/src/php-make.log; exit 1; \
    fi
RUN make install > /dev/null \
    && libphp=$(find /usr/local/lib -name libphp.a | head -1) \
    && { [ "$libphp" = /usr/local/lib/libphp.a ] || ln -s "$libphp" /usr/local/lib/libphp.a; } \
    && php -r 'exit(PHP_ZTS ? 0 : 1);' \
    && for ext in $(echo "$PHP_EXTENSIONS" | tr , ' '); do \
        php -r "exit(extension_loaded('$ext') ? 0 : 1);" || { echo "missing extension $ext"; exit 1; }; \
    done \
    && php -v

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
ARG FRANKENPHP_VERSION=1.12.7
ARG FRANKENPHP_TAGS=nobadger,nomysql,nopgx,nowatcher,nomercure
ENV FRANKENPHP_VERSION=${FRANKENPHP_VERSION} FRANKENPHP_TAGS=${FRANKENPHP_TAGS} \
    FRANKENPHP_SRC=/go/src/frankenphp
WORKDIR /go/src/frankenphp-build
COPY frankenphp/ ./
RUN go mod download && go mod verify > /dev/null \
    && cp -a "$(go list -m -f '{{.Dir}}' github.com/dunglas/frankenphp)" "$FRANKENPHP_SRC" \
    && chmod -R u+w "$FRANKENPHP_SRC" \
    && go mod edit -replace "github.com/dunglas/frankenphp=$FRANKENPHP_SRC"
COPY relink-local.sh /usr/local/bin/frankenphp-relink
RUN frankenphp-relink /usr/local/bin/frankenphp && frankenphp version

WORKDIR /go/src/app
