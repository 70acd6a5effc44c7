#!/usr/bin/env bash
# Tests the mqttd Helm chart without the helm binary or a cluster: lint,
# render with several value sets, strict validation against the Kubernetes
# 1.30 schemas, key properties, and rejection of bad values (test_chart.py).
#
# Makes a virtual environment at helm/.venv (gitignored, ~400 MB) with the
# pinned packages below from PyPI, once; later runs reuse it.
# Environment: PYTHON (python3), MQTTD_BIN (an mqttd binary to run
# --check-config on rendered configs; default target/{release,debug}/mqttd).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
VENV=$HERE/.venv
PYTHON=${PYTHON:-python3}
REQUIREMENTS=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0)

log() { printf 'test-chart: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$(uname -m)" != x86_64 ]; then
    log "SKIPPED: helm-python-sdk ships only an x86_64 Linux wheel; this is $(uname -m)"
    exit 0
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (apt-get install python3 python3-venv)"

make_venv() {
    if ! "$PYTHON" -m venv "$VENV" 2>"$HERE/.venv-error.log"; then
        rm -rf "$VENV"
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            log "python venv unavailable, installing python3-venv with apt-get"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null 2>&1 ||
                { apt-get update -q >/dev/null 2>&1 &&
                  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; } ||
                die "could not install python3-venv"
            "$PYTHON" -m venv "$VENV" || die "could not make a virtual environment at $VENV"
        else
            cat "$HERE/.venv-error.log" >&2
            die "could not make a virtual environment (apt-get install python3-venv)"
        fi
    fi
    rm -f "$HERE/.venv-error.log"
}

# The stamp records what was installed, so a changed pin reinstalls.
STAMP=$VENV/.mqttd-requirements
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
    [ -x "$VENV/bin/python" ] || { log "making $VENV"; make_venv; }
    log "pip install ${REQUIREMENTS[*]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${REQUIREMENTS[@]}" ||
        die "pip install failed (is PyPI reachable?)"
    echo "${REQUIREMENTS[*]}" >"$STAMP"
fi

exec "$VENV/bin/python" "$HERE/test_chart.py" "$@"
