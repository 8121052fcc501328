#!/bin/sh
# Link FrankenPHP (Caddy + the frankenphp module) against the PHP built in the local base image.
# Used once by the base stage (warming Go's caches) and by every embed: only the frankenphp
# package (which embeds app.tar) is compiled again, the rest comes from the build cache.
#   usage: relink-local OUTPUT
set -eu
out=$1
php_version=$(php -r 'echo PHP_VERSION;')
CGO_CFLAGS="-DFRANKENPHP_VERSION=${FRANKENPHP_VERSION} $(php-config --includes)"
CGO_LDFLAGS="-L/usr/local/lib -lphp $(php-config --ldflags) $(php-config --libs)"
export CGO_CFLAGS CGO_LDFLAGS CGO_ENABLED=1
cd /go/src/frankenphp-build
go build -tags "${FRANKENPHP_TAGS}" -trimpath -o "$out" -ldflags "-w -s \
    -X 'github.com/caddyserver/caddy/v2.CustomVersion=FrankenPHP v${FRANKENPHP_VERSION} PHP ${php_version} Caddy' \
    -X 'github.com/caddyserver/caddy/v2.CustomBinaryName=frankenphp' \
    -X 'github.com/caddyserver/caddy/v2/modules/caddyhttp.ServerHeader=FrankenPHP Caddy'" .
echo "relink: $out ($(wc -c < "$out") bytes)"
