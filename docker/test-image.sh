#!/usr/bin/env bash
# Builds the mqttd image and checks it from the outside, the way a user runs
# it: a hardened container (read-only root, no capabilities) with published
# random host ports, MQTT and MQTTS from the host with Debian's mosquitto
# clients, mqttctl through `docker exec`, the health check, the HTTP port, a
# non-root process, a clean exit 0 on `docker stop` within 10 s, and the
# store on the data volume: a persistent session, a message queued for it
# while its client was away and a retained message all survive the
# container being stopped and replaced by a new one on the same named
# volume. Checks the image is at most 20 MB and has no shell, and reports
# its size.
#
# The image is built with the command lines the documentation gives: the
# `docker build` line of README.md's "Docker" section (full build) or the
# `prebuilt` recipe of docker/README.md (host binaries), run as written
# except for the tag, `--network none` and the build id label below.
#
# Where no Docker engine answers, prints that the image test is skipped and
# exits 0. Exits non-zero on any failure; always removes its containers,
# its data volume and the intermediate stage images of its own build
# (labelled io.mqttd.build-stage=<this run's id>; nobody else's).
#
# Environment:
#   MQTTD_IMAGE_BINARIES  build (default): the full multi-stage build users
#                         run (vendored crates, --network none);
#                         host: build on the host, use the `prebuilt` target
#                         (fast)
#   MQTTD_BASE_IMAGES     local (default): base images made by
#                         make-base-images.sh (no registry needed), which
#                         tags them with the Dockerfile's default names;
#                         public: the Dockerfile's defaults (rust:1-bookworm,
#                         debian:bookworm-slim) from a registry
#   MQTTD_TEST_IMAGE      tag of the image built (mqttd:test)
#   MQTTD_KEEP_IMAGE      1 (default) keeps the image after the test, 0
#                         removes it
#   CARGO_TARGET_DIR      where the host build (MQTTD_IMAGE_BINARIES=host)
#                         puts its binaries (default target/)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BINARIES=${MQTTD_IMAGE_BINARIES:-build}
BASE_IMAGES=${MQTTD_BASE_IMAGES:-local}
IMAGE=${MQTTD_TEST_IMAGE:-mqttd:test}
KEEP_IMAGE=${MQTTD_KEEP_IMAGE:-1}
# The image mqttd's runtime files are assembled in; used here to look into
# the data volume (the runtime image has no shell or stat).
HELPER_IMAGE=debian:bookworm-slim
MAX_IMAGE_BYTES=20000000
BUILD_ID=test-image-$$-$(date +%s)
CONTAINER=mqttd-image-test-$$
# A named volume at /var/lib/mqttd, so that a second container finds the
# first one's store (an anonymous one would be left behind by `rm -f`).
VOLUME=mqttd-image-test-$$
STOP_LIMIT_SECS=10
# Bounds for every wait below.
READY_TRIES=60           # x 0.5 s
HEALTH_TRIES=30          # x 1 s
PUBLISH_TRIES=20         # x 0.5 s

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mqttd-image-test.XXXXXX")
BG_PIDS=()
PASSED=()
BIN_COPIED=0

log() { printf 'test-image: %s\n' "$*" >&2; }
pass() { PASSED+=("$*"); log "ok: $*"; }

container_logs() {
    docker logs --tail 60 "$CONTAINER" 2>&1 | sed 's/^/    | /' >&2 || true
}

fail() {
    log "FAIL: $*"
    if docker container inspect "$CONTAINER" >/dev/null 2>&1; then
        log "last lines of the container's log:"
        container_logs
    fi
    exit 1
}

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # -v: also the anonymous volumes of the container, if any.
    docker rm -f -v "$CONTAINER" "$CONTAINER-tls" >/dev/null 2>&1 || true
    docker volume rm -f "$VOLUME" >/dev/null 2>&1 || true
    if [ "$KEEP_IMAGE" = 0 ]; then docker rmi "$IMAGE" >/dev/null 2>&1 || true; fi
    # The stage images this run's build left (untagged, ~1.7 GB for the Rust
    # stage of a full build), found by this run's label only.
    docker image prune -f --filter "label=io.mqttd.build-stage=$BUILD_ID" >/dev/null 2>&1 || true
    # Host binaries left in docker/.bin/ would bloat every later build context.
    if [ "$BIN_COPIED" = 1 ]; then rm -f "$HERE/.bin/mqttd" "$HERE/.bin/mqttctl"; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites ----------------------------------------------------------

check_engine() {
    if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
        log "SKIPPED: no Docker engine answers here ('docker info' failed);"
        log "         the image test needs one. Nothing was built or run."
        exit 0
    fi
}

# Installs the host-side tools with apt when they are missing.
need_tools() {
    local missing=()
    command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
    command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        fail "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
    fi
    log "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 &&
          DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
        fail "could not install ${missing[*]} with apt-get"
}

# --- build ------------------------------------------------------------------

# Without a registry, the local base images, tagged with the Dockerfile's
# default names: the documented build lines then work unchanged.
base_images() {
    case "$BASE_IMAGES" in
        local)
            "$HERE/make-base-images.sh" || fail "could not make the local base images"
            ;;
        public) ;;
        *) fail "MQTTD_BASE_IMAGES must be local or public, not '$BASE_IMAGES'" ;;
    esac
}

# Vendors the crates into the build context; redone only when Cargo.lock
# changed since the last run.
vendor_crates() {
    local sum stamp=$ROOT/target/mqttd-vendor.sha256
    sum=$(sha256sum "$ROOT/Cargo.lock" | cut -d' ' -f1)
    if [ -d "$ROOT/vendor" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
        log "vendor/ matches Cargo.lock, kept"
        return 0
    fi
    log "cargo vendor --locked vendor"
    (cd "$ROOT" && cargo vendor --locked --quiet vendor >/dev/null) || fail "cargo vendor failed"
    mkdir -p "$ROOT/target"
    echo "$sum" >"$stamp"
}

host_binaries() {
    local bin target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
    log "cargo build --release on the host (into $target_dir)"
    (cd "$ROOT" && cargo build --release --locked -p mqttd -p mqttctl --bins) ||
        fail "cargo build --release failed"
    BIN_COPIED=1
    for bin in mqttd mqttctl; do
        install -m 0755 "$target_dir/release/$bin" "$HERE/.bin/$bin"
        if command -v strip >/dev/null 2>&1; then strip "$HERE/.bin/$bin"; fi
    done
}

# documented_build FILE TARGET: the `docker build` line for TARGET in FILE's
# sh blocks (continuation lines joined), as documented.
documented_build() {
    python3 - "$1" "$2" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for block in re.findall(r"```sh\n(.*?)```", text, re.S):
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line.startswith("docker build ") and f"--target {sys.argv[2]} " in line:
            print(" ".join(line.split()))
            sys.exit(0)
sys.exit(f"no 'docker build ... --target {sys.argv[2]}' line in {sys.argv[1]}")
PY
}

build_image() {
    local target line doc old
    base_images
    case "$BINARIES" in
        build) vendor_crates; target=runtime; doc=$ROOT/README.md ;;
        host) host_binaries; target=prebuilt; doc=$HERE/README.md ;;
        *) fail "MQTTD_IMAGE_BINARIES must be build or host, not '$BINARIES'" ;;
    esac
    # Both READMEs document both targets the same way; the one this mode
    # builds is run.
    [ "$(documented_build "$ROOT/README.md" runtime)" = "$(documented_build "$HERE/README.md" runtime)" ] ||
        fail "README.md and docker/README.md document different runtime build lines"
    line=$(documented_build "$doc" "$target") || fail "no documented build line for $target"
    [[ "$line" == *" -t mqttd ."* ]] || fail "the documented line '$line' does not end in '-t mqttd .'"
    # The documented line, with this test's tag, no network and this run's
    # label on the intermediate stages.
    line=${line/ -t mqttd ./ --network none --build-arg MQTTD_BUILD_ID=$BUILD_ID -t $IMAGE .}
    log "$line (from ${doc#"$ROOT"/}; log: $TMP/build.log)"
    old=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null) || old=""
    if ! (cd "$ROOT" && eval "$line") >"$TMP/build.log" 2>&1; then
        tail -40 "$TMP/build.log" | sed 's/^/    | /' >&2
        fail "docker build failed (target $target)"
    fi
    # The previous run's image, untagged by this build: removed unless a
    # container or another tag still uses it.
    if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
    pass "image built with the documented line (target $target, binaries: $BINARIES, base images: $BASE_IMAGES)"
}

# --- run --------------------------------------------------------------------

check_configs() {
    docker run --rm "$IMAGE" --check-config /etc/mqttd/mqttd.yaml >"$TMP/check.log" 2>&1 ||
        { cat "$TMP/check.log" >&2; fail "mqttd --check-config rejects the image's default config"; }
    local conf
    for conf in mqttd-tls.yaml test-image.yaml; do
        docker run --rm -v "$HERE/$conf:/etc/mqttd/mqttd.yaml:ro" -v "$TMP/certs:/etc/mqttd/tls:ro" \
            "$IMAGE" --check-config /etc/mqttd/mqttd.yaml >"$TMP/check.log" 2>&1 ||
            { cat "$TMP/check.log" >&2; fail "mqttd --check-config rejects docker/$conf"; }
    done
    pass "the default config, compose's TLS-only mqttd-tls.yaml and the test's pass --check-config"
}

# host_port VAR PORT: the host port published for the container's PORT.
host_port() {
    local mapping
    mapping=$(docker port "$CONTAINER" "$2/tcp" 2>/dev/null | head -n1) || true
    [ -n "$mapping" ] || fail "no host port published for container port $2"
    printf -v "$1" '%s' "${mapping##*:}"
}

# Hardened like compose.yaml and the Helm chart: read-only root filesystem,
# tmpfs for the control socket, no capabilities; the store on the named
# volume $VOLUME (made by the first run: Docker copies the image's
# /var/lib/mqttd into it, owner mqttd included).
start_container() {
    docker run -d --name "$CONTAINER" \
        -p 127.0.0.1::1883 -p 127.0.0.1::8883 -p 127.0.0.1::8083 -p 127.0.0.1::8084 -p 127.0.0.1::8080 \
        -v "$HERE/test-image.yaml:/etc/mqttd/mqttd.yaml:ro" -v "$TMP/certs:/etc/mqttd/tls:ro" \
        -v "$VOLUME:/var/lib/mqttd" \
        --read-only --tmpfs /run/mqttd:uid=10001,gid=10001,mode=0750 --tmpfs /tmp \
        --cap-drop ALL --security-opt no-new-privileges \
        --health-interval 1s --health-start-period 2s \
        "$IMAGE" >/dev/null || fail "docker run failed"
    sleep 0.5
    running || fail "the container exited at once (exit code $(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER"))"
    host_port MQTT_PORT 1883
    host_port MQTTS_PORT 8883
    host_port HTTP_PORT 8080
    log "container $CONTAINER: MQTT 127.0.0.1:$MQTT_PORT, MQTTS :$MQTTS_PORT, HTTP :$HTTP_PORT"
}

running() { [ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" = true ]; }

wait_ready() {
    local i
    for ((i = 0; i < READY_TRIES; i++)); do
        running || fail "the container exited during startup (exit code $(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER"))"
        if docker exec "$CONTAINER" mqttctl status >/dev/null 2>&1 &&
            curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz" 2>/dev/null; then
            pass "broker ready (mqttctl status answers, /readyz is 200)"
            return 0
        fi
        sleep 0.5
    done
    fail "broker not ready after $((READY_TRIES / 2)) s"
}

# roundtrip LABEL CLIENT-ARGS...: subscribes, then publishes until the
# subscriber got the message (the subscription may not be active yet when the
# first one is sent), over the connection CLIENT-ARGS describe.
roundtrip() {
    local label=$1 i sub_pid rc
    shift
    local topic="mqttd-image-test/$label/$$" payload="hello over $label $$"
    mosquitto_sub "$@" -i "sub-$label-$$" -t "$topic" -q 1 -C 1 -W 15 \
        >"$TMP/$label.out" 2>"$TMP/$label.err" &
    sub_pid=$!
    BG_PIDS+=("$sub_pid")
    for ((i = 0; i < PUBLISH_TRIES; i++)); do
        kill -0 "$sub_pid" 2>/dev/null || break
        mosquitto_pub "$@" -i "pub-$label-$$" -t "$topic" -q 1 -m "$payload" 2>>"$TMP/$label.err" || true
        sleep 0.5
    done
    rc=0
    wait "$sub_pid" || rc=$?
    if [ $rc -ne 0 ] || ! grep -qxF "$payload" "$TMP/$label.out"; then
        sed 's/^/    | /' "$TMP/$label.err" >&2
        fail "no message round trip over $label (mosquitto_sub exit code $rc)"
    fi
    pass "publish/subscribe round trip over $label"
}

check_mqtt() {
    local certs=$TMP/certs
    roundtrip mqtt -h 127.0.0.1 -p "$MQTT_PORT"
    roundtrip mqtt5 -h 127.0.0.1 -p "$MQTT_PORT" -V mqttv5
    roundtrip mqtts -h 127.0.0.1 -p "$MQTTS_PORT" --cafile "$certs/ca.crt"
    roundtrip mqtts-client-cert -h localhost -p "$MQTTS_PORT" -V mqttv5 --cafile "$certs/ca.crt" \
        --cert "$certs/client.crt" --key "$certs/client.key"
}

check_mqttctl() {
    local id="mqttd-image-test-persistent-$$" out
    # A persistent session that outlives its connection, for sessions list.
    mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -i "$id" -c -q 1 -t "mqttd-image-test/keep" -E \
        2>"$TMP/persist.err" || { cat "$TMP/persist.err" >&2; fail "could not open a persistent session"; }
    out=$(docker exec "$CONTAINER" mqttctl sessions list 2>&1) ||
        { echo "$out" >&2; fail "docker exec $CONTAINER mqttctl sessions list failed"; }
    grep -qF "$id" <<<"$out" || { echo "$out" >&2; fail "mqttctl sessions list does not show $id"; }
    out=$(docker exec "$CONTAINER" mqttctl -o json sessions list 2>&1) ||
        { echo "$out" >&2; fail "mqttctl -o json sessions list failed"; }
    grep -qF "\"$id\"" <<<"$out" || { echo "$out" >&2; fail "mqttctl -o json sessions list does not show $id"; }
    pass "docker exec mqttctl sessions list (table and json) shows the persistent session"
    out=$(docker exec "$CONTAINER" mqttctl status 2>&1) || { echo "$out" >&2; fail "mqttctl status failed"; }
    out=$(docker exec "$CONTAINER" mqttctl pool show 2>&1) || { echo "$out" >&2; fail "mqttctl pool show failed"; }
    pass "docker exec mqttctl status and pool show"
}

check_http() {
    curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" || fail "/healthz is not 200"
    curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" >"$TMP/metrics" || fail "/metrics is not 200"
    [ -s "$TMP/metrics" ] || fail "/metrics is empty"
    pass "HTTP /healthz, /readyz and /metrics"
}

# The image has no shell or ps: ask Docker (docker top runs ps outside).
check_non_root() {
    local uids user
    uids=$(docker top "$CONTAINER" -o pid,uid,ruid,comm | awk 'NR > 1 && $4 == "mqttd" {print $2, $3}')
    [ "$uids" = "10001 10001" ] || fail "mqttd runs with uid/ruid '$uids', want 10001"
    user=$(docker inspect -f '{{.Config.User}}' "$IMAGE")
    [ "$user" = 10001:10001 ] || fail "the image's user is '$user', want 10001:10001"
    pass "mqttd runs as uid 10001 (user mqttd), not root; docker exec runs as 10001"
}

# Only the binaries, their libraries and the defaults: no shell, at most
# MAX_IMAGE_BYTES.
check_minimal() {
    local size
    if docker exec "$CONTAINER" sh -c true >/dev/null 2>&1; then fail "the image has a shell"; fi
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    [ "$size" -le "$MAX_IMAGE_BYTES" ] ||
        fail "the image is $size bytes, more than $MAX_IMAGE_BYTES"
    pass "no shell in the image; $(awk -v s="$size" 'BEGIN {printf "%.1f MB", s / 1e6}') <= $((MAX_IMAGE_BYTES / 1000000)) MB"
}

check_health() {
    local i status
    for ((i = 0; i < HEALTH_TRIES; i++)); do
        status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$CONTAINER")
        case "$status" in
            healthy) pass "Docker health check reports healthy"; return 0 ;;
            "") fail "the image has no HEALTHCHECK" ;;
        esac
        sleep 1
    done
    docker inspect -f '{{json .State.Health}}' "$CONTAINER" >&2
    fail "health status is '$status' after $HEALTH_TRIES s"
}

check_stop() {
    local start end elapsed code
    start=$(date +%s%N)
    docker stop -t "$STOP_LIMIT_SECS" "$CONTAINER" >/dev/null || fail "docker stop failed"
    end=$(date +%s%N)
    elapsed=$(((end - start) / 1000000))
    code=$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")
    [ "$code" = 0 ] || fail "mqttd exited with code $code on SIGTERM (want 0; 137 means it was killed)"
    [ "$elapsed" -lt $((STOP_LIMIT_SECS * 1000)) ] || fail "docker stop took ${elapsed} ms (limit ${STOP_LIMIT_SECS} s)"
    pass "docker stop: exit code 0 after ${elapsed} ms"
}

# json_get FILE EXPR: evaluates the Python expression EXPR over the JSON
# document in FILE (bound to `d`) and prints the result.
json_get() {
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# session_row FILE ID: the `sessions list -o json` row of ID, as
# "connected=... queued=...", or "missing".
session_row() {
    json_get "$1" "next((f\"connected={str(s['connected']).lower()} queued={s['queued']}\" for s in d['sessions'] if s['client_id'] == '$2'), 'missing')"
}

# A persistent session with a QoS 1 subscription, a retained message, and a
# QoS 1 message published while the session's client is away: what the
# store must bring back after a restart.
prepare_persistence() {
    PERSIST_ID="mqttd-image-test-store-$$"
    PERSIST_TOPIC="mqttd-image-test/store/$$"
    RETAINED_TOPIC="mqttd-image-test/retained/$$"
    mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -i "$PERSIST_ID" -c -q 1 -t "$PERSIST_TOPIC" -E \
        2>"$TMP/store.err" || { cat "$TMP/store.err" >&2; fail "could not open the persistent session $PERSIST_ID"; }
    mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -i "pub-retained-$$" -q 1 -r -t "$RETAINED_TOPIC" -m "retained $$" \
        2>>"$TMP/store.err" || { cat "$TMP/store.err" >&2; fail "could not publish the retained message"; }
    # mosquitto_pub waits for the PUBACK, which follows the store's write.
    mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -i "pub-queued-$$" -q 1 -t "$PERSIST_TOPIC" -m "queued $$" \
        2>>"$TMP/store.err" || { cat "$TMP/store.err" >&2; fail "could not publish to the offline session"; }
    docker exec "$CONTAINER" mqttctl -o json sessions list --prefix "$PERSIST_ID" >"$TMP/sessions.json" 2>&1 ||
        { cat "$TMP/sessions.json" >&2; fail "mqttctl -o json sessions list failed"; }
    local row
    row=$(session_row "$TMP/sessions.json" "$PERSIST_ID")
    [ "$row" = "connected=false queued=1" ] || fail "before the restart, $PERSIST_ID is '$row' (want connected=false queued=1)"
    pass "persistent session offline with 1 queued QoS 1 message, and a retained message"
}

# What `mqttctl status` says of the store: fjall on the volume, batched.
check_store_status() {
    docker exec "$CONTAINER" mqttctl -o json status >"$TMP/status.json" 2>&1 ||
        { cat "$TMP/status.json" >&2; fail "mqttctl -o json status failed"; }
    local store
    store=$(json_get "$TMP/status.json" "'{engine} {durability} {path} {ok}'.format(ok=d['store']['disk_bytes'] > 0 and d['store']['recoveries'] == [], **d['store'])") ||
        { cat "$TMP/status.json" >&2; fail "mqttctl status has no store"; }
    [ "$store" = "fjall 3 batched /var/lib/mqttd True" ] ||
        { cat "$TMP/status.json" >&2; fail "mqttctl status reports the store as '$store'"; }
    docker exec "$CONTAINER" mqttctl status >"$TMP/status.txt" 2>&1 || fail "mqttctl status failed"
    grep -q '^durability: *batched$' "$TMP/status.txt" || { cat "$TMP/status.txt" >&2; fail "mqttctl status shows no durability"; }
    pass "mqttctl status: store fjall 3, batched, at /var/lib/mqttd, bytes on disk, no recoveries"
}

# The data directory and the store in it belong to the mqttd user (the
# image's /var/lib/mqttd ownership, copied into the new volume).
check_volume_owner() {
    local owners
    owners=$(docker run --rm --network none -v "$VOLUME:/data:ro" --entrypoint stat "$HELPER_IMAGE" \
        -c '%u:%g' /data /data/store 2>&1) ||
        { echo "$owners" >&2; fail "no store under /var/lib/mqttd"; }
    [ "$owners" = $'10001:10001\n10001:10001' ] ||
        fail "/var/lib/mqttd and its store are owned by '$(tr '\n' ' ' <<<"$owners")', want 10001:10001"
    pass "/var/lib/mqttd and the store in it belong to uid 10001 (volume $VOLUME)"
}

# Stops the container (SIGTERM, exit 0), removes it and starts a new one on
# the same volume: only the volume carries the state across.
replace_container() {
    docker stop -t "$STOP_LIMIT_SECS" "$CONTAINER" >/dev/null || fail "docker stop failed"
    local code
    code=$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")
    [ "$code" = 0 ] || fail "mqttd exited with code $code on SIGTERM before the restart"
    docker rm -v "$CONTAINER" >/dev/null || fail "docker rm failed"
    start_container
    wait_ready
    pass "container replaced by a new one on volume $VOLUME"
}

# Resumes the session with a raw MQTT 3.1.1 client (mosquitto_sub does not
# print the CONNACK's session-present flag): CONNECT with clean session 0,
# expect session present and the queued message, acknowledge it.
resume_session() {
    python3 - "$MQTT_PORT" "$PERSIST_ID" >"$TMP/resume.out" 2>&1 <<'PY' || true
import socket
import sys

port, client_id = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port), timeout=10)

def string(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b

def packet(first, body):
    n, length = len(body), bytearray()
    while True:
        digit, n = n % 128, n // 128
        length.append(digit | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(length) + body

def read(n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            sys.exit("the broker closed the connection")
        buf += chunk
    return buf

def read_packet():
    first, n, shift = read(1)[0], 0, 0
    for _ in range(4):
        digit = read(1)[0]
        n |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    return first, read(n)

# Protocol level 4 (3.1.1), flags 0 (clean session off), keepalive 60 s.
sock.sendall(packet(0x10, string("MQTT") + bytes([4, 0]) + (60).to_bytes(2, "big") + string(client_id)))
first, body = read_packet()
if first != 0x20 or body[1] != 0:
    sys.exit(f"CONNACK refused: {first:#x} {body.hex()}")
print(f"session_present={body[0] & 1}")
first, body = read_packet()
if first >> 4 != 3:
    sys.exit(f"expected a PUBLISH, got packet type {first >> 4}")
qos, n = (first >> 1) & 3, int.from_bytes(body[:2], "big")
topic, rest = body[2 : 2 + n].decode(), body[2 + n :]
if qos:
    sock.sendall(bytes([0x40, 2]) + rest[:2])  # PUBACK
    rest = rest[2:]
print(f"qos={qos} topic={topic} payload={rest.decode()}")
sock.sendall(bytes([0xE0, 0]))  # DISCONNECT
sock.close()
PY
    grep -qx "session_present=1" "$TMP/resume.out" ||
        { sed 's/^/    | /' "$TMP/resume.out" >&2; fail "$PERSIST_ID was not resumed after the restart (no session present)"; }
    grep -qxF "qos=1 topic=$PERSIST_TOPIC payload=queued $$" "$TMP/resume.out" ||
        { sed 's/^/    | /' "$TMP/resume.out" >&2; fail "the message queued before the restart was not delivered"; }
    pass "after the restart: $PERSIST_ID resumed (session present) and got its queued QoS 1 message"
}

check_restart() {
    docker exec "$CONTAINER" mqttctl -o json sessions list --prefix "$PERSIST_ID" >"$TMP/sessions.json" 2>&1 ||
        { cat "$TMP/sessions.json" >&2; fail "mqttctl -o json sessions list failed after the restart"; }
    local row
    row=$(session_row "$TMP/sessions.json" "$PERSIST_ID")
    [ "$row" = "connected=false queued=1" ] ||
        fail "after the restart, mqttctl sessions list shows $PERSIST_ID as '$row' (want connected=false queued=1)"
    pass "after the restart: mqttctl sessions list shows $PERSIST_ID disconnected with 1 queued"
    resume_session
    mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -i "sub-retained-$$" -t "$RETAINED_TOPIC" -C 1 -W 10 \
        >"$TMP/retained.out" 2>"$TMP/retained.err" ||
        { sed 's/^/    | /' "$TMP/retained.err" >&2; fail "no retained message after the restart"; }
    grep -qxF "retained $$" "$TMP/retained.out" || fail "retained message after the restart: '$(cat "$TMP/retained.out")'"
    pass "after the restart: the retained message is delivered to a new subscriber"
}

check_compose() {
    local compose=()
    if docker compose version >/dev/null 2>&1; then compose=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then compose=(docker-compose)
    else log "no docker compose here: compose.yaml not checked"; return 0; fi
    "${compose[@]}" -f "$HERE/compose.yaml" config -q >"$TMP/compose.log" 2>&1 ||
        { cat "$TMP/compose.log" >&2; fail "${compose[*]} rejects docker/compose.yaml"; }
    pass "compose.yaml is valid for ${compose[*]}"
}

# compose.yaml's configuration (mqttd-tls.yaml) opens TLS only: a client
# with the example certificate gets through on 8883, one without is
# refused, and nothing answers on the plain MQTT port.
check_tls_only() {
    local c=$CONTAINER-tls certs=$TMP/certs i mapping port plain
    docker run -d --name "$c" -p 127.0.0.1::8883 -p 127.0.0.1::1883 \
        -v "$HERE/mqttd-tls.yaml:/etc/mqttd/mqttd.yaml:ro" -v "$TMP/certs:/etc/mqttd/tls:ro" \
        --read-only --tmpfs /run/mqttd:uid=10001,gid=10001,mode=0750 --cap-drop ALL \
        "$IMAGE" >/dev/null || fail "docker run with mqttd-tls.yaml failed"
    for ((i = 0; i < READY_TRIES; i++)); do
        docker exec "$c" mqttctl status >/dev/null 2>&1 && break
        sleep 0.5
    done
    mapping=$(docker port "$c" 8883/tcp | head -n1); port=${mapping##*:}
    mapping=$(docker port "$c" 1883/tcp | head -n1); plain=${mapping##*:}
    roundtrip tls-only -h localhost -p "$port" --cafile "$certs/ca.crt" \
        --cert "$certs/client.crt" --key "$certs/client.key"
    if mosquitto_pub -h localhost -p "$port" --cafile "$certs/ca.crt" -i "no-cert-$$" \
        -t mqttd-image-test/no-cert -m x 2>/dev/null; then
        fail "mqttd-tls.yaml accepted a client without a certificate"
    fi
    if mosquitto_pub -h 127.0.0.1 -p "$plain" -i "plain-$$" -t mqttd-image-test/plain -m x 2>/dev/null; then
        fail "mqttd-tls.yaml answers plain MQTT on 1883"
    fi
    docker rm -f -v "$c" >/dev/null
    pass "compose's mqttd-tls.yaml: TLS with a client certificate only (refused without one; no plain MQTT)"
}

report() {
    local size
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    log "image $IMAGE: $(awk -v s="$size" 'BEGIN {printf "%.1f MB", s / 1e6}')"
    log "summary: ${#PASSED[@]} checks passed"
    printf '  - %s\n' "${PASSED[@]}" >&2
}

main() {
    check_engine
    need_tools
    check_compose
    "$HERE/gen-certs.sh" "$TMP/certs" 2>/dev/null || fail "gen-certs.sh failed"
    build_image
    check_configs
    start_container
    wait_ready
    check_non_root
    check_minimal
    check_mqtt
    check_mqttctl
    check_http
    check_health
    check_store_status
    check_volume_owner
    prepare_persistence
    replace_container
    check_store_status
    check_restart
    check_stop
    check_tls_only
    report
    log "PASSED"
}

# Sourcing the script (for debugging a step) defines the functions only.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
