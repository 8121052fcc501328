#!/bin/sh
# Start HAProxy in master-worker mode in the foreground (its log on stdout) with the first
# configuration that exists: $PROXY_CONFIG, the state volume's (written by `doit deploy`), or the
# image's empty one. SIGTERM and SIGUSR1 reach the master: it stops, or finishes what runs.
set -eu
config=${PROXY_CONFIG:-}
if [ -z "$config" ]; then
    if [ -f /state/haproxy.cfg ]; then config=/state/haproxy.cfg; else config=/etc/haproxy/empty.cfg; fi
fi
haproxy -c -q -f "$config" || { echo "proxy: $config is not a valid configuration" >&2; exit 1; }
echo "proxy: starting with $config"
exec haproxy -W -db -f "$config"
