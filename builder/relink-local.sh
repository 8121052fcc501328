#!/bin/sh
# Link FrankenPHP (Caddy + the frankenphp module) against the PHP built in the local base image.
# The base stage runs it with --warm: every package the command imports is compiled into Go's
# build cache, with the flags the link uses. Every embed then compiles only the frankenphp
# package (which embeds app.tar) and the command's own files ($FRANKENPHP_BUILD/*.go, appdir/).
#   usage: relink-local OUTPUT | relink-local --warm
# PHP's symbols are exported with --dynamic-list (as upstream's gnu static build does), so the
# shared opcache the embed stage carries can bind to the PHP inside the binary. The app's
# checksum reaches the appdir package, which decides where the app is extracted.
set -eu
out=$1
php_version=$(php -r 'echo PHP_VERSION;')
checksum=$(cat "$FRANKENPHP_SRC/app_checksum.txt" 2>/dev/null || true)
CGO_CFLAGS="-O2 -DFRANKENPHP_VERSION=${FRANKENPHP_VERSION} $(php-config --includes)"
CGO_LDFLAGS="-L/usr/local/lib -lphp $(php-config --ldflags) $(php-config --libs)"
export CGO_CFLAGS CGO_LDFLAGS CGO_ENABLED=1
cd "$FRANKENPHP_BUILD"
if [ "$out" = --warm ]; then
    packages="github.com/caddyserver/caddy/v2/cmd github.com/caddyserver/caddy/v2/modules/standard"
    packages="$packages github.com/dunglas/frankenphp/caddy"
    case ",$FRANKENPHP_TAGS," in *,nobrotli,*) ;; *) packages="$packages github.com/dunglas/caddy-cbrotli" ;; esac
    case ",$FRANKENPHP_TAGS," in *,nomercure,*) ;; *) packages="$packages github.com/dunglas/mercure/caddy" ;; esac
    # shellcheck disable=SC2086 # one word per package
    go build -tags "${FRANKENPHP_TAGS}" -trimpath $packages
    # Go marks a cache entry used by resetting its mtime once it is an hour old: every embed
    # would then copy the whole cache into its image layer (~700 MB). Dated ahead, the base's
    # entries are never touched again (nor trimmed); an embed layer holds only what it adds.
    find "$(go env GOCACHE)" -type f -exec touch -d 2100-01-01 {} +
    echo "relink: Go build cache warm ($(du -sh "$(go env GOCACHE)" | cut -f1))"
    exit 0
fi
go build -tags "${FRANKENPHP_TAGS}" -trimpath -o "$out" -ldflags "-w -s -linkmode=external \
    -extldflags '-Wl,--dynamic-list=/usr/local/lib/libphp.a.dynsym' \
    -X 'durango.invalid/frankenphp/appdir.checksum=${checksum}' \
    -X 'github.com/caddyserver/caddy/v2.CustomVersion=FrankenPHP v${FRANKENPHP_VERSION} PHP ${php_version} Caddy' \
    -X 'github.com/caddyserver/caddy/v2.CustomBinaryName=frankenphp' \
    -X 'github.com/caddyserver/caddy/v2/modules/caddyhttp.ServerHeader=FrankenPHP Caddy'" .
echo "relink: $out ($(wc -c < "$out") bytes)"
