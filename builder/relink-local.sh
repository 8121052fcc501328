#!/bin/sh
# Link FrankenPHP (Caddy + the frankenphp module + our command) against the PHP built in the
# local base image, with an empty app: the base binary the extract stage appends apps to.
# --warm first compiles every package the command imports into Go's build cache, with the flags
# the link uses, so that the link itself compiles only the command's own files.
#   usage: relink-local OUTPUT | relink-local --warm
# PHP's symbols are exported with --dynamic-list (as upstream's gnu static build does), so the
# shared opcache the embed stage packs can bind to the PHP inside the binary.
set -eu
out=$1
php_version=$(php -r 'echo PHP_VERSION;')
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
mkdir -p "$(dirname "$out")"
go build -tags "${FRANKENPHP_TAGS}" -trimpath -o "$out" -ldflags "-w -s -linkmode=external \
    -extldflags '-Wl,--dynamic-list=/usr/local/lib/libphp.a.dynsym' \
    -X 'github.com/caddyserver/caddy/v2.CustomVersion=FrankenPHP v${FRANKENPHP_VERSION} PHP ${php_version} Caddy' \
    -X 'github.com/caddyserver/caddy/v2.CustomBinaryName=frankenphp' \
    -X 'github.com/caddyserver/caddy/v2/modules/caddyhttp.ServerHeader=FrankenPHP Caddy'" .
echo "relink: $out ($(wc -c < "$out") bytes)"
