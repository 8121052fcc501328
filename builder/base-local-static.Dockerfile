# Base stage (profile local-static): a FULLY STATIC FrankenPHP (no dynamic section: glibc's
# libc.a, every library as a static archive) from Debian's packages and source packages and the
# Go module proxy only, for the lean runtime image (scripts/lean-image).
#   PHP 8.4 from Debian's php8.4 source (trixie's release: the mirror serves no later one), ZTS,
#   embed=static, exactly PHP_EXTENSIONS, opcache linked in (php84-static-opcache.patch).
#   oniguruma, libzip, curl and libpq rebuilt from Debian's source packages as static archives
#   without the features whose libraries Debian ships shared only (GSSAPI, LDAP, ...).
#   Composer (Debian's) with this PHP's platform. The embed stage links with
#   relink-local-static.sh (tag static_glibc: frankenphp/nss_static.go).
# Stages: toolchain -> libs -> php-src -> php -> php-build; go (in parallel); the final image.
ARG DEBIAN_IMAGE=debian:bookworm-slim
# The extension set (the `php_extensions` setting): the same names as every profile.
ARG PHP_EXTENSIONS=bcmath,ctype,curl,dom,fileinfo,filter,gd,iconv,intl,mbstring,opcache,openssl,pdo,pdo_pgsql,pgsql,phar,redis,session,simplexml,sockets,sodium,tokenizer,xml,xmlreader,xmlwriter,zip,zlib
FROM ${DEBIAN_IMAGE} AS toolchain
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# deb-src: bookworm's source packages for the libraries rebuilt below (the trixie sources come
# straight from the pool, see the php-src stage). cmake: libzip. curl: the pool downloads.
# golang-go: only bootstraps the Go toolchain download (as base-local does).
# The -dev packages are the ones whose static archives (.a) the final link uses.
# hadolint ignore=DL3008,DL3009
RUN echo 'deb-src http://deb.debian.org/debian bookworm main' \
        > /etc/apt/sources.list.d/deb-src.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates build-essential dpkg-dev pkg-config autoconf automake libtool bison re2c \
        file xz-utils cmake curl golang-go \
        libxml2-dev libssl-dev zlib1g-dev libicu-dev libpng-dev libjpeg-dev libwebp-dev \
        libfreetype-dev libsodium-dev libbrotli-dev liblzma-dev libbz2-dev \
        libzstd-dev libnghttp2-dev \
    && dpkg-query -W -f '${Package} ${Version}\n' > /usr/src/toolchain-packages.txt
# No debug info in the archives we build (smaller, faster); the Go link strips anyway.
ENV CFLAGS="-O2" CXXFLAGS="-O2" PKG_CONFIG_PATH=/opt/static/lib/pkgconfig
# pkg-config --static for every configure: the libraries built here exist only as .a, so a
# link test needs their private dependencies too (libpq -> libpgcommon/libpgport/ssl/crypto...).
# Always passed as an absolute path: an extension's AC_PATH_PROG(PKG_CONFIG) keeps a user's
# absolute path but replaces a bare name with /usr/bin/pkg-config.
RUN printf '#!/bin/sh\nexec /usr/bin/pkg-config --static "$@"\n' > /usr/local/bin/pkg-config-static \
    && chmod 755 /usr/local/bin/pkg-config-static

# ---------------------------------------------------------------------------------------------
FROM toolchain AS libs
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Pinned by the bookworm release; apt-get source verifies them against the signed index.
ARG ONIG_VERSION=6.9.8-1 LIBZIP_VERSION=1.7.3-1 CURL_VERSION=7.88.1-10+deb12u15 \
    PG_VERSION=15.18-0+deb12u1
WORKDIR /usr/src
RUN apt-get source --download-only "libonig=${ONIG_VERSION}" "libzip=${LIBZIP_VERSION}" \
        "curl=${CURL_VERSION}" "postgresql-15=${PG_VERSION}" > /dev/null \
    && for dsc in ./*.dsc; do dpkg-source -x "$dsc" > /dev/null; done \
    && sha256sum ./*.dsc | sed 's/^/  dsc sha256 /' \
    && printf 'debian source %s\n' "libonig ${ONIG_VERSION} (bookworm)" "libzip ${LIBZIP_VERSION} (bookworm)" \
        "curl ${CURL_VERSION} (bookworm)" "postgresql-15 ${PG_VERSION} (bookworm, libpq only)" \
        > /usr/src/sources.txt \
    && rm -f ./*.tar.* ./*.dsc ./*.asc && ls
# oniguruma (mbstring): Debian ships libonig.so only.
# hadolint ignore=DL3003
RUN cd libonig-* && autoreconf -fi > /dev/null 2>&1 \
    && ./configure --prefix=/opt/static --disable-shared --enable-static > /dev/null \
    && make -j"$(nproc)" > /dev/null && make install > /dev/null
# libzip (zip): Debian ships libzip.so only. OpenSSL for AES, bzip2/lzma for those methods
# (Debian ships all three as .a).
# hadolint ignore=DL3003
RUN cd libzip-* && mkdir build && cd build \
    && cmake .. -DCMAKE_INSTALL_PREFIX=/opt/static -DCMAKE_INSTALL_LIBDIR=lib \
        -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS_RELEASE=-O2 -DBUILD_SHARED_LIBS=OFF \
        -DENABLE_OPENSSL=ON -DENABLE_GNUTLS=OFF -DENABLE_MBEDTLS=OFF -DENABLE_COMMONCRYPTO=OFF \
        -DENABLE_BZIP2=ON -DENABLE_LZMA=ON \
        -DBUILD_TOOLS=OFF -DBUILD_REGRESS=OFF -DBUILD_EXAMPLES=OFF -DBUILD_DOC=OFF > /dev/null \
    && make -j"$(nproc)" > /dev/null && make install > /dev/null
# curl: Debian's libcurl.a is built with GSSAPI (krb5 has no .a), LDAP, RTMP, SSH2, PSL, IDN2.
# Kept: OpenSSL, HTTP/2 (nghttp2), zlib/brotli/zstd content encodings, all with Debian .a files.
# Debian's last two patches turn the tree into its GnuTLS / NSS flavours (debian/rules pops them
# for the OpenSSL build): reverse them too.
# hadolint ignore=DL3003
RUN cd curl-* && patch -R -p1 < debian/patches/99_nss.patch > /dev/null \
    && patch -R -p1 < debian/patches/90_gnutls.patch > /dev/null \
    && autoreconf -fi > /dev/null 2>&1 \
    && PKG_CONFIG=/usr/local/bin/pkg-config-static ./configure --prefix=/opt/static --disable-shared --enable-static \
        --with-openssl --with-zlib --with-brotli --with-zstd --with-nghttp2 \
        --without-gssapi --disable-ldap --disable-ldaps --without-librtmp --without-libssh2 \
        --without-libssh --without-libpsl --without-libidn2 --without-hyper \
        --without-ngtcp2 --without-nghttp3 --without-quiche --without-msh3 \
        --disable-manual --disable-docs \
        --with-ca-bundle=/etc/ssl/certs/ca-certificates.crt --with-ca-path=/etc/ssl/certs \
        > /usr/src/curl-configure.log \
    && make -j"$(nproc)" -C lib > /dev/null && make -C lib install > /dev/null \
    && make -C include install > /dev/null && make install-pkgconfigDATA install-binSCRIPTS > /dev/null \
    && grep -E '^(Libs|Libs.private|Cflags):' /opt/static/lib/pkgconfig/libcurl.pc
# libpq (pgsql, pdo_pgsql): Debian's libpq.a is built with GSSAPI and LDAP. Only libpq and the
# common/port libraries it links are built; the server is not. Debian's libpgport-pkglibdir
# patch moves "make install" of those two out of libdir: they are copied by hand, next to libpq.a
# (libpq.pc's Libs.private names them).
# hadolint ignore=DL3003
RUN cd postgresql-15-* \
    && ./configure --prefix=/opt/static --with-openssl --without-gssapi --without-ldap \
        --without-icu --without-readline --without-zlib --without-pam --without-libxml \
        --without-systemd --without-llvm --without-perl --without-python --without-tcl \
        > /usr/src/postgresql-configure.log \
    && make -j"$(nproc)" -C src/port > /dev/null && make -j"$(nproc)" -C src/common > /dev/null \
    && make -j"$(nproc)" -C src/interfaces/libpq > /dev/null \
    && make -C src/include install > /dev/null && make -C src/interfaces/libpq install > /dev/null \
    && install -m 644 src/common/libpgcommon.a src/port/libpgport.a /opt/static/lib/ \
    && rm -f /opt/static/lib/libpq.so* \
    && grep -E '^(Libs|Libs.private):' /opt/static/lib/pkgconfig/libpq.pc \
    && ls /opt/static/lib

# ---------------------------------------------------------------------------------------------
FROM libs AS php-src
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# php8.4 8.4.11-1 is trixie's release version. The mirror reachable here answers 404 for the
# version trixie's index lists now (8.4.27-1~deb13u1, trixie-security 8.4.28-1~deb13u1), so
# apt-get source cannot fetch it; the 8.4.11-1 .dsc is in the pool, its Debian signature was
# checked once with dscverify (debian-keyring) and its SHA-256 is pinned here; dpkg-source
# then checks the tarballs against the .dsc.
ARG PHP_POOL=http://deb.debian.org/debian/pool/main/p/php8.4 PHP_DEB_VERSION=8.4.11-1 \
    PHP_DSC_SHA256=497332f6aa8c1db08fb4d2e8e047eccd4c403654a1cd3a69791692d7cd8e71ae
# php-redis 6.2.0-1: the version trixie pairs with php8.4 (bookworm's 5.3.7 was made for PHP <= 8.2
# and was not tried). Its .dsc and debian.tar are 404 on the mirror, the orig tarball is there;
# its SHA-256 is the one trixie's signed Sources index lists (only upstream code is used).
ARG REDIS_ORIG=http://deb.debian.org/debian/pool/main/p/php-redis/php-redis_6.2.0.orig.tar.gz \
    REDIS_SHA256=5069c13dd22bd9e494bb246891052cb6cc0fc9a1b45c6a572a8be61773101363
WORKDIR /usr/src
RUN up=${PHP_DEB_VERSION%-*} \
    && for f in "php8.4_${PHP_DEB_VERSION}.dsc" "php8.4_${up}.orig.tar.xz" "php8.4_${up}.orig.tar.xz.asc" \
        "php8.4_${PHP_DEB_VERSION}.debian.tar.xz"; do curl -fsSO "${PHP_POOL}/${f}"; done \
    && echo "${PHP_DSC_SHA256}  php8.4_${PHP_DEB_VERSION}.dsc" | sha256sum -c - \
    && dpkg-source -x "php8.4_${PHP_DEB_VERSION}.dsc" php-src > /dev/null \
    && curl -fsS -o redis.tar.gz "$REDIS_ORIG" \
    && echo "${REDIS_SHA256}  redis.tar.gz" | sha256sum -c - \
    && tar xzf redis.tar.gz && cp -a redis-6.2.0 php-src/ext/redis \
    && printf 'debian source %s\n' "php8.4 ${PHP_DEB_VERSION} (trixie release; .dsc sha256 ${PHP_DSC_SHA256})" \
        "php-redis 6.2.0-1 (trixie; orig tarball only, sha256 ${REDIS_SHA256})" >> /usr/src/sources.txt \
    && rm -rf ./*.tar.* ./*.dsc redis-6.2.0 package.xml
COPY php84-static-opcache.patch /usr/src/
COPY php-extensions.sh /usr/local/bin/php-extensions
ARG PHP_EXTENSIONS
ENV PHP_EXTENSIONS=${PHP_EXTENSIONS}

FROM php-src AS php
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /usr/src/php-src
# --enable-opcache (from php-extensions) is static with the patch. PKG_CONFIG: see toolchain.
# No --with-password-argon2 (base-local has it): libsodium.a carries its own argon2 objects with
# the same global names as libargon2.a (argon2_ctx, argon2_hash, ...; different structs), so a
# static link of both fails with "multiple definition". ext/sodium registers the argon2i/argon2id
# password_hash() algorithms itself when PHP has no libargon2, so PASSWORD_ARGON2ID still works.
# The CLI is built too (dynamically linked, same objects) for the php -v / php -m checks.
# hadolint ignore=SC2086
RUN patch -p1 < /usr/src/php84-static-opcache.patch \
    && flags=$(php-extensions "$PHP_EXTENSIONS") \
    && ./buildconf --force > /dev/null 2>&1 \
    && PKG_CONFIG=/usr/local/bin/pkg-config-static ./configure --prefix=/opt/php \
        --with-config-file-path=/usr/local/etc/php \
        --enable-embed=static --enable-zts --disable-zend-signals \
        --enable-zend-max-execution-timers --disable-cgi --disable-phpdbg \
        --disable-all $flags \
        > /usr/src/php-configure.log \
    || { tail -40 /usr/src/php-configure.log; tail -60 config.log; exit 1; }

FROM php AS php-build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN if ! make -j"$(nproc)" > /usr/src/php-make.log 2>&1; then tail -60 /usr/src/php-make.log; exit 1; fi
RUN make install > /dev/null \
    && ls -la /opt/php/lib /opt/php/bin \
    && /opt/php/bin/php -v && /opt/php/bin/php -m \
    && /opt/php/bin/php -v | grep -q 'with Zend OPcache' \
    && echo "php-config --libs: $(/opt/php/bin/php-config --libs)" \
    && grep -E '^(EXTRA_LIBS|EXTRA_LDFLAGS) =' Makefile

# ---------------------------------------------------------------------------------------------
FROM toolchain AS go
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Machines behind a TLS-inspecting proxy: its CA first (Go downloads over HTTPS).
COPY certs/ /usr/local/share/ca-certificates/durango/
RUN update-ca-certificates > /dev/null
ARG GO_VERSION=1.27.3
ENV GOPATH=/go GOMODCACHE=/go/pkg/mod GOCACHE=/root/.cache/go-build GOFLAGS=-modcacherw \
    GOTOOLCHAIN=local PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /tmp
RUN toolchain="golang.org/toolchain@v0.0.1-go${GO_VERSION}.linux-$(dpkg --print-architecture)" \
    && GOMODCACHE=/tmp/toolchain /usr/bin/go mod download "$toolchain" \
    && cp -a "/tmp/toolchain/${toolchain}" /usr/local/go \
    && chmod -R u+w /usr/local/go && chmod +x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/* \
    && rm -rf /tmp/toolchain && go version
ARG FRANKENPHP_VERSION=1.12.7
# netgo,osusergo: Go's own DNS resolver and user lookup, so the Go side never calls glibc's
# NSS functions (which a static glibc binary can only use through dlopen).
ARG FRANKENPHP_TAGS=nobadger,nomysql,nopgx,nowatcher,nomercure,netgo,osusergo
ENV FRANKENPHP_VERSION=${FRANKENPHP_VERSION} FRANKENPHP_TAGS=${FRANKENPHP_TAGS} \
    FRANKENPHP_SRC=/go/src/frankenphp FRANKENPHP_BUILD=/go/src/frankenphp-build
WORKDIR /go/src/frankenphp-build
COPY frankenphp/go.mod frankenphp/go.sum ./
RUN go mod download && go mod verify > /dev/null \
    && cp -a "$(go list -m -f '{{.Dir}}' github.com/dunglas/frankenphp)" "$FRANKENPHP_SRC" \
    && chmod -R u+w "$FRANKENPHP_SRC" \
    && go mod edit -replace "github.com/dunglas/frankenphp=$FRANKENPHP_SRC"
# Warm Go's build cache with every pure-Go package the command links (cgo packages need PHP and
# the final CGO_* flags, which are part of their cache key: they compile in the link stage).
# Dated ahead so that no embed layer copies the cache (see relink-local.sh).
# hadolint ignore=SC2086
RUN pkgs=$(go list -tags "$FRANKENPHP_TAGS" -deps -f '{{if not .CgoFiles}}{{.ImportPath}}{{end}}' \
        github.com/caddyserver/caddy/v2/cmd github.com/caddyserver/caddy/v2/modules/standard \
        github.com/dunglas/frankenphp/caddy github.com/dunglas/caddy-cbrotli \
        | grep -v -e '^github.com/dunglas/frankenphp' -e brotli) \
    && go build -tags "$FRANKENPHP_TAGS" -trimpath $pkgs \
    && find "$(go env GOCACHE)" -type f -exec touch -d 2100-01-01 {} + \
    && echo "Go build cache warm: $(du -sh "$(go env GOCACHE)" | cut -f1)"

# ---------------------------------------------------------------------------------------------
FROM go AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PHP_EXTENSIONS
ENV PHP_EXTENSIONS=${PHP_EXTENSIONS}
COPY --from=php-build /opt/php /opt/php
COPY --from=php-build /opt/static /opt/static
COPY --from=php-build /usr/src/sources.txt /usr/src/php-configure.log /usr/src/
ENV PATH=/opt/php/bin:$PATH
# Composer 2.8 from Debian trixie's packages (bookworm's is 2.5, which does not run on PHP 8.4),
# as in base-local.Dockerfile (see there and composer-debian.txt), run by the PHP built above: its
# platform check is the binary's own (same configure, same extensions). git and unzip from
# bookworm for the dependency step.
ARG COMPOSER_VERSION=2.8.8
COPY composer-debian.txt /usr/src/composer-debian.txt
# hadolint ignore=DL3003,DL3008,SC2046
RUN apt-get update && apt-get install -y --no-install-recommends git unzip \
    && rm -rf /var/lib/apt/lists/* \
    && apt=/tmp/composer-apt && pins=/usr/src/composer-debian.txt \
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
    && printf '#!/bin/sh\nexec /opt/php/bin/php -d memory_limit=-1 /usr/bin/composer "$@"\n' \
        > /usr/local/bin/composer \
    && chmod 755 /usr/local/bin/composer \
    && if ! composer --version 2>/dev/null | grep -q "^Composer version ${COMPOSER_VERSION} "; then \
        echo "composer ${COMPOSER_VERSION} is not what was unpacked: $(composer --version)"; \
        exit 1; \
    fi
COPY relink-local-static.sh /usr/local/bin/frankenphp-relink
# The base binary, linked once per base key with an empty app (see base-local.Dockerfile), and
# PHP's production defaults that the embedded php.ini starts from.
COPY --from=php-src /usr/src/php-src/php.ini-production /usr/local/share/durango/php.ini-production
WORKDIR /go/src/frankenphp-build
COPY frankenphp/*.go ./
COPY frankenphp/appdir/ ./appdir/
COPY frankenphp/payload/ ./payload/
WORKDIR /go/src/app
RUN frankenphp-relink "/go/src/app/dist/frankenphp-linux-$(uname -m)"
