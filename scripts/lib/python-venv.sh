# Sourced by test scripts that need Python packages from PyPI.
#
# ensure_venv VENV PACKAGE==VERSION...
#   Makes a virtual environment at VENV (installing Debian's python3-venv
#   when running as root and the venv module is missing) and installs the
#   pinned packages, once: a stamp file records what was installed, so a
#   changed pin reinstalls and an unchanged one costs nothing.
#   Uses $PYTHON (default python3). Prints progress to stderr; exits 1 on
#   failure.

ensure_venv() {
    local venv=$1
    shift
    local python=${PYTHON:-python3} stamp=$venv/.mqttd-requirements
    venv_die() { printf 'python-venv: error: %s\n' "$*" >&2; exit 1; }
    command -v "$python" >/dev/null 2>&1 ||
        venv_die "$python not found (apt-get install python3 python3-venv)"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$*" ]; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ]; then
        printf 'python-venv: making %s\n' "$venv" >&2
        local err
        if ! err=$("$python" -m venv "$venv" 2>&1); then
            rm -rf "$venv"
            if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
                printf 'python-venv: venv module unavailable, installing python3-venv\n' >&2
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null 2>&1 ||
                    { apt-get update -q >/dev/null 2>&1 &&
                      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; } ||
                    venv_die "could not install python3-venv"
                "$python" -m venv "$venv" || venv_die "could not make a virtual environment at $venv"
            else
                printf '%s\n' "$err" >&2
                venv_die "could not make a virtual environment (apt-get install python3-venv)"
            fi
        fi
    fi
    printf 'python-venv: pip install %s\n' "$*" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" ||
        venv_die "pip install failed (is PyPI reachable?)"
    echo "$*" >"$stamp"
}
