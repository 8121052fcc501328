#!/bin/sh
# Dependency step of the embed stage: `composer install` from composer.json + composer.lock
# alone, before the app is copied in, so that BuildKit reuses this layer for every commit that
# leaves those files (and the base image and repository settings) alone.
#   usage: install-deps DEPS_DIR      (vendor/ is left in DEPS_DIR for pack-deps)
# Settings (build args): COMPOSER_REPOSITORY (a repository definition, JSON), COMPOSER_PACKAGIST
# (false: that repository replaces Packagist). A token comes only as the BuildKit secret
# `composer_auth` (COMPOSER_AUTH's JSON): it is read here and never written to the image.
# Scripts never run here (the app is not there yet); Composer plugins do.
set -eu
deps=$1
export COMPOSER_HOME=/tmp/composer-home COMPOSER_NO_INTERACTION=1 COMPOSER_ALLOW_SUPERUSER=1

if [ ! -f "$deps/composer.json" ]; then
    echo "deps: $(cat "$deps/.durango-deps"); composer not run"
    exit 0
fi
if [ -n "${COMPOSER_REPOSITORY:-}" ]; then
    composer config -g repositories.durango "$COMPOSER_REPOSITORY"
fi
if [ "${COMPOSER_PACKAGIST:-true}" = false ]; then
    composer config -g repo.packagist false
fi
if [ -s /run/secrets/composer_auth ]; then
    COMPOSER_AUTH=$(cat /run/secrets/composer_auth)
    export COMPOSER_AUTH
fi

# When the repository replaces Packagist, the pipeline has already pointed the lock's download
# locations at it (tasks/formats/composer_lock.py): only the build's copy, never the app's.
cd "$deps"
started=$(date +%s)
composer install --no-dev --no-scripts --no-autoloader --no-progress
count=$(php -r 'echo count(json_decode(file_get_contents("vendor/composer/installed.json"), true)["packages"]);')
echo "deps: composer install: $count packages in $(($(date +%s) - started))s"
