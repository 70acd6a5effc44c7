#!/usr/bin/env bash
# MQTT 5.0 and 3.1.1 behaviour driven by paho-mqtt (Python), an independent
# client, against the real mqttd binary: broker/tests/paho/interop.py.
#
# Makes a virtual environment at target/paho-venv with the pinned paho-mqtt
# from PyPI, once. Environment: MQTTD_BIN (default target/debug/mqttd, as
# built by `cargo test`; else target/release/mqttd).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${MQTTD_BIN:-}
if [ -z "$BIN" ]; then
    for b in target/debug/mqttd target/release/mqttd; do
        [ -x "$b" ] && { BIN=$b; break; }
    done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || { echo "paho-tests: no mqttd binary (run cargo build first or set MQTTD_BIN)" >&2; exit 1; }

. scripts/lib/python-venv.sh
ensure_venv target/paho-venv paho-mqtt==2.2.0
exec timeout 300 target/paho-venv/bin/python broker/tests/paho/interop.py "$BIN"
