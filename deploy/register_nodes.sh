#!/usr/bin/env bash
# Put SuperNode public keys on the SuperLink's allow-list.
#
#   CERTS_DIR=deploy/certs deploy/register_nodes.sh deploy/keys/node-1.pub [more.pub ...]
#
# Flower 1.41 keeps the allow-list in the SuperLink's database, filled through the Control API
# with `flwr supernode register <key.pub> <connection>`; a SuperNode whose key is not registered
# is refused when it tries to activate. Registration works while the SuperLink runs; with an
# in-memory database (no SUPERLINK_DB) it must be repeated after every SuperLink restart.
# Remove a node with `flwr supernode unregister <node-id> <connection>`, list them with
# `flwr supernode list <connection>`.
set -euo pipefail
source "$(dirname "$0")/env.sh"

[ $# -ge 1 ] || { echo "usage: register_nodes.sh <key.pub> [...]" >&2; exit 2; }
write_connection "${CERTS_DIR:?set CERTS_DIR to the directory written by gen_certs.sh}/ca.crt"
for pub in "$@"; do
  echo "[register_nodes] $pub"
  flwr supernode register "$pub" "$CONNECTION" --name "$(basename "$pub" .pub)"
done
