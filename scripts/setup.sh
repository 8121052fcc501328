#!/bin/sh
# Set up a Debian machine (as root) to build and test, from nothing but Debian's package mirrors,
# PyPI and the Go module proxy. Idempotent: run it at the start of every session and CI run.
#   1. a Docker engine with the compose v2 and buildx CLI plugins, started when none answers
#      (Debian 12 packages neither plugin: their binaries come from the next release's packages,
#      which run on Debian 12)
#   2. the Python package with its test tools
#   3. the local base images (no registry needed), the host's extra CA certificates
#   4. the Debian libraries the local profile's binary links (to run `doit verify` here),
#      Debian's docker-registry (registry-cache tests), chromium (browser tests), actionlint
#      (workflow lint), kubeconform and Kubernetes' schemas (manifest tests)
# Prints one line per step; exits non-zero with the reason when something cannot be had.
set -eu
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts dockerd)"
export DEBIAN_FRONTEND=noninteractive

apt_install() {
    apt-get install -y -qq "$@" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null
    } || die "apt-get install $* failed"
}

install_docker_plugins() {
    plugin_dir=/usr/local/lib/docker/cli-plugins
    mkdir -p "$plugin_dir"
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [ "$codename" != bookworm ]; then
        apt_install docker-compose docker-buildx
        return 0
    fi
    log "compose v2 + buildx plugins from Debian trixie's packages"
    work=$(mktemp -d)
    mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/x"
    echo "deb http://deb.debian.org/debian trixie main" > "$work/sources.list"
    set -- -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::archives=$work/archives" \
        -o APT::Sandbox::User=root
    apt-get "$@" update -qq >/dev/null || die "cannot read Debian trixie's package lists"
    (cd "$work" && apt-get "$@" download docker-compose docker-buildx >/dev/null 2>&1) \
        || die "cannot download the docker-compose / docker-buildx packages"
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/x"; done
    install -m 0755 "$work"/x/usr/libexec/docker/cli-plugins/docker-* "$plugin_dir/"
    rm -rf "$work"
}

provision_docker() {
    if ! command -v dockerd >/dev/null 2>&1; then
        log "Docker engine (Debian's docker.io)"
        apt_install docker.io
    fi
    if ! docker compose version >/dev/null 2>&1 || ! docker buildx version >/dev/null 2>&1; then
        install_docker_plugins
    fi
    if ! docker info >/dev/null 2>&1; then
        log "starting dockerd (log: /var/log/dockerd.log)"
        nohup dockerd >/var/log/dockerd.log 2>&1 &
        tries=0
        until docker info >/dev/null 2>&1; do
            tries=$((tries + 1))
            [ "$tries" -le 60 ] || { tail -20 /var/log/dockerd.log >&2; die "dockerd did not come up"; }
            sleep 1
        done
    fi
    log "engine $(docker version --format '{{.Server.Version}}'), compose $(docker compose version --short), $(docker buildx version | cut -d' ' -f1-2)"
}

provision_docker

log "python package and test tools"
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

scripts/make-local-images.sh busybox debian postgres lean
scripts/host-ca-certs.sh

packages="$(cat orangescrum-ee/debian-runtime-packages.txt) docker-registry nghttp2-client chromium"
log "debian packages: runtime libraries, docker-registry, h2load (served-speed benchmark), chromium (browser tests)"
# shellcheck disable=SC2086 # one word per package
apt_install $packages

if ! command -v actionlint >/dev/null 2>&1; then
    log "actionlint from its Go module"
    GOBIN=/usr/local/bin go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.7
fi
scripts/kube-schemas.sh
log "done"
