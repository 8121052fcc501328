#!/bin/sh
# Copy the CA certificates installed locally on this machine (update-ca-certificates' folder)
# into builder/certs/, which the local builder profile trusts while it downloads Go modules.
# Needed behind a TLS-inspecting proxy; harmless elsewhere. The certificates become part of the
# base build's inputs, so adding or removing one rebuilds the base image.
#   usage: scripts/host-ca-certs.sh [SOURCE_DIR]   (default /usr/local/share/ca-certificates)
set -eu

source_dir=${1:-/usr/local/share/ca-certificates}
target_dir=$(cd "$(dirname "$0")/.." && pwd)/builder/certs

copied=0
for cert in "$source_dir"/*.crt; do
    [ -f "$cert" ] || continue
    name=$(basename "$cert")
    if ! cmp -s "$cert" "$target_dir/$name"; then
        cp "$cert" "$target_dir/$name"
    fi
    copied=$((copied + 1))
done
echo "host-ca-certs: $copied certificate(s) from $source_dir in builder/certs/"
