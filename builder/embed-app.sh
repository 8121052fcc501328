#!/bin/sh
# Embed stage, shared by every builder profile: put the app into FrankenPHP's embed slot
# (app.tar + app_checksum.txt in the frankenphp module the base prepared at $FRANKENPHP_SRC),
# then relink with the base's `frankenphp-relink`. Composer runs only for apps that have a
# composer.json (composer.lock honoured, no dev packages, optimized autoloader).
#   usage: embed-app APP_DIR OUTPUT
set -eu
app=$1
out=$2

if [ -f "$app/composer.json" ]; then
    echo "embed: composer install in $app"
    composer install --working-dir="$app" --no-dev --no-interaction --no-progress \
        --optimize-autoloader --classmap-authoritative
fi

tar -C "$app" --sort=name --owner=0 --group=0 --numeric-owner -cf "$FRANKENPHP_SRC/app.tar" .
sha256sum "$FRANKENPHP_SRC/app.tar" | cut -d' ' -f1 | tr -d '\n' > "$FRANKENPHP_SRC/app_checksum.txt"
echo "embed: app.tar $(wc -c < "$FRANKENPHP_SRC/app.tar") bytes, checksum $(cat "$FRANKENPHP_SRC/app_checksum.txt")"

mkdir -p "$(dirname "$out")"
frankenphp-relink "$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
