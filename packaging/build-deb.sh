#!/usr/bin/env bash
# Builds the Debian package of mqttd: release binaries (mqttd, mqttctl),
# man pages made from their --help with help2man, then `cargo deb`.
# Prints the path of the .deb on stdout.
#
# Installs what is missing: cargo-deb (`cargo install cargo-deb --locked`)
# and help2man (apt-get, as root). Honours CARGO_TARGET_DIR; the .deb is
# written to $CARGO_TARGET_DIR/debian/ (default target/debian/).
#
# Environment: MQTTD_DEB_NO_BUILD=1 packages the binaries already in
# $CARGO_TARGET_DIR/release without running cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'build-deb: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$PWD/$TARGET ;; esac
RELEASE=$TARGET/release

if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked >&2
fi
if ! command -v help2man >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 ||
        die "help2man is missing: apt-get install help2man"
    log "installing help2man with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q help2man >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q help2man >/dev/null; }
fi

if [ "${MQTTD_DEB_NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release -p mqttd -p mqttctl"
    cargo build --release --locked -p mqttd -p mqttctl --bins >&2
fi
[ -x "$RELEASE/mqttd" ] && [ -x "$RELEASE/mqttctl" ] || die "no binaries in $RELEASE"

# Man pages from --help, so they cannot drift from the binaries.
mkdir -p "$RELEASE/man"
help2man --no-info --section 8 --name "MQTT 3.1, 3.1.1 and 5.0 broker for the edge" \
    --include packaging/man/mqttd.h2m "$RELEASE/mqttd" >"$RELEASE/man/mqttd.8" ||
    die "help2man failed on mqttd"
help2man --no-info --section 1 --name "manage a running mqttd broker" \
    --include packaging/man/mqttctl.h2m "$RELEASE/mqttctl" >"$RELEASE/man/mqttctl.1" ||
    die "help2man failed on mqttctl"
gzip -9nf "$RELEASE/man/mqttd.8" "$RELEASE/man/mqttctl.1"

log "cargo deb -p mqttd --no-build"
cargo deb -p mqttd --no-build --strip --output "$TARGET/debian/" >&2
deb=$(ls -t "$TARGET"/debian/mqttd_*.deb | head -n 1)
log "built $deb ($(du -k "$deb" | cut -f1) KiB)"
printf '%s\n' "$deb"
