#!/bin/sh
# Embed stage, shared by every builder profile: pack what the base and the dependency step give
# every app of this lock into one deterministic tar, which the extract stage appends to the base
# binary after the app itself:
#   vendor/                     composer's install, its optimised autoloader dumped here, from
#                               composer.json + composer.lock alone (the app's own classes load
#                               through its PSR-4 rules)
#   .frankenphp/ext/*.so        shared extensions of the base's PHP (the local profile's opcache)
#   .frankenphp/php-base.ini    PHP's php.ini-production, then the lines that load those
#                               extensions: the embedded php.ini starts with it
#   usage: pack-deps DEPS_DIR OUTPUT_TAR
# Byte-identical for identical inputs: names sorted, owners and mtimes fixed, the autoloader's
# class suffix taken from the lock. Only options GNU tar 1.26 knows are used (the gnu builder's).
set -eu
deps=$1
out=$2
stage=$(mktemp -d)
conf="$stage/.frankenphp"
mkdir -p "$conf" "$(dirname "$out")"

if [ -d "$deps/vendor" ]; then
    suffix=$(cat "$deps/composer.lock" "$deps/composer.json" 2>/dev/null | sha256sum | cut -c1-32)
    export COMPOSER_HOME=/tmp/composer-home COMPOSER_NO_INTERACTION=1 COMPOSER_ALLOW_SUPERUSER=1
    composer config -g autoloader-suffix "$suffix"
    composer dump-autoload --working-dir="$deps" --no-dev --optimize --no-scripts
    cp -a "$deps/vendor" "$stage/vendor"
    echo "pack: vendor/ with $(find "$stage/vendor" -type f | wc -l) files"
fi

ini=/usr/local/share/durango/php.ini-production
[ -f "$ini" ] || { echo "pack: the base image has no $ini" >&2; exit 1; }
cp "$ini" "$conf/php-base.ini"
ext_dir=$(php-config --extension-dir 2>/dev/null || true)
if [ -n "$ext_dir" ] && ls "$ext_dir"/*.so >/dev/null 2>&1; then
    mkdir -p "$conf/ext"
    cp "$ext_dir"/*.so "$conf/ext/"
    printf '\n; Shared extensions of this build, carried inside the binary (pack-deps.sh).\n' >> "$conf/php-base.ini"
    # shellcheck disable=SC2016 # ${FRANKENPHP_APP_DIR} is for PHP's ini parser, set by the binary
    printf 'extension_dir = "${FRANKENPHP_APP_DIR}/.frankenphp/ext"\n' >> "$conf/php-base.ini"
    for so in "$conf"/ext/*.so; do
        name=$(basename "$so")
        case "$name" in
            opcache.so | xdebug.so) printf 'zend_extension = %s\n' "$name" ;;
            *) printf 'extension = %s\n' "$name" ;;
        esac >> "$conf/php-base.ini"
    done
fi

# Names without "./", the top folder not listed: the app's own part of the payload comes first
# and carries it. One name per line (no name in vendor/ holds a newline).
(cd "$stage" && find . -mindepth 1 | sed 's#^\./##' | LC_ALL=C sort \
    | tar --no-recursion -T - --format=gnu --numeric-owner --owner=0 --group=0 \
        --mode=go-w --mtime=@946684800 -cf "$out")
rm -rf "$stage"
echo "pack: $out $(wc -c < "$out") bytes, $(tar -tf "$out" | wc -l) entries"
