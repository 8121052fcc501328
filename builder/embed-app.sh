#!/bin/sh
# Embed stage, shared by every builder profile: complete the app (dependencies from the
# dependency step, the embedded server configuration), put it into FrankenPHP's embed slot
# (app.tar + app_checksum.txt in the frankenphp module the base prepared at $FRANKENPHP_SRC) and
# relink with the base's `frankenphp-relink`.
#   usage: embed-app APP_DIR OUTPUT
# Build args: APP_DOCROOT (the web root the embedded Caddyfile serves), COMPOSER_SCRIPTS (true:
# run the app's post-install-cmd), SOURCE_DATE_EPOCH (every file's mtime in app.tar).
# app.tar is byte-identical for identical inputs: names sorted, owners and mtimes fixed, the
# autoloader's class suffix taken from the lock. Only options GNU tar 1.26 knows are used.
set -eu
app=$1
out=$2
deps=/go/src/deps
conf="$app/.frankenphp"

if [ -d "$deps/vendor" ]; then
    if [ -e "$app/vendor" ]; then
        echo "embed: the app has a vendor/ folder and a composer.json to install from; commit one or the other" >&2
        exit 1
    fi
    cp -a "$deps/vendor" "$app/vendor"
    suffix=$(cat "$deps/composer.lock" "$deps/composer.json" 2>/dev/null | sha256sum | cut -c1-32)
    export COMPOSER_HOME=/tmp/composer-home COMPOSER_NO_INTERACTION=1 COMPOSER_ALLOW_SUPERUSER=1
    composer config -g autoloader-suffix "$suffix"
    scripts=--no-scripts
    [ "${COMPOSER_SCRIPTS:-false}" = true ] && scripts=""
    composer dump-autoload --working-dir="$app" --no-dev --optimize $scripts
    if [ -z "$scripts" ]; then
        composer run-script --working-dir="$app" --no-dev post-install-cmd
    fi
    echo "embed: dependencies from the dependency step; autoloader dumped with the app"
elif [ -d "$app/vendor" ]; then
    echo "embed: vendor/ is committed with the app; composer not run"
fi

docroot=${APP_DOCROOT:-webroot}
sed -i "s#^\(\s*root\) webroot\$#\1 ${docroot}#" "$conf/Caddyfile"
grep -q "^\s*root ${docroot}\$" "$conf/Caddyfile" \
    || { echo "embed: could not set the Caddyfile's root to ${docroot}" >&2; exit 1; }

# Shared extensions of the base's PHP (the local profile's opcache) ride inside the app, so the
# binary stays one file; the embedded php.ini loads them from where the app is extracted.
ext_dir=$(php-config --extension-dir 2>/dev/null || true)
if [ -n "$ext_dir" ] && ls "$ext_dir"/*.so >/dev/null 2>&1; then
    mkdir -p "$conf/ext"
    cp "$ext_dir"/*.so "$conf/ext/"
    printf '\n; Shared extensions of this build, carried inside the binary (embed-app.sh).\n' >> "$conf/php.ini"
    # shellcheck disable=SC2016 # ${FRANKENPHP_APP_DIR} is for PHP's ini parser, set by the binary
    printf 'extension_dir = "${FRANKENPHP_APP_DIR}/.frankenphp/ext"\n' >> "$conf/php.ini"
    for so in "$conf"/ext/*.so; do
        name=$(basename "$so")
        case "$name" in
            opcache.so | xdebug.so) printf 'zend_extension = %s\n' "$name" ;;
            *) printf 'extension = %s\n' "$name" ;;
        esac >> "$conf/php.ini"
    done
fi

tar_file="$FRANKENPHP_SRC/app.tar"
epoch=${SOURCE_DATE_EPOCH:-0}
# "." comes first: FrankenPHP creates the extraction folder from it (0755), not from a file's mode.
(cd "$app" && find . -print0 | LC_ALL=C sort -z \
    | tar --null --no-recursion -T - --format=gnu --numeric-owner --owner=0 --group=0 \
        --mode=go-w --mtime="@${epoch}" -cf "$tar_file")
sha256sum "$tar_file" | cut -d' ' -f1 | tr -d '\n' > "$FRANKENPHP_SRC/app_checksum.txt"
echo "embed: app.tar $(wc -c < "$tar_file") bytes, $(tar -tf "$tar_file" | wc -l) entries, checksum $(cat "$FRANKENPHP_SRC/app_checksum.txt")"

mkdir -p "$(dirname "$out")"
frankenphp-relink "$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
