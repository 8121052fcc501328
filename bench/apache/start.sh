#!/bin/sh
# Apache in the foreground with the container's environment, which PHP's getenv() then sees.
set -e
# Debian's file (run user, run and lock dirs); it reads unset variables, so before `set -u`.
# shellcheck source=/dev/null
. /etc/apache2/envvars
set -u
mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR"
case "${ACCESS_LOG:-stdout}" in
    discard) exec apache2 -DFOREGROUND -DNoAccessLog ;;
    file) exec apache2 -DFOREGROUND -DFileAccessLog ;;
    *) exec apache2 -DFOREGROUND ;;
esac
