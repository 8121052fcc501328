#!/bin/sh
# php-fpm in the background, nginx in the foreground.
set -eu
mkdir -p /run/php
php-fpm8.2 --daemonize
exec nginx -g 'daemon off;'
