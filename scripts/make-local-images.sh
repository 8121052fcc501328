#!/bin/sh
# Make the base images the builds need on a machine that cannot pull from a registry.
#   busybox   -> durango-local/busybox:latest  (static busybox; the test fixtures build on it)
#   debian    -> debian:bookworm-slim          (debootstrap minbase; the local builder profile)
#   postgres  -> durango-local/postgres:15     (Debian's PostgreSQL, official image's interface)
#   lean      -> durango-local/lean:1          (runtime base for a fully static binary)
# Usage: scripts/make-local-images.sh [busybox] [debian] [postgres] [lean]   (default: all).
# Idempotent; an image made from a recipe folder is made again when its recipe changes.
set -eu

log() { printf 'make-local-images: %s\n' "$*"; }
die() { printf 'make-local-images: ERROR: %s\n' "$*" >&2; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

need_package() {
    dpkg -s "$1" >/dev/null 2>&1 && return 0
    log "installing $1"
    apt-get install -y -qq "$1" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null && apt-get install -y -qq "$1" >/dev/null
    } || die "apt-get install $1 failed"
}

make_busybox() {
    busybox_image=durango-local/busybox:latest
    if have_image "$busybox_image"; then log "$busybox_image present"; return 0; fi
    need_package busybox-static
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    chmod 1777 "$root/tmp"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
    echo 'root:x:0:' > "$root/etc/group"
    tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$busybox_image" \
        >/dev/null
    rm -rf "$root"
    log "$busybox_image created"
}

make_debian() {
    debian_image=debian:bookworm-slim
    if have_image "$debian_image"; then log "$debian_image present"; return 0; fi
    need_package debootstrap
    root=$(mktemp -d)
    log "debootstrap bookworm (minbase) into $root"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null \
        || die "debootstrap failed"
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$debian_image" >/dev/null
    rm -rf "$root"
    log "$debian_image created"
}

# From a recipe folder; rebuilt when the recipe changes (the image carries the recipe's hash).
make_from_recipe() {
    image=$1
    folder="$(dirname "$0")/$2"
    recipe=$(cat "$folder"/* | sha256sum | cut -c1-16)
    current=$(docker image inspect -f '{{index .Config.Labels "io.durango.recipe"}}' \
        "$image" 2>/dev/null || true)
    if [ "$current" = "$recipe" ]; then log "$image present"; return 0; fi
    make_debian
    docker build -q --label "io.durango.recipe=$recipe" -t "$image" "$folder" >/dev/null \
        || die "building $image failed"
    log "$image created"
}

[ "$#" -gt 0 ] || set -- busybox debian postgres lean
for what in "$@"; do
    case "$what" in
        busybox) make_busybox ;;
        debian) make_debian ;;
        postgres) make_from_recipe durango-local/postgres:15 postgres-image ;;
        lean) make_from_recipe durango-local/lean:1 lean-image ;;
        *) die "unknown image '$what' (busybox, debian, postgres, lean)" ;;
    esac
done
