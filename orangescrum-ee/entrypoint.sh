#!/bin/sh
# Runtime entrypoint: start the embedded app server on the unprivileged port.
set -eu
mkdir -p "${TMPDIR:-/tmp}"
echo "orangescrum: starting server on :${SERVER_PORT:-8080}"
exec /usr/local/bin/orangescrum-ee php-server --root webroot --listen ":${SERVER_PORT:-8080}"
