#!/usr/bin/env bash
# Builds the Debian package (packaging/build-deb.sh) and checks it the way
# an operator uses it, in a clean Debian bookworm container with systemd as
# PID 1 (made from the local base image of docker/make-base-images.sh plus
# systemd, openssl and mosquitto-clients from Debian's mirror):
#
#   - apt-get install ./mqttd_*.deb: the mqttd system user and group, /var/lib/mqttd (mqttd, 0750),
#     /etc/mqttd (root:mqttd, 0750) with the conffile, binaries, man pages;
#   - `systemd-analyze verify` accepts the unit; the service is enabled,
#     starts, runs as mqttd with its hardening, and its exposure score
#     (`systemd-analyze security`) is printed;
#   - `mqttctl status` works as a non-root member of group mqttd and fails
#     with exit code 3 and a permission message for a non-member;
#   - `systemctl reload` (SIGHUP) keeps the same process; a killed broker is
#     restarted (Restart=on-failure);
#   - docs/security.md, followed top to bottom: every ```sh block of
#     sections 1 to 5 is run in order, as root, in the container (see
#     run_security_doc), ending with TLS-only listeners, passwords, mutual
#     TLS and the ACL, checked with Mosquitto's clients;
#   - apt-get purge removes the binaries, the configuration, the data, the
#     unit, the user and the group, and no mqttd process is left.
#
# Where no Docker engine answers, prints that the test is skipped and exits
# 0. Always removes its container. Reuses the host's release build
# (CARGO_TARGET_DIR honoured).
#
# Environment:
#   MQTTD_DEB          test this .deb instead of building one
#   MQTTD_DEB_IMAGE    the systemd test image (mqttd-local/debian-systemd:bookworm),
#                      made when missing and kept between runs;
#   MQTTD_DEB_IMAGE_FORCE=1  remakes it
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE_IMAGE=mqttd-local/debian:bookworm-slim
TEST_IMAGE=${MQTTD_DEB_IMAGE:-mqttd-local/debian-systemd:bookworm}
CONTAINER=mqttd-deb-test-$$
# Bounds for every wait below.
BOOT_TRIES=60       # x 0.5 s, systemd reaching running/degraded
ACTIVE_TRIES=40     # x 0.5 s, mqttd active and answering

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mqttd-deb-test.XXXXXX")
PASSED=()

log() { printf 'test-deb: %s\n' "$*" >&2; }
pass() { PASSED+=("$*"); log "ok: $*"; }

fail() {
    log "FAIL: $*"
    if docker container inspect "$CONTAINER" >/dev/null 2>&1; then
        log "journal of mqttd in the container:"
        docker exec "$CONTAINER" journalctl -u mqttd --no-pager -n 40 2>&1 | sed 's/^/    | /' >&2 || true
    fi
    exit 1
}

cleanup() {
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ctr CMD...: runs CMD in the container as root.
ctr() { docker exec "$CONTAINER" "$@"; }
# as USER CMD...: runs CMD in the container as USER with USER's groups.
as() { local user=$1; shift; docker exec "$CONTAINER" runuser -u "$user" -- "$@"; }

check_engine() {
    if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
        log "SKIPPED: no Docker engine answers here ('docker info' failed);"
        log "         the Debian package test needs one. Nothing was built or run."
        exit 0
    fi
}

build_deb() {
    if [ -n "${MQTTD_DEB:-}" ]; then
        DEB=$MQTTD_DEB
    else
        DEB=$("$HERE/build-deb.sh") || fail "packaging/build-deb.sh failed"
    fi
    [ -f "$DEB" ] || fail "no package at $DEB"
    pass "package built: $(basename "$DEB") ($(du -k "$DEB" | cut -f1) KiB)"
}

# The test image: the local Debian base plus systemd (to run as PID 1),
# openssl and mosquitto-clients (docs/security.md's tools). Labelled, and
# kept between runs like the base images.
test_image() {
    if [ "${MQTTD_DEB_IMAGE_FORCE:-0}" != 1 ] && docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    ONLY=runtime "$ROOT/docker/make-base-images.sh" || fail "could not make $BASE_IMAGE"
    log "making $TEST_IMAGE (systemd, openssl, mosquitto-clients from Debian's mirror)"
    docker build -t "$TEST_IMAGE" - >"$TMP/image.log" 2>&1 <<EOF || { tail -20 "$TMP/image.log" >&2; fail "could not make $TEST_IMAGE"; }
FROM $BASE_IMAGE
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        systemd systemd-sysv dbus procps openssl mosquitto-clients ca-certificates && \
    rm -rf /var/lib/apt/lists/* && \
    systemctl mask getty@tty1.service console-getty.service systemd-logind.service
LABEL io.mqttd.test-image=deb
CMD ["/lib/systemd/systemd"]
EOF
}

start_container() {
    # systemd as PID 1 without privileges: its own tmpfs /run, the host's
    # cgroup tree read-only. broker.example.com (docs/security.md's name)
    # is the container itself.
    docker run -d --name "$CONTAINER" --hostname mqttd-deb-test \
        --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
        -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
        --add-host broker.example.com:127.0.0.1 \
        -v "$DEB:/root/$(basename "$DEB"):ro" \
        "$TEST_IMAGE" /lib/systemd/systemd >/dev/null || fail "docker run failed"
    local i state=""
    for ((i = 0; i < BOOT_TRIES; i++)); do
        state=$(ctr systemctl is-system-running 2>/dev/null) || true
        case "$state" in running | degraded) break ;; esac
        sleep 0.5
    done
    case "$state" in
        running | degraded) pass "systemd runs as PID 1 in $CONTAINER ($state)" ;;
        *) fail "systemd did not come up in the container (state '$state')" ;;
    esac
}

install_deb() {
    # As the README says (apt resolves the dependencies, already in the
    # image: no network needed).
    ctr apt-get install -y "/root/$(basename "$DEB")" >"$TMP/dpkg.log" 2>&1 ||
        { cat "$TMP/dpkg.log" >&2; fail "apt-get install ./$(basename "$DEB") failed"; }
    pass "apt-get install of the .deb"
    local f
    for f in /usr/bin/mqttd /usr/bin/mqttctl /usr/share/man/man8/mqttd.8.gz \
        /usr/share/man/man1/mqttctl.1.gz /usr/share/doc/mqttd/security.md; do
        ctr test -f "$f" || fail "$f is not installed"
    done
    ctr grep -qx /etc/mqttd/mqttd.yaml /var/lib/dpkg/info/mqttd.conffiles ||
        fail "/etc/mqttd/mqttd.yaml is not a conffile"
    local uid
    uid=$(ctr id -u mqttd) || fail "no user mqttd"
    [ "$uid" -lt 1000 ] || fail "user mqttd has uid $uid, not a system uid"
    [ "$(ctr id -gn mqttd)" = mqttd ] || fail "the primary group of mqttd is not mqttd"
    [ "$(ctr stat -c '%U:%G %a' /var/lib/mqttd)" = "mqttd:mqttd 750" ] ||
        fail "/var/lib/mqttd is $(ctr stat -c '%U:%G %a' /var/lib/mqttd), want mqttd:mqttd 750"
    [ "$(ctr stat -c '%U:%G %a' /etc/mqttd)" = "root:mqttd 750" ] ||
        fail "/etc/mqttd is $(ctr stat -c '%U:%G %a' /etc/mqttd), want root:mqttd 750"
    pass "binaries, man pages, conffile; system user mqttd (uid $uid); /var/lib/mqttd and /etc/mqttd owned and private"
    ctr man -w mqttd >/dev/null 2>&1 || ctr zcat /usr/share/man/man8/mqttd.8.gz | grep -q '^\.TH MQTTD' ||
        fail "mqttd.8.gz is not a man page"
}

verify_unit() {
    ctr systemd-analyze verify --man=no /lib/systemd/system/mqttd.service >"$TMP/verify.log" 2>&1 ||
        { cat "$TMP/verify.log" >&2; fail "systemd-analyze verify rejects mqttd.service"; }
    # verify prints warnings without failing; the unit must have none.
    if grep -i 'mqttd.service' "$TMP/verify.log" >&2; then fail "systemd-analyze verify warns about mqttd.service"; fi
    [ "$(ctr systemctl is-enabled mqttd)" = enabled ] || fail "mqttd.service is not enabled"
    pass "systemd-analyze verify accepts mqttd.service; enabled"
}

main_pid() { ctr systemctl show -p MainPID --value mqttd; }

# wait_active: mqttd is active and answers mqttctl (as root).
wait_active() {
    local i
    for ((i = 0; i < ACTIVE_TRIES; i++)); do
        if [ "$(ctr systemctl is-active mqttd 2>/dev/null)" = active ] &&
            ctr mqttctl status >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    fail "mqttd is not active and answering after $((ACTIVE_TRIES / 2)) s ($(ctr systemctl is-active mqttd 2>&1))"
}

check_service() {
    wait_active
    local pid user
    pid=$(main_pid)
    user=$(ctr stat -c %U "/proc/$pid") || fail "no process $pid"
    [ "$user" = mqttd ] || fail "mqttd runs as $user"
    ctr grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$pid/status" || fail "NoNewPrivileges is not ctr effect"
    ctr grep -q '^CapEff:[[:space:]]*0000000000000000' "/proc/$pid/status" || fail "mqttd has capabilities"
    [ "$(ctr stat -c '%U:%G %a' /run/mqttd)" = "mqttd:mqttd 750" ] ||
        fail "/run/mqttd is $(ctr stat -c '%U:%G %a' /run/mqttd)"
    [ "$(ctr stat -c '%U:%G %a' /run/mqttd/mqttd.sock)" = "mqttd:mqttd 660" ] ||
        fail "the socket is $(ctr stat -c '%U:%G %a' /run/mqttd/mqttd.sock)"
    ctr test -d /var/lib/mqttd/store || fail "no store ctr /var/lib/mqttd"
    pass "service active, runs as mqttd without capabilities (NoNewPrivs), socket /run/mqttd/mqttd.sock mqttd:mqttd 0660, store in /var/lib/mqttd"
    ctr systemd-analyze security mqttd --no-pager >"$TMP/security.log" 2>&1 || true
    log "systemd-analyze security: $(grep -i 'overall exposure' "$TMP/security.log" || echo 'no score')"
}

check_mqttctl_users() {
    ctr useradd --create-home --groups mqttd alice || fail "useradd alice"
    ctr useradd --create-home bob || fail "useradd bob"
    local out rc
    out=$(as alice mqttctl status 2>&1) || { echo "$out" >&2; fail "mqttctl status fails for alice, a member of group mqttd"; }
    grep -q 'mqtt' <<<"$out" || { echo "$out" >&2; fail "mqttctl status as alice printed no listener"; }
    pass "mqttctl status works for alice (group mqttd, not root), without flags"
    rc=0
    out=$(as bob mqttctl status 2>&1) || rc=$?
    [ "$rc" = 3 ] || { echo "$out" >&2; fail "mqttctl status as bob (not in group mqttd) exited $rc, want 3"; }
    grep -q 'permission denied' <<<"$out" || { echo "$out" >&2; fail "bob's error does not say permission denied"; }
    log "bob (not in group mqttd) is told: $out"
    pass "mqttctl status as bob (not in group mqttd): exit 3, permission denied"
}

check_reload_restart() {
    local pid new i
    pid=$(main_pid)
    ctr systemctl reload mqttd || fail "systemctl reload mqttd failed"
    sleep 0.5
    wait_active
    [ "$(main_pid)" = "$pid" ] || fail "systemctl reload restarted mqttd (pid $pid -> $(main_pid))"
    ctr journalctl -u mqttd --no-pager | grep -qi 'hup\|reload' || fail "no reload ctr mqttd's journal"
    pass "systemctl reload: SIGHUP, same process ($pid), reload logged"
    ctr kill -9 "$pid"
    for ((i = 0; i < ACTIVE_TRIES; i++)); do
        new=$(main_pid)
        [ "$new" != 0 ] && [ "$new" != "$pid" ] && break
        sleep 0.5
    done
    [ "$new" != 0 ] && [ "$new" != "$pid" ] || fail "mqttd was not restarted after kill -9"
    wait_active
    pass "after kill -9 systemd restarts mqttd (pid $pid -> $new)"
}

# Follows docs/security.md top to bottom: every ```sh block of sections 1
# to 5 (up to "## 6."), in order, in one root shell in the container (so
# `cd` carries over), except blocks right after a line
# `<!-- not run by packaging/test-deb.sh ... -->`. mosquitto_sub gets
# `-C 1 -W 10` (stop after one message), so the doc's checks end, and
# mosquitto_pub is retried while a restarted broker binds its listeners.
run_security_doc() {
    python3 - "$ROOT/docs/security.md" >"$TMP/security.sh" <<'PY' || fail "could not extract docs/security.md"
import re, sys
text = open(sys.argv[1]).read()
body = text.split("\n## 1.", 1)[1].split("\n## 6.", 1)[0]
out = ["set -ex", "mosquitto_sub() { command mosquitto_sub -C 1 -W 10 \"$@\"; }",
       # `systemctl restart` returns before the listeners are bound
       # (Type=simple): a client right after it retries, 20 x 0.25 s.
       "mosquitto_pub() { for i in $(seq 20); do command mosquitto_pub \"$@\" && return 0; sleep 0.25; done; return 1; }"]
skip = False
for block in re.finditer(r"(<!-- not run by packaging/test-deb.sh[^>]*-->\s*)?```sh\n(.*?)```", body, re.S):
    if block.group(1):
        continue
    out.append(block.group(2))
print("\n".join(out))
PY
    [ "$(grep -c . "$TMP/security.sh")" -gt 10 ] || fail "found no commands in docs/security.md"
    docker cp "$TMP/security.sh" "$CONTAINER:/root/security.sh" || fail "docker cp"
    # The checks above restarted mqttd several times within seconds; the
    # doc's own four restarts must not hit systemd's start rate limit (5 in
    # 10 s) because of them.
    ctr systemctl reset-failed mqttd || fail "systemctl reset-failed mqttd"
    if ! ctr bash /root/security.sh >"$TMP/security-run.log" 2>&1; then
        tail -40 "$TMP/security-run.log" | sed 's/^/    | /' >&2
        fail "following docs/security.md failed (the command marked + above is the last one run)"
    fi
    grep -q '^devices/device-001/temp 21.5$' "$TMP/security-run.log" ||
        { tail -20 "$TMP/security-run.log" >&2; fail "the doc's TLS test did not receive the device's reading"; }
    grep -q '^All subscription requests were denied.$' "$TMP/security-run.log" ||
        { tail -20 "$TMP/security-run.log" >&2; fail "the doc's ACL did not refuse the operator's devices/#"; }
    wait_active
    pass "docs/security.md sections 1-5 run top to bottom on the package (TLS only, passwords, mTLS, ACL)"
}

purge() {
    ctr apt-get purge -y mqttd >"$TMP/purge.log" 2>&1 || { cat "$TMP/purge.log" >&2; fail "apt-get purge failed"; }
    local f
    for f in /usr/bin/mqttd /usr/bin/mqttctl /etc/mqttd /var/lib/mqttd /run/mqttd \
        /lib/systemd/system/mqttd.service /etc/systemd/system/multi-user.target.wants/mqttd.service \
        /usr/share/man/man8/mqttd.8.gz; do
        if ctr test -e "$f"; then fail "$f is still there after apt-get purge"; fi
    done
    if ctr getent passwd mqttd >/dev/null; then fail "user mqttd is still there after purge"; fi
    if ctr getent group mqttd >/dev/null; then fail "group mqttd is still there after purge"; fi
    [ "$(ctr systemctl is-active mqttd 2>/dev/null)" != active ] || fail "mqttd is still active"
    if ctr sh -c 'grep -l "^Name:[[:space:]]*mqttd$" /proc/[0-9]*/status 2>/dev/null' | grep -q .; then
        fail "an mqttd process is still running after purge"
    fi
    ctr dpkg -s mqttd >/dev/null 2>&1 && fail "dpkg still knows mqttd"
    pass "apt-get purge removes binaries, /etc/mqttd, /var/lib/mqttd, the unit, user and group; no process left"
}

main() {
    check_engine
    build_deb
    test_image
    start_container
    install_deb
    verify_unit
    check_service
    check_mqttctl_users
    check_reload_restart
    run_security_doc
    purge
    log "summary: ${#PASSED[@]} checks passed"
    printf '  - %s\n' "${PASSED[@]}" >&2
    log "PASSED"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
