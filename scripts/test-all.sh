#!/usr/bin/env bash
# The whole test suite, runnable on a fresh Debian machine: installs what
# it needs (apt packages, Python venvs, local Docker base images), then
# runs format and lint checks, every Rust test, the paho-mqtt interop
# test, the fuzz target build, the Helm chart test, the Docker image test
# and the Debian package test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v mosquitto_sub >/dev/null || need_apt+=(mosquitto-clients)
command -v mosquitto >/dev/null || need_apt+=(mosquitto)
command -v openssl >/dev/null || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    step "installing ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "paho-mqtt (Python) against mqttd: MQTT 5.0 and 3.1.1 behaviour"
MQTTD_BIN=target/debug/mqttd scripts/paho-tests.sh

if [ -d fuzz ]; then
    step "fuzz targets build"
    (cd fuzz && cargo check --bins)
fi

step "helm chart: lint, render, validate against Kubernetes schemas"
helm/test-chart.sh

# The image test builds the runtime image from binaries built here (the
# Dockerfile's `prebuilt` target, same runtime stage as the full build) to
# keep the suite's time reasonable; MQTTD_IMAGE_BINARIES=build runs the full
# multi-stage build from vendored sources instead.
step "docker image: build, run, MQTT/MQTTS from the host, mqttctl inside"
MQTTD_IMAGE_BINARIES=${MQTTD_IMAGE_BINARIES:-host} docker/test-image.sh

# Reuses the release binaries built for the image test (same target dir);
# skipped, with a message, where no Docker engine runs.
step "debian package: build, install with systemd in a Debian container, mqttctl as group mqttd, docs/security.md, purge"
packaging/test-deb.sh

step "all tests passed"
