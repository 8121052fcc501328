#!/bin/sh
# Link FrankenPHP (Caddy + the frankenphp module + our main.go/appdir) into a FULLY STATIC
# binary: libphp.a and every library PHP uses as static archives, with glibc's libc.a.
# Run once by the base stage of the local-static profile (base-local-static.Dockerfile), with an
# empty app: the base binary the extract stage appends apps to.
#   usage: relink-local-static OUTPUT
# Tag static_glibc compiles frankenphp/nss_static.go: glibc's NSS stays on its built-in files
# and dns services (a static binary must not dlopen NSS modules).
set -eu
out=$1
mkdir -p "$(dirname "$out")"
php_version=$(php -r 'echo PHP_VERSION;')

# Setting CGO_CFLAGS replaces Go's default "-g -O2": keep -O2.
CGO_CFLAGS="-O2 -DFRANKENPHP_VERSION=${FRANKENPHP_VERSION} $(php-config --includes)"
# Static archives, each after everything that uses it (a static link resolves left to right):
#   /opt/php/lib     libphp.a (PHP ZTS, embed SAPI, extensions and opcache inside)
#   /opt/static/lib  rebuilt from Debian sources: libpq + libpgcommon + libpgport, libcurl,
#                    libzip, libonig; Debian's -dev packages: everything else.
CGO_LDFLAGS="-L/opt/php/lib -L/opt/static/lib -lphp"
CGO_LDFLAGS="$CGO_LDFLAGS -lpq -lpgcommon -lpgport"               # pgsql, pdo_pgsql
CGO_LDFLAGS="$CGO_LDFLAGS -lcurl -lnghttp2"                       # curl (+ HTTP/2)
CGO_LDFLAGS="$CGO_LDFLAGS -lzip"                                  # zip
CGO_LDFLAGS="$CGO_LDFLAGS -lonig"                                 # mbstring
CGO_LDFLAGS="$CGO_LDFLAGS -lxml2"                                 # libxml, dom, simplexml, xml*
CGO_LDFLAGS="$CGO_LDFLAGS -licuio -licui18n -licuuc -licudata"    # intl (and libxml2's ICU use)
CGO_LDFLAGS="$CGO_LDFLAGS -lfreetype -lpng16 -lwebp -ljpeg"       # gd (PHP's bundled libgd)
CGO_LDFLAGS="$CGO_LDFLAGS -lsodium"                               # sodium (+ argon2 hashes)
CGO_LDFLAGS="$CGO_LDFLAGS -lssl -lcrypto"                         # openssl, curl, libpq, libzip
CGO_LDFLAGS="$CGO_LDFLAGS -lbrotlienc -lbrotlidec -lbrotlicommon" # curl, freetype, cbrotli
CGO_LDFLAGS="$CGO_LDFLAGS -lzstd -llzma -lbz2 -lz"                # curl, libxml2, libzip, zlib
CGO_LDFLAGS="$CGO_LDFLAGS -lstdc++ -lm -lpthread -ldl -lrt -lresolv -lutil" # ICU is C++
export CGO_CFLAGS CGO_LDFLAGS CGO_ENABLED=1

cd "$FRANKENPHP_BUILD"
go build -tags "${FRANKENPHP_TAGS},static_glibc" -trimpath -o "$out" -ldflags "-w -s \
    -linkmode=external -extldflags '-static' \
    -X 'github.com/caddyserver/caddy/v2.CustomVersion=FrankenPHP v${FRANKENPHP_VERSION} PHP ${php_version} Caddy' \
    -X 'github.com/caddyserver/caddy/v2.CustomBinaryName=frankenphp' \
    -X 'github.com/caddyserver/caddy/v2/modules/caddyhttp.ServerHeader=FrankenPHP Caddy'" . \
    2>&1 | grep -v "statically linked applications requires at runtime" || true
[ -x "$out" ] || { echo "relink: the link failed" >&2; exit 1; }
echo "relink: $out ($(wc -c < "$out") bytes, fully static)"
