#!/bin/sh
# Link the static FrankenPHP again against the PHP that build-static.sh compiled in the base
# stage (dist/static-php-cli/buildroot): the final step of build-static.sh without rebuilding PHP.
#   usage: relink-static OUTPUT
set -eu
out=$1
root=/go/src/app/dist/static-php-cli/buildroot
php_config="$root/bin/php-config"
php_version=$("$php_config" --version)
CGO_CFLAGS="-DFRANKENPHP_VERSION=${FRANKENPHP_VERSION} -I$root/include $("$php_config" --includes | sed "s#-I/#-I$root/#g")"
CGO_LDFLAGS="-L$root/lib $("$php_config" --ldflags) $("$php_config" --libs)"
export CGO_CFLAGS CGO_LDFLAGS CGO_ENABLED=1
cd /go/src/app/caddy/frankenphp
go build -buildmode=pie -trimpath -o "$out" \
    -tags "cgo,netgo,osusergo,static_build,nobadger,nomysql,nopgx" \
    -ldflags "-linkmode=external -extldflags '-static-pie -Wl,-z,stack-size=0x80000' -w -s \
    -X 'github.com/caddyserver/caddy/v2.CustomVersion=FrankenPHP v${FRANKENPHP_VERSION} PHP ${php_version} Caddy' \
    -X 'github.com/caddyserver/caddy/v2.CustomBinaryName=frankenphp'" .
echo "relink: $out ($(wc -c < "$out") bytes)"
