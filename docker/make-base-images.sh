#!/usr/bin/env bash
# Makes the two base images docker/Dockerfile needs, without any registry:
#
#   runtime  (default mqttd-local/debian:bookworm-slim): debootstrap minbase
#            bookworm, trimmed of apt lists, docs, man pages and locales;
#   builder  (default mqttd-local/rust:bookworm): minbase bookworm with gcc,
#            libc6-dev and ca-certificates, plus the host's Rust toolchain
#            copied to /usr/local/rust.
#
# Both are made from Debian's own mirror and loaded with `docker import`. An
# image whose tag already exists is kept (a cache between runs); FORCE=1
# remakes both.
#
# Each is also tagged with the name docker/Dockerfile uses by default
# (debian:bookworm-slim, rust:1-bookworm) unless an image of that name is
# already here (one pulled from a registry is never replaced), so the
# documented `docker build -f docker/Dockerfile --target runtime -t mqttd .`
# works as written without a registry. ALIAS=0 skips those tags; the
# explicit form works either way:
#
#   docker build --build-arg RUNTIME_IMAGE=mqttd-local/debian:bookworm-slim \
#                --build-arg RUST_IMAGE=mqttd-local/rust:bookworm ...
#
# Environment: RUNTIME_TAG, BUILDER_TAG, SUITE (bookworm), MIRROR
# (http://deb.debian.org/debian), FORCE (0), ONLY (runtime|builder: make one),
# ALIAS (1: also tag as the Dockerfile's default names).
# Needs root (debootstrap), a running Docker engine, and for the builder a
# Rust toolchain on the host (`rustc --print sysroot`).
set -euo pipefail

RUNTIME_TAG=${RUNTIME_TAG:-mqttd-local/debian:bookworm-slim}
BUILDER_TAG=${BUILDER_TAG:-mqttd-local/rust:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
FORCE=${FORCE:-0}
ONLY=${ONLY:-}
ALIAS=${ALIAS:-1}
# The Dockerfile's default base images (its RUNTIME_IMAGE and RUST_IMAGE).
RUNTIME_ALIAS=debian:bookworm-slim
BUILDER_ALIAS=rust:1-bookworm
BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'make-base-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

need_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    [ "$(id -u)" -eq 0 ] || die "debootstrap is not installed and we are not root: apt-get install debootstrap"
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is not installed and there is no apt-get to install it"
    log "installing debootstrap with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
    fi
}

# Removes what a container never needs: package lists, caches, docs, man
# pages, locales and logs. Keeps dpkg's own database.
trim_rootfs() {
    local root=$1
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
        "$root"/var/cache/debconf/*-old "$root"/var/log/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/lintian "$root"/usr/share/linda "$root"/tmp/* "$root"/var/tmp/*
    find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias \
        -exec rm -rf {} + 2>/dev/null || true
    # The host's resolv.conf and hostname leak in through debootstrap; Docker
    # provides its own at run time.
    : >"$root"/etc/resolv.conf
    : >"$root"/etc/hostname
}

import_rootfs() {
    local root=$1 tag=$2 path=$3
    log "importing $tag"
    tar --numeric-owner -C "$root" -c . |
        docker import -c "ENV PATH=$path" -c 'CMD ["/bin/bash"]' \
            -m "debootstrap $SUITE from $MIRROR (mqttd make-base-images.sh)" - "$tag" >/dev/null
    log "made $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

make_runtime() {
    local root=$WORK/runtime
    log "debootstrap --variant=minbase $SUITE (runtime)"
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$WORK/runtime.log" 2>&1 ||
        { tail -20 "$WORK/runtime.log" >&2; die "debootstrap of the runtime image failed"; }
    trim_rootfs "$root"
    import_rootfs "$root" "$RUNTIME_TAG" "$BASE_PATH"
}

make_builder() {
    local root=$WORK/builder sysroot
    command -v rustc >/dev/null 2>&1 || die "no rustc on the host to copy into the builder image (install rustup)"
    sysroot=$(rustc --print sysroot)
    [ -x "$sysroot/bin/cargo" ] || die "no cargo in $sysroot/bin: the builder image needs cargo next to rustc"
    log "debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates $SUITE (builder)"
    debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates "$SUITE" "$root" "$MIRROR" \
        >"$WORK/builder.log" 2>&1 ||
        { tail -20 "$WORK/builder.log" >&2; die "debootstrap of the builder image failed"; }
    trim_rootfs "$root"
    log "copying the host toolchain ($(rustc --version)) to /usr/local/rust"
    mkdir -p "$root/usr/local/rust"
    tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$root/usr/local/rust" -x
    import_rootfs "$root" "$BUILDER_TAG" "/usr/local/rust/bin:$BASE_PATH"
}

# A failed debootstrap may leave /proc or /sys mounted in its target: unmount
# before removing anything.
cleanup() {
    local m
    for m in "$WORK"/*/proc "$WORK"/*/sys "$WORK"/*/dev/pts; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m" 2>/dev/null
    done
    rm -rf --one-file-system "$WORK"
}

# alias_tag LOCAL DEFAULT: tags LOCAL as DEFAULT unless DEFAULT is an image
# this script did not make.
alias_tag() {
    local local_tag=$1 default_tag=$2
    [ "$ALIAS" = 1 ] && image_exists "$local_tag" || return 0
    [ "$(docker image inspect -f '{{.Id}}' "$default_tag" 2>/dev/null)" != \
        "$(docker image inspect -f '{{.Id}}' "$local_tag")" ] || return 0
    # Ours (made by this script, e.g. before FORCE=1), or none: (re)tag.
    if ! image_exists "$default_tag" ||
        docker image inspect -f '{{.Comment}}' "$default_tag" | grep -q 'mqttd make-base-images.sh'; then
        docker tag "$local_tag" "$default_tag"
        log "tagged $local_tag as $default_tag (the Dockerfile's default)"
    else
        log "$default_tag exists (from a registry?), kept; the Dockerfile's default uses it"
    fi
}

main() {
    docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
    local want_runtime=1 want_builder=1
    case "$ONLY" in
        "") ;;
        runtime) want_builder=0 ;;
        builder) want_runtime=0 ;;
        *) die "ONLY must be runtime or builder, not '$ONLY'" ;;
    esac
    if [ "$FORCE" != 1 ]; then
        if [ $want_runtime = 1 ] && image_exists "$RUNTIME_TAG"; then
            log "$RUNTIME_TAG exists, kept (FORCE=1 remakes it)"; want_runtime=0
        fi
        if [ $want_builder = 1 ] && image_exists "$BUILDER_TAG"; then
            log "$BUILDER_TAG exists, kept (FORCE=1 remakes it)"; want_builder=0
        fi
    fi
    if [ $want_runtime = 0 ] && [ $want_builder = 0 ]; then
        aliases
        return 0
    fi

    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root: run this script as root"
    need_debootstrap
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/mqttd-base.XXXXXX")
    trap cleanup EXIT
    [ $want_runtime = 1 ] && make_runtime
    [ $want_builder = 1 ] && make_builder
    aliases
    return 0
}

aliases() {
    case "$ONLY" in
        runtime) alias_tag "$RUNTIME_TAG" "$RUNTIME_ALIAS" ;;
        builder) alias_tag "$BUILDER_TAG" "$BUILDER_ALIAS" ;;
        *) alias_tag "$RUNTIME_TAG" "$RUNTIME_ALIAS"; alias_tag "$BUILDER_TAG" "$BUILDER_ALIAS" ;;
    esac
}

main "$@"
