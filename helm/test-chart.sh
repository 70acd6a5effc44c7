#!/usr/bin/env bash
# Tests the mqttd Helm chart without the helm binary or a cluster: lint,
# render with several value sets, strict validation against the Kubernetes
# 1.30 schemas, key properties, and rejection of bad values (test_chart.py).
#
# Makes a virtual environment at helm/.venv (gitignored, ~400 MB) with the
# pinned packages below from PyPI, once; later runs reuse it.
# Environment: PYTHON (python3), MQTTD_BIN (an mqttd binary to run
# --check-config on rendered configs; default {release,debug}/mqttd under
# $CARGO_TARGET_DIR or target/).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VENV=$HERE/.venv
PYTHON=${PYTHON:-python3}
REQUIREMENTS=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0)

log() { printf 'test-chart: %s\n' "$*" >&2; }

if [ "$(uname -m)" != x86_64 ]; then
    log "SKIPPED: helm-python-sdk ships only an x86_64 Linux wheel; this is $(uname -m)"
    exit 0
fi
# shellcheck source=../scripts/lib/python-venv.sh
. "$HERE/../scripts/lib/python-venv.sh"
ensure_venv "$VENV" "${REQUIREMENTS[@]}"

exec "$VENV/bin/python" "$HERE/test_chart.py" "$@"
