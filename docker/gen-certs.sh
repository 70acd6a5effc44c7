#!/usr/bin/env bash
# Makes a throwaway certificate authority and the certificates mqttd's TLS
# listeners need, with openssl:
#
#   ca.crt, ca.key          the CA (EC P-256, 10 years)
#   tls.crt, tls.key        server certificate, SANs localhost, 127.0.0.1,
#                           ::1, mqttd (the compose service name) and any in
#                           SERVER_SANS; these three file names are the ones
#                           of a Kubernetes TLS Secret
#   client.crt, client.key  client certificate (CN $CLIENT_CN) for
#                           mutual TLS
#
# Usage: gen-certs.sh [OUT_DIR]    (default: certs/ beside this script)
# Environment: SERVER_SANS (extra, e.g. "DNS:broker.example,IP:10.0.0.5"),
# CLIENT_CN (mqttd-client), DAYS (825, server and client), FORCE=1 to
# replace existing files (otherwise an existing set is kept).
#
# The server key must be readable by the container's user (uid 10001): run
# as root, the script gives it to that uid with mode 0600; otherwise it
# leaves it world-readable (0644). These are test certificates: use your own
# PKI in production.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/certs}
SERVER_SANS=${SERVER_SANS:-}
CLIENT_CN=${CLIENT_CN:-mqttd-client}
DAYS=${DAYS:-825}
FORCE=${FORCE:-0}
CONTAINER_UID=10001

log() { printf 'gen-certs: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v openssl >/dev/null 2>&1 || die "openssl is not installed (apt-get install openssl)"

if [ "$FORCE" != 1 ] && [ -s "$OUT/ca.crt" ] && [ -s "$OUT/tls.crt" ] && [ -s "$OUT/client.crt" ]; then
    log "certificates already in $OUT, kept (FORCE=1 replaces them)"
    exit 0
fi

mkdir -p "$OUT"
chmod 0755 "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mqttd-certs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# CA.
new_key "$WORK/ca.key"
cat >"$WORK/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
openssl req -new -x509 -key "$WORK/ca.key" -sha256 -days 3650 -subj "/O=mqttd/CN=mqttd test CA" \
    -config "$WORK/ca.cnf" -extensions v3_ca -out "$WORK/ca.crt"

# sign NAME SUBJECT EXTFILE: a key and a certificate signed by the CA.
sign() {
    local name=$1 subject=$2 ext=$3
    new_key "$WORK/$name.key"
    openssl req -new -key "$WORK/$name.key" -subj "$subject" -out "$WORK/$name.csr"
    openssl x509 -req -in "$WORK/$name.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
        -CAcreateserial -days "$DAYS" -sha256 -extfile "$ext" -out "$WORK/$name.crt" 2>/dev/null
}

SANS="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:mqttd"
[ -n "$SERVER_SANS" ] && SANS="$SANS,$SERVER_SANS"
cat >"$WORK/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $SANS
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
sign server "/O=mqttd/CN=mqttd" "$WORK/server.ext"

cat >"$WORK/client.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
sign client "/O=mqttd/CN=$CLIENT_CN" "$WORK/client.ext"

openssl verify -CAfile "$WORK/ca.crt" "$WORK/server.crt" "$WORK/client.crt" >/dev/null ||
    die "the generated certificates do not verify against the CA"

install -m 0644 "$WORK/ca.crt" "$OUT/ca.crt"
install -m 0600 "$WORK/ca.key" "$OUT/ca.key"
install -m 0644 "$WORK/server.crt" "$OUT/tls.crt"
install -m 0644 "$WORK/client.crt" "$OUT/client.crt"
install -m 0600 "$WORK/client.key" "$OUT/client.key"
if [ "$(id -u)" -eq 0 ]; then
    install -m 0600 -o "$CONTAINER_UID" -g "$CONTAINER_UID" "$WORK/server.key" "$OUT/tls.key"
else
    install -m 0644 "$WORK/server.key" "$OUT/tls.key"
    log "note: tls.key is world-readable so that the container's uid $CONTAINER_UID can read it"
fi
log "wrote ca.crt tls.crt tls.key client.crt client.key to $OUT (server SANs: $SANS)"
