#!/bin/sh
# Set up a Debian machine (as root) to build and test: the Python package with its test tools,
# the local base images, the host's extra CA certificates, the Debian libraries the local
# profile's binary links (to run `doit verify` here), Debian's docker-registry (registry-cache
# tests) and actionlint (workflow lint, from its Go module). Needs a running Docker engine with
# the buildx and compose plugins. Idempotent.
set -eu
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }

log "python package and test tools"
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

scripts/make-local-images.sh busybox debian postgres
scripts/host-ca-certs.sh

packages="$(cat orangescrum-ee/debian-runtime-packages.txt) docker-registry"
log "debian packages: runtime libraries, docker-registry"
# shellcheck disable=SC2086
apt-get install -y -qq $packages >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq $packages >/dev/null
}

if ! command -v actionlint >/dev/null 2>&1; then
    log "actionlint from its Go module"
    GOBIN=/usr/local/bin go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.7
fi
log "done"
