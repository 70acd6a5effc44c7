#!/usr/bin/env bash
# The overload soak (issue 13): mqttd and Mosquitto, each with the same
# memory budget, under `mqttd-bench soak` — 1,000 publishers flooding QoS 0
# and QoS 1 at a subscriber that stopped reading, 10,000 abandoned
# persistent sessions subscribed to the same topics, a few healthy
# subscribers and a probe connecting every second — and writes the
# "Soak (overload)" section of BENCHMARKS.md (the rest of the file, which
# scripts/bench-compare.sh writes, is left as it is).
#
# mqttd gets `limits: {max_memory_bytes: BUDGET}`. A build that does not
# know that key yet refuses the config (`mqttd --check-config`); the script
# then says so and runs mqttd without a budget, labelled as such: today's
# behaviour, the "before" figures. Mosquitto (the Debian package) gets
# `memory_limit BUDGET` and `persistence false` (mqttd: `storage.durability:
# memory`): neither writes the abandoned sessions' queues to disk, so both
# hold them in memory, which is what the budget is about.
#
# Each broker is started fresh on a free loopback port, its PID recorded,
# and stopped by that PID only; everything goes to a temporary directory.
#
# Usage: scripts/bench-soak.sh [--duration 60s] [--budget BYTES]
#            [--publishers N] [--sessions N] [--rate MSG_PER_S]
#            [--mqttd-budget on|off] [--brokers "mqttd mosquitto"]
#            [--rss-cap-mb N] [--out FILE] [--keep]
#
# A broker whose RSS passes --rss-cap-mb (default 8192) is killed by the
# script (by its PID), and the section says so: the machine is shared, and
# an unbounded broker must not take the others' memory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=60s
BUDGET=268435456
PUBLISHERS=1000
SESSIONS=10000
RATE=0
MQTTD_BUDGET=on
BROKER_LIST="mqttd mosquitto"
OUT=BENCHMARKS.md
KEEP=0
RSS_CAP_MB=8192
usage() {
    cat <<'EOF'
Usage: scripts/bench-soak.sh [options]

  --duration D        how long the publishers flood (default 60s)
  --budget BYTES      memory budget of both brokers (default 268435456, 256 MiB)
  --publishers N      flooding publishers, half QoS 0, half QoS 1 (default 1000)
  --sessions N        abandoned persistent sessions (default 10000)
  --rate R            total offered messages/s; 0 = flat out (default 0)
  --mqttd-budget off  run mqttd without limits.max_memory_bytes (the "before")
  --brokers LIST      which of "mqttd mosquitto" to run (default both)
  --rss-cap-mb N      kill a broker whose RSS passes N MiB (default 8192)
  --out FILE          the Markdown file whose soak section is replaced
                      (default BENCHMARKS.md)
  --keep              keep the work directory (configs, logs, JSON results)
EOF
}
while (($#)); do
    case $1 in
        --duration) DURATION=${2:?--duration needs a value}; shift ;;
        --budget) BUDGET=${2:?--budget needs a value}; shift ;;
        --publishers) PUBLISHERS=${2:?--publishers needs a value}; shift ;;
        --sessions) SESSIONS=${2:?--sessions needs a value}; shift ;;
        --rate) RATE=${2:?--rate needs a value}; shift ;;
        --mqttd-budget) MQTTD_BUDGET=${2:?--mqttd-budget needs on or off}; shift ;;
        --brokers) BROKER_LIST=${2:?--brokers needs a list}; shift ;;
        --rss-cap-mb) RSS_CAP_MB=${2:?--rss-cap-mb needs a value}; shift ;;
        --out) OUT=${2:?--out needs a file}; shift ;;
        --keep) KEEP=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "bench-soak: --budget must be a number of bytes" >&2; exit 2; }
[[ $RSS_CAP_MB =~ ^[0-9]+$ ]] || { echo "bench-soak: --rss-cap-mb must be a number" >&2; exit 2; }
case $MQTTD_BUDGET in on | off) ;; *) usage >&2; exit 2 ;; esac

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-soak: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
MOSQUITTO=$(command -v mosquitto || true)
[ -z "$MOSQUITTO" ] && [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto
if [[ " $BROKER_LIST " == *" mosquitto "* ]] && [ -z "$MOSQUITTO" ]; then
    log "installing mosquitto (Debian package)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi

log "building release binaries"
cargo build --release --locked -p mqttd -p mqttd-bench
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MQTTD=$TARGET_DIR/release/mqttd
BENCH=$TARGET_DIR/release/mqttd-bench

WORK=$(mktemp -d /tmp/bench-soak.XXXXXX)
mkdir -p "$WORK/results" "$WORK/logs" "$WORK/mqttd-data"
BROKER_PID=""
WATCH_PID=""
# Kills broker PID when its VmRSS passes the cap, writing the RSS seen to
# FLAG; ends when the broker does.
watch_rss() { # pid flagfile
    local rss
    while kill -0 "$1" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
        if [ -n "$rss" ] && ((rss > RSS_CAP_MB * 1024)); then
            echo "$rss" >"$2"
            kill -KILL "$1" 2>/dev/null || true
            return
        fi
        sleep 0.5
    done
}
stop_watch() {
    [ -n "$WATCH_PID" ] || return 0
    kill "$WATCH_PID" 2>/dev/null || true
    wait "$WATCH_PID" 2>/dev/null || true
    WATCH_PID=""
}
stop_broker() {
    stop_watch
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
cleanup() {
    stop_broker
    if ((KEEP)); then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1,000 publishers and the observers need descriptors in the bench and in
# the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Below the ephemeral range, so no client connection can hold the port.
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
pick_port MQTTD_HTTP_PORT
pick_port MOSQ_PORT

# --- configs -----------------------------------------------------------------
# mqttd: its defaults (they are what is under test: write timeout, queue
# and QoS 0 bounds, and the budget), memory durability as Mosquitto's
# `persistence false`, warnings only, private control socket and HTTP port.
mqttd_yaml() { # with-budget(0|1)
    cat <<EOF
log:
  level: warn
storage:
  durability: memory
  data_dir: $WORK/mqttd-data
control:
  socket: $WORK/mqttd.sock
http:
  bind: "127.0.0.1:$MQTTD_HTTP_PORT"
EOF
    if (($1)); then
        cat <<EOF
limits:
  max_memory_bytes: $BUDGET
EOF
    fi
}
MQTTD_LABEL="mqttd (budget)"
MQTTD_NOTE=""
mqttd_yaml 1 >"$WORK/mqttd.yaml"
if [[ " $BROKER_LIST " != *" mqttd "* ]]; then
    : # mqttd is not run: nothing to check.
elif [ "$MQTTD_BUDGET" = off ]; then
    mqttd_yaml 0 >"$WORK/mqttd.yaml"
    MQTTD_LABEL="mqttd (no budget)"
    MQTTD_NOTE="mqttd ran without \`limits.max_memory_bytes\` (\`--mqttd-budget off\`)."
elif ! "$MQTTD" --check-config "$WORK/mqttd.yaml" >"$WORK/mqttd-check.log" 2>&1; then
    REASON=$(tail -n 1 "$WORK/mqttd-check.log" | sed "s|$WORK/||g")
    log "this mqttd build refuses limits.max_memory_bytes ($REASON): running it WITHOUT a budget"
    mqttd_yaml 0 >"$WORK/mqttd.yaml"
    "$MQTTD" --check-config "$WORK/mqttd.yaml" >"$WORK/mqttd-check.log" 2>&1 ||
        die "mqttd refuses even the config without a budget: $(tail -n 1 "$WORK/mqttd-check.log")"
    MQTTD_LABEL="mqttd (no budget)"
    MQTTD_NOTE="This mqttd build refused \`limits.max_memory_bytes\` (\`mqttd --check-config\`: $REASON), so it ran **without a memory budget**: these are the figures before the budget."
fi

# Mosquitto: its defaults (max_queued_messages 1000, like mqttd's
# mqtt.max_queued_messages; max_inflight_messages 20) plus the budget;
# nothing on disk.
cat >"$WORK/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
listener $MOSQ_PORT 127.0.0.1
persistence false
memory_limit $BUDGET
log_dest stderr
log_type error
log_type warning
user $(id -un)
EOF

# --- runs --------------------------------------------------------------------
wait_port() { # port
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
NOTES=$WORK/notes.md
: >"$NOTES"
RUNS=()
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
UPTIME_BEFORE=$(uptime | xargs)
for broker in $BROKER_LIST; do
    case $broker in
        mqttd)
            port=$MQTTD_PORT label=$MQTTD_LABEL
            cmd=("$MQTTD" --config "$WORK/mqttd.yaml" --listen "127.0.0.1:$MQTTD_PORT")
            ;;
        mosquitto)
            port=$MOSQ_PORT label="Mosquitto (memory_limit)"
            cmd=("$MOSQUITTO" -c "$WORK/mosquitto.conf")
            ;;
        *) die "unknown broker $broker (mqttd or mosquitto)" ;;
    esac
    blog=$WORK/logs/$broker.log
    "${cmd[@]}" >>"$blog" 2>&1 &
    BROKER_PID=$!
    wait_port "$port" || die "$broker did not start (see $blog; use --keep)"
    capped=$WORK/$broker.capped
    watch_rss "$BROKER_PID" "$capped" &
    WATCH_PID=$!
    log "soak on $broker (pid $BROKER_PID, port $port, $DURATION)"
    echo "$broker $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/loads.txt"
    result=$WORK/results/$broker.json
    # The verdict against the budget only for a broker that was given it.
    budget_args=(--budget-bytes "$BUDGET")
    [ "$label" = "mqttd (no budget)" ] && budget_args=()
    if "$BENCH" -p "$port" --pid "$BROKER_PID" -q -o json soak --duration "$DURATION" \
        --publishers "$PUBLISHERS" --sessions "$SESSIONS" --rate "$RATE" \
        "${budget_args[@]}" >"$result" 2>"$WORK/logs/bench.$broker.log"; then
        RUNS+=(--run "$label=$result")
    else
        echo "- **$broker: the soak failed**: $(tail -n 1 "$WORK/logs/bench.$broker.log")" >>"$NOTES"
    fi
    if [ -s "$capped" ]; then
        echo "- **$broker was killed by the script** at an RSS of $(($(cat "$capped") / 1024)) MiB (cap \`--rss-cap-mb $RSS_CAP_MB\`): figures after that are missing." >>"$NOTES"
    fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        stop_watch
        status=0
        wait "$BROKER_PID" || status=$?
        BROKER_PID=""
        echo "- **$broker exited during the soak** (exit status $status; 137 is SIGKILL, e.g. the OOM killer)." >>"$NOTES"
    elif [ "$broker" = mqttd ]; then
        # What mqttd counted: drops, timeouts, refusals (non-zero only).
        if curl -fsS --max-time 5 "http://127.0.0.1:$MQTTD_HTTP_PORT/metrics" >"$WORK/mqttd.metrics" 2>/dev/null; then
            counted=$(grep -E '^mqttd_[a-z0-9_]*(drop|timeout|limit|refus|exceed|overflow|shed)[a-z0-9_]*(\{[^}]*\})? [1-9]' \
                "$WORK/mqttd.metrics" | sed 's/^/`/; s/ \([0-9.e+]*\)$/` \1/' | paste -sd ';' | sed 's/;/; /g' || true)
            [ -n "$counted" ] && echo "- mqttd's counters after the soak: $counted." >>"$NOTES"
        fi
    fi
    stop_broker
    # The broker's own words, grouped (client ids masked).
    if [ -s "$blog" ]; then
        echo "- $broker's log, most frequent lines (client ids and numbers masked):" >>"$NOTES"
        sed -E 's/\x1b\[[0-9;]*m//g; s/^[0-9]+: //; s/^[0-9TZ:.-]+ +//; s/b[0-9a-f]{8}-[a-z0-9]+/CLIENT/g; s/=[0-9]+/=N/g' "$blog" |
            sort | uniq -c | sort -rn | head -n 5 |
            sed -E 's/^ *([0-9]+) (.*)$/  - \1 × `\2`/' >>"$NOTES"
    fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
UPTIME_AFTER=$(uptime | xargs)
((${#RUNS[@]})) || die "no soak run succeeded; see $WORK (use --keep)"

# --- BENCHMARKS.md -----------------------------------------------------------
MQTTD_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || MQTTD_REV="$MQTTD_REV (with uncommitted changes)"
MOSQ_VERSION=$( ("$MOSQUITTO" -h 2>/dev/null || true) | sed -n '1s/^mosquitto version //p')
SECTION=$WORK/section.md
{
    echo "## Soak (overload)"
    echo
    echo "Written by \`scripts/bench-soak.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'); mqttd $MQTTD_REV,"
    echo "Mosquitto ${MOSQ_VERSION:-unknown}); the other sections come from \`scripts/bench-compare.sh\`."
    echo "Command: \`scripts/bench-soak.sh --duration $DURATION --budget $BUDGET --publishers $PUBLISHERS"
    extra=""
    [ "$MQTTD_BUDGET" = off ] && extra+=" --mqttd-budget off"
    [ "$BROKER_LIST" = "mqttd mosquitto" ] || extra+=" --brokers \"$BROKER_LIST\""
    [ "$RSS_CAP_MB" = 8192 ] || extra+=" --rss-cap-mb $RSS_CAP_MB"
    echo "--sessions $SESSIONS --rate $RATE$extra\`."
    echo
    echo "Each broker, fresh, gets $SESSIONS abandoned persistent sessions (clean_session=0,"
    echo "subscribed at QoS 1 to the two flooded topics, disconnected), then for $DURATION"
    echo "$PUBLISHERS publishers ($((PUBLISHERS / 2)) QoS 0, $((PUBLISHERS - PUBLISHERS / 2)) QoS 1, 64-byte"
    echo "payloads, $([ "$RATE" = 0 ] && echo "flat out" || echo "$RATE msg/s in all")) flood those topics, which a"
    echo "**stuck subscriber** (SO_RCVBUF 4 KiB, keep alive 60 s) subscribed to before it stopped"
    echo "reading; 3 **healthy subscribers** read everything, and a **probe** connects every second"
    echo "(CONNECT to CONNACK; failing after 5 s). The broker's RSS (VmRSS) is sampled every second;"
    echo "\"stuck held\" is whether the broker's end of the stuck subscriber's connection is still"
    echo "ESTABLISHED in the kernel's socket table. Sampling goes on 5 s after the publishers stop."
    echo "The memory budget is $BUDGET bytes ($((BUDGET / 1048576)) MiB) for both."
    echo
    if [ -n "$MQTTD_NOTE" ]; then echo "$MQTTD_NOTE"; echo; fi
    "$BENCH" soak-report "${RUNS[@]}" --every 5
    echo
    echo "- The machine ($(nproc) CPUs, $(free -m | awk '/^Mem:/ { print $2 }') MB) is shared and busy: the bench"
    echo "  (1,000 connections flat out) and the broker compete for its CPUs with other work. Load"
    echo "  average before: $LOAD_BEFORE; after: $LOAD_AFTER; at each start:" \
        "$(awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }' "$WORK/loads.txt")."
    echo "- \`uptime\` before: \`$UPTIME_BEFORE\`; after: \`$UPTIME_AFTER\`."
    cat "$NOTES"
    echo
    echo "mqttd (\`mqttd --config mqttd.yaml --listen 127.0.0.1:PORT\`):"
    echo
    echo '```yaml'
    sed "s|$WORK|WORKDIR|g; s|127.0.0.1:[0-9]*|127.0.0.1:PORT|" "$WORK/mqttd.yaml"
    echo '```'
    echo
    echo "Mosquitto (\`mosquitto -c mosquitto.conf\`):"
    echo
    echo '```'
    sed "s|listener [0-9]*|listener PORT|" "$WORK/mosquitto.conf"
    echo '```'
} >"$SECTION"

# Replace the old soak section (from its heading to the next `## ` heading)
# or append one; every other section stays as it is.
touch "$OUT"
awk -v section="$SECTION" '
    /^## Soak \(overload\)$/ { skipping = 1; while ((getline line < section) > 0) print line; print ""; done = 1; next }
    skipping && /^## / { skipping = 0 }
    !skipping { print }
    END { if (!done) { print ""; while ((getline line < section) > 0) print line } }
' "$OUT" >"$WORK/out.md"
cp "$WORK/out.md" "$OUT"
log "wrote the soak section of $OUT"
sed -n '/^| |/,/^$/p' "$SECTION" >&2
