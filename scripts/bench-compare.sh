#!/usr/bin/env bash
# Benchmarks mqttd, Mosquitto and rumqttd side by side and writes
# BENCHMARKS.md.
#
# Builds the release binaries (and installs the pinned rumqttd once), then
# for every case starts a fresh broker of each kind in turn (the order
# rotates from case to case, so each broker goes first in a third of the
# cases), runs one mqttd-bench scenario against it, stops it, and keeps the
# JSON result. Finally `mqttd-bench compare` renders the figures side by
# side with the ratios mqttd/Mosquitto and mqttd/rumqttd, every broker's
# lost messages and the target verdicts.
#
# The persistence cases run mqttd once per durability mode (batched, sync,
# memory) beside Mosquitto with `persistence true`, with persistent
# subscribers; the start-up case fills mqttd (batched) and Mosquitto with
# 100,000 offline sessions and 1,000,000 queued messages, stops each with
# SIGTERM, measures the data directory and times the restart. rumqttd keeps
# nothing on disk and is left out of those.
#
# The brokers listen on private loopback ports with generated configs (see
# bench/README.md for the settings and why). Total time: about 10 minutes,
# about two minutes of measuring with --quick (plus the build).
#
# Usage: scripts/bench-compare.sh [--quick] [--out FILE] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=full
OUT=BENCHMARKS.md
KEEP=0
usage() {
    cat <<'EOF'
Usage: scripts/bench-compare.sh [--quick] [--out FILE] [--keep]

  --quick     short runs (about two minutes of measuring), smaller idle and
              start-up tests
  --out FILE  where to write the report (default BENCHMARKS.md)
  --keep      keep the work directory (configs, logs, JSON results)
EOF
}
while (($#)); do
    case $1 in
        --quick) MODE=quick ;;
        --out) OUT=${2:?--out needs a file}; shift ;;
        --keep) KEEP=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-compare: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
MOSQUITTO=$(command -v mosquitto || true)
[ -z "$MOSQUITTO" ] && [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto
need_apt=()
[ -n "$MOSQUITTO" ] || need_apt+=(mosquitto)
command -v openssl >/dev/null || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi

log "building release binaries"
cargo build --release --locked -p mqttd -p mqttd-bench -p mqttctl
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MQTTD=$TARGET_DIR/release/mqttd
BENCH=$TARGET_DIR/release/mqttd-bench
MQTTCTL=$TARGET_DIR/release/mqttctl

# rumqttd, pinned, from crates.io, installed once into a cache under
# target/ (not ~/.cargo/bin, which may hold another version). Without
# --locked: the lock file it ships pins a `metrics` crate that no longer
# builds on current rustc.
RUMQTTD_VERSION=0.20.0
RUMQTTD_ROOT=$TARGET_DIR/rumqttd-$RUMQTTD_VERSION
RUMQTTD=$RUMQTTD_ROOT/bin/rumqttd
if [ "$("$RUMQTTD" --version 2>/dev/null || true)" != "rumqttd $RUMQTTD_VERSION" ]; then
    log "installing rumqttd $RUMQTTD_VERSION into $RUMQTTD_ROOT (once; several minutes)"
    cargo install rumqttd --version "$RUMQTTD_VERSION" --root "$RUMQTTD_ROOT" ||
        die "cannot install rumqttd $RUMQTTD_VERSION from crates.io"
fi

WORK=$(mktemp -d /tmp/bench-compare.XXXXXX)
RESULTS=$WORK/results
LOGS=$WORK/logs
mkdir -p "$RESULTS" "$LOGS" "$WORK/mqttd-data" "$WORK/data"
BROKER_PID=""
cleanup() {
    stop_broker
    if ((KEEP)); then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every descriptor the hard limit allows, for the brokers and the bench.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)

# --- ports, certificates, configs -------------------------------------------
# Below the ephemeral range (32768 and up by default), so that no client
# connection of an earlier case can hold the port; never one picked before.
PORTS_TAKEN=" "
pick_port() { # VAR
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        [[ $PORTS_TAKEN == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            PORTS_TAKEN+="$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
    die "no free port found"
}
pick_port MQTTD_PORT
pick_port MQTTD_TLS_PORT
pick_port MQTTD_HTTP_PORT
pick_port MOSQ_PORT
pick_port MOSQ_TLS_PORT
pick_port RUMQ_PORT
pick_port RUMQ_TLS_PORT

log "generating a test CA and server certificate"
(
    cd "$WORK"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=mqttd-bench CA" -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext.cnf -out server.pem 2>/dev/null
)

# Fairness: every broker gets a large in-flight window and queue (rumqttd's
# knobs differ, see below), warnings only in its log, no persistence to
# disk (mqttd: `durability: memory`, as Mosquitto's `persistence false`),
# TCP_NODELAY where the broker has a setting for it. mqttd's control
# socket and metrics port are private to this run.
mqttd_yaml() { # log-level durability-line
    cat <<EOF
log:
  level: "$1"
mqtt:
  max_inflight_messages: 65535
  max_queued_messages: 1000000
  max_queued_bytes: 0
  max_pending_qos0_messages: 1000000
session_manager:
  pool_size: 0
limits:
  max_sessions: 250000
storage:
  data_dir: $WORK/mqttd-data
$2control:
  socket: $WORK/mqttd.sock
http:
  bind: "127.0.0.1:$MQTTD_HTTP_PORT"
EOF
}
mqttd_yaml warn "  durability: memory
" >"$WORK/mqttd.yaml"
# The persistence and start-up cases: the same settings, the durability
# mode and a fresh data directory given on the command line
# (--durability, --data-dir), and the store's "store loaded" line logged
# (sessions, queued messages, millis).
mqttd_yaml "warn,mqttd::store=info" "" >"$WORK/mqttd-store.yaml"
# The TLS case needs TLS listeners in the file (--listen makes plain ones).
{
    cat "$WORK/mqttd.yaml"
    cat <<EOF
listeners:
  - {name: mqtt, kind: tcp, bind: "127.0.0.1:$MQTTD_PORT"}
  - name: mqtts
    kind: tls
    bind: "127.0.0.1:$MQTTD_TLS_PORT"
    tls:
      cert_file: $WORK/server.pem
      key_file: $WORK/server.key
EOF
} >"$WORK/mqttd-tls.yaml"
MQTTD_TLS=0
"$MQTTD" --check-config "$WORK/mqttd-tls.yaml" >"$WORK/mqttd-tls-check.log" 2>&1 && MQTTD_TLS=1

cat >"$WORK/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
listener $MOSQ_PORT 127.0.0.1
listener $MOSQ_TLS_PORT 127.0.0.1
certfile $WORK/server.pem
keyfile $WORK/server.key
max_inflight_messages 65535
max_queued_messages 1000000
set_tcp_nodelay true
persistence false
log_dest stderr
log_type error
log_type warning
user $(id -un)
EOF
# The persistence and start-up cases: persistence on with Mosquitto's
# defaults (autosave_interval 1800 s, and a save at shutdown), in a
# directory of its own emptied before each start.
MOSQ_DATA=$WORK/data/mosquitto
sed "s|^persistence false\$|persistence true\npersistence_location $MOSQ_DATA/|" \
    "$WORK/mosquitto.conf" >"$WORK/mosquitto-persist.conf"

# rumqttd keeps nothing on disk. What would throttle it is raised: the
# pause after every accepted connection, the connection table (when full,
# a CONNECT is never answered), the QoS 0 batch moved to a subscriber per
# router pass, the packets taken per network read, the payload size. The
# per-topic log (max_segment_count x max_segment_size bytes) is where it
# drops messages for a subscriber that falls too far behind.
rumqttd_listener() { # index name port
    cat <<EOF

[v4.$1]
name = "$2"
listen = "127.0.0.1:$3"
next_connection_delay_ms = 0
EOF
    if [ "$2" = v4-tls ]; then
        cat <<EOF
[v4.$1.tls]
certpath = "$WORK/server.pem"
keypath = "$WORK/server.key"
EOF
    fi
    cat <<EOF
[v4.$1.connections]
connection_timeout_ms = 60000
max_payload_size = 268435455
max_inflight_count = 65535
dynamic_filters = true
EOF
}
{
    cat <<EOF
id = 0

[router]
max_connections = 200000
max_outgoing_packet_count = 65535
max_segment_size = 104857600
max_segment_count = 10
EOF
    rumqttd_listener 1 v4-plain "$RUMQ_PORT"
    rumqttd_listener 2 v4-tls "$RUMQ_TLS_PORT"
} >"$WORK/rumqttd.toml"

# --- brokers -----------------------------------------------------------------
wait_port() { # port
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
broker_port() { # broker tls(0|1)
    case $1:$2 in
        mqttd:0 | mqttd-*:0) echo "$MQTTD_PORT" ;;
        mqttd:1) echo "$MQTTD_TLS_PORT" ;;
        mosquitto:0 | mosquitto-persist:0) echo "$MOSQ_PORT" ;;
        mosquitto:1) echo "$MOSQ_TLS_PORT" ;;
        rumqttd:0) echo "$RUMQ_PORT" ;;
        rumqttd:1) echo "$RUMQ_TLS_PORT" ;;
        *) die "no port for $1" ;;
    esac
}
# The data directory of a broker kind that keeps one (empty otherwise).
broker_data_dir() { # broker
    case $1 in
        mqttd-batched | mqttd-sync | mqttd-memory) echo "$WORK/data/$1" ;;
        mosquitto-persist) echo "$MOSQ_DATA" ;;
        *) echo "" ;;
    esac
}
# Sets BROKER_CMD to the command line starting a broker kind: mqttd,
# mosquitto, rumqttd, or for the persistence cases mqttd-batched,
# mqttd-sync, mqttd-memory (mqttd in that durability mode) and
# mosquitto-persist.
broker_cmd() { # broker tls(0|1)
    case $1 in
        mqttd)
            if (($2)); then
                BROKER_CMD=("$MQTTD" --config "$WORK/mqttd-tls.yaml")
            else
                BROKER_CMD=("$MQTTD" --config "$WORK/mqttd.yaml" --listen "127.0.0.1:$MQTTD_PORT")
            fi
            ;;
        mqttd-*)
            BROKER_CMD=("$MQTTD" --config "$WORK/mqttd-store.yaml"
                --listen "127.0.0.1:$MQTTD_PORT" --durability "${1#mqttd-}"
                --data-dir "$(broker_data_dir "$1")")
            ;;
        mosquitto) BROKER_CMD=("$MOSQUITTO" -c "$WORK/mosquitto.conf") ;;
        mosquitto-persist) BROKER_CMD=("$MOSQUITTO" -c "$WORK/mosquitto-persist.conf") ;;
        # -q leaves out the banner.
        rumqttd) BROKER_CMD=("$RUMQTTD" -q -c "$WORK/rumqttd.toml") ;;
        *) die "unknown broker $1" ;;
    esac
}
start_broker() { # broker tls(0|1) logfile
    local log=$3 data
    data=$(broker_data_dir "$1")
    if [ -n "$data" ]; then
        rm -rf "$data"
        mkdir -p "$data"
    fi
    broker_cmd "$1" "$2"
    # Every broker's output goes to the case's log (rumqttd logs to stdout).
    "${BROKER_CMD[@]}" >>"$log" 2>&1 &
    BROKER_PID=$!
    wait_port "$(broker_port "$1" "$2")" || die "$1 did not start (see $log; use --keep)"
}
stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}

# --- cases -------------------------------------------------------------------
if [ "$MODE" = quick ]; then
    CONN_T=1s; PUBSUB_T=1s; LAT_T=3s; LAT_WARM=500ms; CHURN_T=1500ms
    IDLE_N=2000; IDLE_SETTLE=1s; IDLE_HOLD=500ms; DRAIN=2s
    FILL_SESSIONS=10000; FILL_MESSAGES=100000
else
    CONN_T=8s; PUBSUB_T=8s; LAT_T=10s; LAT_WARM=1s; CHURN_T=9s
    IDLE_N=100000; IDLE_SETTLE=2s; IDLE_HOLD=3s; DRAIN=10s
    FILL_SESSIONS=100000; FILL_MESSAGES=1000000
fi
# Bound of each step of the start-up case (making the sessions, queueing
# the messages, the stop, the restart).
FILL_LIMIT=300s
NOTES=$WORK/notes.md
: >"$NOTES"
# Each held connection costs a descriptor in the bench and one in the broker.
IDLE_MAX=$((FD_LIMIT - 1000))
if ((IDLE_N > IDLE_MAX)); then
    echo "- **Idle connections capped at $IDLE_MAX** (of $IDLE_N): RLIMIT_NOFILE's hard limit" \
        "here is $FD_LIMIT per process and cannot be raised without CAP_SYS_RESOURCE, so" \
        "neither broker can hold 100,000 connections on this machine. Re-run as a user" \
        "whose hard limit is above 101,000 (\`ulimit -Hn\`) to measure it." >>"$NOTES"
    IDLE_N=$IDLE_MAX
fi
FANOUT=8
FANIN=8

CASE_INDEX=0
FAILED=0
BROKERS=(mqttd mosquitto rumqttd)
# The persistence cases: mqttd in each durability mode, Mosquitto with
# persistence on.
PERSIST_BROKERS=(mqttd-batched mqttd-sync mqttd-memory mosquitto-persist)
RUMQTTD_NO_DISK="rumqttd $RUMQTTD_VERSION keeps nothing on disk (it has no persistence setting), so it has no figure with persistence on"
LOADS=$WORK/loads.txt
: >"$LOADS"
# The name a broker kind's results go under: mosquitto-persist is
# Mosquitto in the persistence cases.
result_name() { echo "${1%-persist}"; }
# run_case NAME TLS(0|1) SCENARIO ARGS...: against mqttd, Mosquitto, rumqttd.
run_case() { run_case_on BROKERS "$@"; }
# run_case_on BROKER_ARRAY NAME TLS(0|1) SCENARIO ARGS...
run_case_on() {
    local -n kinds=$1
    local name=$2 tls=$3
    shift 3
    local k=$((CASE_INDEX % ${#kinds[@]}))
    local order=("${kinds[@]:k}" "${kinds[@]:0:k}")
    CASE_INDEX=$((CASE_INDEX + 1))
    echo "$name $(cut -d' ' -f1 /proc/loadavg)" >>"$LOADS"
    for kind in "${order[@]}"; do
        local broker
        broker=$(result_name "$kind")
        if [ "$kind" = mqttd ] && ((tls && !MQTTD_TLS)); then
            log "$name: skipped for mqttd (its TLS listener config was refused)"
            echo "this mqttd build refused a TLS listener (\`mqttd --check-config\`:" \
                "$(tail -n 1 "$WORK/mqttd-tls-check.log" | sed "s|$WORK/||g"))" \
                >"$RESULTS/$name.$broker.skipped"
            continue
        fi
        local port log=$LOGS/$name.$broker.log
        port=$(broker_port "$kind" "$tls")
        start_broker "$kind" "$tls" "$log"
        local tls_args=()
        ((tls)) && tls_args=(--tls --cafile "$WORK/ca.pem" --server-name localhost)
        log "$name on $broker"
        if ! "$BENCH" -p "$port" --pid "$BROKER_PID" "${tls_args[@]}" -q -o json "$@" \
            >"$RESULTS/$name.$broker.json" 2>>"$WORK/bench.log"; then
            case_failed "$name" "$broker"
        fi
        stop_broker
        [ "$kind" != rumqttd ] || note_cursor_jumps "$name" "$log"
    done
}
case_failed() { # case broker
    rm -f "$RESULTS/$1.$2.json"
    tail -n 1 "$WORK/bench.log" >"$RESULTS/$1.$2.failed"
    echo "- \`$1\` failed on $2: $(tail -n 1 "$WORK/bench.log")" >>"$NOTES"
    FAILED=$((FAILED + 1))
}

# The start-up case, on mqttd (batched, the default) and Mosquitto with
# persistence on: `fill` makes the persistent sessions and queues the
# messages, then `restart` stops the broker with SIGTERM, measures its
# data directory, starts the same command again and times it until the
# first CONNACK (and, for mqttd, until `mqttctl status` answers), reads
# its peak RSS, reconnects a sample of the sessions to count their
# messages, and stops it.
run_startup() {
    local kinds=(mqttd-batched mosquitto-persist)
    ((CASE_INDEX % 2)) && kinds=(mosquitto-persist mqttd-batched)
    CASE_INDEX=$((CASE_INDEX + 1))
    echo "startup $(cut -d' ' -f1 /proc/loadavg)" >>"$LOADS"
    local size=(--sessions "$FILL_SESSIONS" --messages "$FILL_MESSAGES")
    for kind in "${kinds[@]}"; do
        local broker port log ready=()
        broker=$(result_name "$kind")
        port=$(broker_port "$kind" 0)
        log=$LOGS/startup.$broker.log
        start_broker "$kind" 0 "$log"
        log "startup-fill on $broker ($FILL_SESSIONS sessions, $FILL_MESSAGES messages)"
        if ! "$BENCH" -p "$port" --pid "$BROKER_PID" -q -o json fill "${size[@]}" \
            --payload 100 --limit "$FILL_LIMIT" \
            >"$RESULTS/startup-fill.$broker.json" 2>>"$WORK/bench.log"; then
            case_failed startup-fill "$broker"
            echo "restart not measured: the fill failed" >"$RESULTS/startup-restart.$broker.skipped"
            stop_broker
            continue
        fi
        broker_cmd "$kind" 0
        [ "$kind" = mosquitto-persist ] ||
            ready=(--ready-cmd "'$MQTTCTL' --socket '$WORK/mqttd.sock' status")
        log "startup-restart on $broker"
        if ! "$BENCH" -p "$port" --pid "$BROKER_PID" -q -o json restart "${size[@]}" \
            --data-dir "$(broker_data_dir "$kind")" --log "$log" --limit "$FILL_LIMIT" \
            "${ready[@]}" -- "${BROKER_CMD[@]}" \
            >"$RESULTS/startup-restart.$broker.json" 2>>"$WORK/bench.log"; then
            case_failed startup-restart "$broker"
        fi
        # The filled broker has exited (restart stopped it): reap it.
        stop_broker
        local missing
        missing=$(metric startup-restart "$broker" verify_missing || true)
        if [ -n "$missing" ] && [ "${missing%.*}" != 0 ]; then
            echo "- \`startup-restart\`: **$broker lost queued messages over the restart**:" \
                "$missing of the verified sessions' messages did not come back." >>"$NOTES"
        fi
    done
    echo "$RUMQTTD_NO_DISK." >"$RESULTS/startup-fill.rumqttd.skipped"
    echo "$RUMQTTD_NO_DISK." >"$RESULTS/startup-restart.rumqttd.skipped"
}

# rumqttd warns "Read cursor start jumped" when a subscriber's read
# position fell behind the start of the topic's in-memory log (its oldest
# segment was dropped): the messages in between are lost for that
# subscriber.
note_cursor_jumps() { # case logfile
    local jumps
    jumps=$(grep -c 'Read cursor start jumped' "$2" || true)
    if ((jumps > 0)); then
        echo "- \`$1\`: rumqttd logged $jumps cursor jump(s): a subscriber fell behind" \
            "the topic's in-memory log and skipped the messages dropped from it." >>"$NOTES"
    fi
}

metric() { # case broker metric
    local f=$RESULTS/$1.$2.json
    [ -f "$f" ] || return 1
    sed -n "/\"name\": \"$3\"/{n;s/.*\"value\": \([0-9.eE+-]*\).*/\1/p;q}" "$f"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
UPTIME_BEFORE=$(uptime)
START=$SECONDS
run_case conn-plain 0 conn --count 1000000 --duration "$CONN_T" --concurrency 32
run_case conn-tls 1 conn --count 1000000 --duration "$CONN_T" --concurrency 32
run_case pubsub-1to1-qos0 0 pubsub --qos 0 --duration "$PUBSUB_T" --drain "$DRAIN"
run_case pubsub-fanin-qos0 0 pubsub --qos 0 --publishers "$FANIN" --duration "$PUBSUB_T" --drain "$DRAIN"
run_case pubsub-fanout-qos0 0 pubsub --qos 0 --subscribers "$FANOUT" --duration "$PUBSUB_T" --drain "$DRAIN"
run_case pubsub-1to1-qos1 0 pubsub --qos 1 --duration "$PUBSUB_T" --drain "$DRAIN"
run_case pubsub-fanin-qos1 0 pubsub --qos 1 --publishers "$FANIN" --duration "$PUBSUB_T" --drain "$DRAIN"
run_case pubsub-1to1-qos2 0 pubsub --qos 2 --duration "$PUBSUB_T" --drain "$DRAIN"

# Latency at half of Mosquitto's peak 1→1 QoS 0 delivery rate.
PEAK=$(metric pubsub-1to1-qos0 mosquitto received_per_sec || true)
if [ -n "$PEAK" ]; then
    HALF=$(awk -v p="$PEAK" 'BEGIN { printf "%d", p / 2 }')
    run_case latency-half-peak 0 latency --rate "$HALF" --duration "$LAT_T" --warmup "$LAT_WARM"
else
    echo "- \`latency-half-peak\` not run: no Mosquitto peak rate measured" >>"$NOTES"
fi
# rumqttd accepts about 1,000 connections/s (see bench/README.md): give
# 100,000 of them the time.
run_case idle 0 idle --connections "$IDLE_N" --concurrency 64 \
    --settle "$IDLE_SETTLE" --hold "$IDLE_HOLD" --connect-limit 300s
run_case churn 0 churn --duration "$CHURN_T" --workers 32 --ids 1000

# Persistence: persistent subscribers (clean_session=0, QoS 1), so every
# message is stored for them before the publisher's PUBACK (mqttd batched
# and sync); Mosquitto with persistence true snapshots its state every
# autosave_interval and at shutdown.
for name in persist-1to1-qos1 persist-fanin-qos1; do
    echo "$RUMQTTD_NO_DISK." >"$RESULTS/$name.rumqttd.skipped"
done
run_case_on PERSIST_BROKERS persist-1to1-qos1 0 pubsub --qos 1 --persistent \
    --duration "$PUBSUB_T" --drain "$DRAIN"
run_case_on PERSIST_BROKERS persist-fanin-qos1 0 pubsub --qos 1 --persistent \
    --publishers "$FANIN" --duration "$PUBSUB_T" --drain "$DRAIN"
run_startup
ELAPSED=$((SECONDS - START))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
UPTIME_AFTER=$(uptime)

# --- report ------------------------------------------------------------------
{
    echo "- Measuring took ${ELAPSED}s. Load average before: $LOAD_BEFORE; after: $LOAD_AFTER" \
        "(the bench, the broker and anything else on the machine share its $(nproc) CPUs)."
    echo "- \`uptime\` before: \`$(echo "$UPTIME_BEFORE" | xargs)\`; after: \`$(echo "$UPTIME_AFTER" | xargs)\`."
    echo "- 1-minute load average at the start of each case:" \
        "$(awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }' "$LOADS")" \
        "(other work shares this machine; above $(nproc), the brokers competed for CPU)."
    echo "- Persistence cases: Mosquitto with \`persistence true\` writes its whole state to" \
        "\`mosquitto.db\` every \`autosave_interval\` (1800 s by default) and at shutdown, never" \
        "per message, so a crash loses what arrived since the last save; mqttd \`batched\` writes" \
        "each message for a persistent session to its journal before the PUBACK and fsyncs every" \
        "\`flush_interval_ms\` (1000), \`sync\` fsyncs before the PUBACK (group commit)," \
        "\`memory\` writes nothing. rumqttd keeps nothing on disk and is left out."
    echo "- Start-up (\`startup-restart\`): \`startup_ms\` runs from starting the broker's process" \
        "to the first CONNACK; disk bytes are the data directory's apparent size after the SIGTERM" \
        "(\`du -sb\`) over the queued messages, the $FILL_SESSIONS sessions and their subscriptions included."
    echo "- Every case starts a fresh broker; the order of the brokers (in the persistence" \
        "cases, of mqttd's three durability modes and Mosquitto) rotates from case to case."
} >>"$NOTES"
MQTTD_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || MQTTD_REV="$MQTTD_REV (with uncommitted changes)"
MOSQ_VERSION=$( ("$MOSQUITTO" -h 2>/dev/null || true) | sed -n '1s/^mosquitto version //p')
RUMQ_VERSION=$( ("$RUMQTTD" --version 2>/dev/null || true) | sed -n '1s/^rumqttd //p')
{
    echo "The brokers listen on 127.0.0.1 only, with these generated configurations."
    echo "Client side: \`mqttd-bench\` (MQTT 3.1.1, TCP_NODELAY, TLS 1.3 via rustls/ring without"
    echo "session resumption); mode \`$MODE\`, fan-in $FANIN publishers, fan-out $FANOUT subscribers,"
    echo "64-byte payloads, QoS 1/2 window 256 per publisher."
    echo
    echo "mqttd (\`mqttd --config mqttd.yaml --listen 127.0.0.1:PORT\`):"
    echo
    echo '```yaml'
    sed "s|$WORK|WORKDIR|g" "$WORK/mqttd.yaml"
    echo '```'
    echo
    echo "mqttd in the persistence and start-up cases (\`mqttd --config mqttd-store.yaml --listen"
    echo "127.0.0.1:PORT --durability MODE --data-dir WORKDIR/data/mqttd-MODE\`, the directory emptied"
    echo "before each start; the restart runs the same command):"
    echo
    echo '```yaml'
    sed "s|$WORK|WORKDIR|g" "$WORK/mqttd-store.yaml"
    echo '```'
    echo
    echo "Mosquitto (\`mosquitto -c mosquitto.conf\`):"
    echo
    echo '```'
    sed "s|$WORK|WORKDIR|g; s|listener [0-9]*|listener PORT|" "$WORK/mosquitto.conf"
    echo '```'
    echo
    echo "Mosquitto in the persistence and start-up cases (\`mosquitto -c mosquitto-persist.conf\`,"
    echo "its persistence directory emptied before each start): the same, with"
    echo
    echo '```'
    grep '^persistence' "$WORK/mosquitto-persist.conf" | sed "s|$WORK|WORKDIR|g"
    echo '```'
    echo
    echo "rumqttd $RUMQTTD_VERSION from crates.io (\`rumqttd -q -c rumqttd.toml\`):"
    echo
    echo '```toml'
    sed "s|$WORK|WORKDIR|g; s|127.0.0.1:[0-9]*|127.0.0.1:PORT|" "$WORK/rumqttd.toml"
    echo '```'
    echo
    echo "Limits of rumqttd $RUMQTTD_VERSION that no setting lifts (bench/README.md has the"
    echo "evidence): it pauses after every accepted connection, and even a 0 ms pause lasts until"
    echo "tokio's next 1 ms timer tick, so it accepts about 1,000 connections/s per listener (TLS"
    echo "handshakes run in that same accept loop, one at a time); its QoS 1/2 window towards a"
    echo "subscriber is fixed at 100 messages; it keeps each topic's messages in an in-memory log"
    echo "of \`max_segment_count\` × \`max_segment_size\` bytes (counting topic and payload), and a"
    echo "subscriber that falls further behind than that loses the messages dropped from it."
} >"$WORK/settings.md"
# The soak section is written by scripts/bench-soak.sh: keep it.
SOAK_SECTION=$WORK/soak-section.md
: >"$SOAK_SECTION"
[ -f "$OUT" ] && awk '/^## Soak \(overload\)$/ { s = 1 } s && /^## / && !/^## Soak \(overload\)$/ { s = 0 } s' \
    "$OUT" >"$SOAK_SECTION"
"$BENCH" compare --results "$RESULTS" --out "$OUT" --mode "$MODE" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --mqttd-version "$MQTTD_REV" --mosquitto-version "${MOSQ_VERSION:-unknown}" \
    --rumqttd-version "${RUMQ_VERSION:-unknown}" \
    --settings "$WORK/settings.md" --notes "$NOTES"
[ -s "$SOAK_SECTION" ] && { echo; cat "$SOAK_SECTION"; } >>"$OUT"
sed -n '/^## Targets/,/^## Results/p' "$OUT" | sed '$d'
((FAILED == 0)) || log "$FAILED run(s) failed; see the Notes section of $OUT"
