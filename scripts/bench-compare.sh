#!/usr/bin/env bash
# Benchmarks mqttd and Mosquitto side by side and writes BENCHMARKS.md.
#
# Builds the release binaries, then for every case starts a fresh broker
# (mqttd, then Mosquitto, or the other way round: the order alternates from
# case to case), runs one mqttd-bench scenario against it, stops it, and
# keeps the JSON result. Finally `mqttd-bench compare` renders the figures
# side by side with the ratio mqttd/Mosquitto and the target verdicts.
#
# Both brokers listen on private loopback ports with generated configs (see
# bench/README.md for the settings and why). Total time: about 4-5 minutes,
# under a minute of measuring with --quick (plus the build).
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

  --quick     short runs (under a minute of measuring), smaller idle test
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
cargo build --release --locked -p mqttd -p mqttd-bench
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MQTTD=$TARGET_DIR/release/mqttd
BENCH=$TARGET_DIR/release/mqttd-bench

WORK=$(mktemp -d /tmp/bench-compare.XXXXXX)
RESULTS=$WORK/results
mkdir -p "$RESULTS" "$WORK/mqttd-data"
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
# connection of an earlier case can hold the port.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}
MQTTD_PORT=$(free_port)
MQTTD_TLS_PORT=$(free_port)
MQTTD_HTTP_PORT=$(free_port)
MOSQ_PORT=$(free_port)
MOSQ_TLS_PORT=$(free_port)

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

# Fairness: both brokers get a large in-flight window and queue, warnings
# only in their logs, TCP_NODELAY, no persistence to disk. mqttd's control
# socket and metrics port are private to this run.
cat >"$WORK/mqttd.yaml" <<EOF
log:
  level: warn
mqtt:
  max_inflight_messages: 65535
  max_queued_messages: 1000000
  max_pending_qos0_messages: 1000000
session_manager:
  pool_size: 0
storage:
  data_dir: $WORK/mqttd-data
control:
  socket: $WORK/mqttd.sock
http:
  bind: "127.0.0.1:$MQTTD_HTTP_PORT"
EOF
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

# --- brokers -----------------------------------------------------------------
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
start_broker() { # broker tls(0|1)
    case $1 in
        mqttd)
            if (($2)); then
                "$MQTTD" --config "$WORK/mqttd-tls.yaml" 2>>"$WORK/mqttd.log" &
            else
                "$MQTTD" --config "$WORK/mqttd.yaml" --listen "127.0.0.1:$MQTTD_PORT" \
                    2>>"$WORK/mqttd.log" &
            fi
            BROKER_PID=$!
            wait_port "$MQTTD_PORT" || die "mqttd did not start (see $WORK/mqttd.log; use --keep)"
            ;;
        mosquitto)
            "$MOSQUITTO" -c "$WORK/mosquitto.conf" 2>>"$WORK/mosquitto.log" &
            BROKER_PID=$!
            wait_port "$MOSQ_PORT" || die "mosquitto did not start (see $WORK/mosquitto.log; use --keep)"
            ;;
    esac
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
else
    CONN_T=8s; PUBSUB_T=8s; LAT_T=10s; LAT_WARM=1s; CHURN_T=9s
    IDLE_N=100000; IDLE_SETTLE=2s; IDLE_HOLD=3s; DRAIN=10s
fi
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
# run_case NAME TLS(0|1) SCENARIO ARGS...
run_case() {
    local name=$1 tls=$2
    shift 2
    local order=(mqttd mosquitto)
    ((CASE_INDEX % 2)) && order=(mosquitto mqttd)
    CASE_INDEX=$((CASE_INDEX + 1))
    for broker in "${order[@]}"; do
        local port
        if [ "$broker" = mqttd ]; then
            if ((tls && !MQTTD_TLS)); then
                log "$name: skipped for mqttd (its TLS listener config was refused)"
                continue
            fi
            port=$MQTTD_PORT; ((tls)) && port=$MQTTD_TLS_PORT
        else
            port=$MOSQ_PORT; ((tls)) && port=$MOSQ_TLS_PORT
        fi
        start_broker "$broker" "$tls"
        local tls_args=()
        ((tls)) && tls_args=(--tls --cafile "$WORK/ca.pem" --server-name localhost)
        log "$name on $broker"
        if ! "$BENCH" -p "$port" --pid "$BROKER_PID" "${tls_args[@]}" -q -o json "$@" \
            >"$RESULTS/$name.$broker.json" 2>>"$WORK/bench.log"; then
            rm -f "$RESULTS/$name.$broker.json"
            echo "- \`$name\` failed on $broker: $(tail -n 1 "$WORK/bench.log")" >>"$NOTES"
            FAILED=$((FAILED + 1))
        fi
        stop_broker
    done
}

metric() { # case broker metric
    local f=$RESULTS/$1.$2.json
    [ -f "$f" ] || return 1
    sed -n "/\"name\": \"$3\"/{n;s/.*\"value\": \([0-9.eE+-]*\).*/\1/p;q}" "$f"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
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
run_case idle 0 idle --connections "$IDLE_N" --concurrency 64 \
    --settle "$IDLE_SETTLE" --hold "$IDLE_HOLD"
run_case churn 0 churn --duration "$CHURN_T" --workers 32 --ids 1000
ELAPSED=$((SECONDS - START))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------
{
    echo "- Measuring took ${ELAPSED}s. Load average before: $LOAD_BEFORE; after: $LOAD_AFTER" \
        "(the bench, the broker and anything else on the machine share its $(nproc) CPUs)."
    echo "- Every case starts a fresh broker; the order mqttd/Mosquitto alternates from case to case."
    if ((!MQTTD_TLS)); then
        echo "- \`conn-tls\` ran on Mosquitto only: this mqttd refused a TLS listener" \
            "(\`mqttd --check-config\`: $(tail -n 1 "$WORK/mqttd-tls-check.log" | sed "s|$WORK/||g"))."
    fi
} >>"$NOTES"
MQTTD_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || MQTTD_REV="$MQTTD_REV (with uncommitted changes)"
MOSQ_VERSION=$( ("$MOSQUITTO" -h 2>/dev/null || true) | sed -n '1s/^mosquitto version //p')
{
    echo "Both brokers listen on 127.0.0.1 only, with these generated configurations."
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
    echo "Mosquitto (\`mosquitto -c mosquitto.conf\`):"
    echo
    echo '```'
    sed "s|$WORK|WORKDIR|g; s|listener [0-9]*|listener PORT|" "$WORK/mosquitto.conf"
    echo '```'
} >"$WORK/settings.md"
"$BENCH" compare --results "$RESULTS" --out "$OUT" --mode "$MODE" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --mqttd-version "$MQTTD_REV" --mosquitto-version "${MOSQ_VERSION:-unknown}" \
    --settings "$WORK/settings.md" --notes "$NOTES"
sed -n '/^## Targets/,/^## Results/p' "$OUT" | sed '$d'
((FAILED == 0)) || log "$FAILED run(s) failed; see the Notes section of $OUT"
