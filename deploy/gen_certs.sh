#!/usr/bin/env bash
# Generate the TLS material for a SuperLink on this machine: a private CA and a server
# certificate signed by it, valid for localhost / 127.0.0.1 / ::1 (plus any extra names given in
# SERVER_SANS, e.g. SERVER_SANS="DNS:link.example.org,IP:10.0.0.5" for a real host).
#
#   deploy/gen_certs.sh <dir>
#
# Writes <dir>/ca.crt (give this to every SuperNode and to the `flwr` CLI), <dir>/ca.key (keep
# offline), <dir>/server.pem and <dir>/server.key (SuperLink only). Clients verify the server
# against ca.crt and the SAN list; there are no client certificates (SuperNodes prove who they
# are with their auth key, see gen_node_keys.sh).
set -euo pipefail

dir="${1:?usage: gen_certs.sh <dir>}"
days="${CERT_DAYS:-365}"
sans="DNS:localhost,IP:127.0.0.1,IP:::1${SERVER_SANS:+,$SERVER_SANS}"
mkdir -p "$dir"
umask 077  # private keys readable by their owner only
# ECDSA P-384 keys: as strong as RSA-7680 and generated in milliseconds.

echo "[gen_certs] CA -> $dir/ca.crt"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$dir/ca.key"
openssl req -x509 -new -key "$dir/ca.key" -sha256 -days "$days" \
  -subj "/CN=fedcolora-ca" -out "$dir/ca.crt"

echo "[gen_certs] server certificate for $sans -> $dir/server.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$dir/server.key"
openssl req -new -key "$dir/server.key" -subj "/CN=localhost" -out "$dir/server.csr"
# The SANs are what TLS clients check; CN alone is ignored by modern verifiers.
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$sans" > "$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
  -CAcreateserial -days "$days" -sha256 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
rm -f "$dir/server.csr" "$dir/server.ext"
chmod 644 "$dir/ca.crt" "$dir/server.pem"

openssl verify -CAfile "$dir/ca.crt" "$dir/server.pem"
