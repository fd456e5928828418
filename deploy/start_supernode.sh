#!/usr/bin/env bash
# Start one organisation's SuperNode, in the foreground.
#
#   CERTS_DIR=deploy/certs NODE_KEY=deploy/keys/node-1 \
#     deploy/start_supernode.sh <client-id> <data-root> <tasks> <state-dir>
#
# client-id  stable integer id of this organisation (names its metrics; keep it across runs)
# data-root  this organisation's data; the ClientApp reads only these files, only these tasks
# tasks      comma-separated task names it trains on: generation, translation, summarization
# state-dir  private directory: Sigma_k (personal.safetensors) and the personalised adapter
#
# Environment: NODE_KEY (private key from gen_node_keys.sh, required; its .pub must be
# registered), CERTS_DIR or ROOT_CERT (the CA that signed the SuperLink's certificate),
# SUPERLINK_ADDRESS (the SuperLink's public Fleet address, served by start_proxy.sh;
# default 127.0.0.1:9092), NODE_PORT (this SuperNode's local Runtime API
# port, unique per machine, loopback only; default 9094), NODE_FLWR_HOME (this SuperNode's Flower
# home, where it unpacks apps; default <state-dir>/flwr, so organisations share nothing).
set -euo pipefail
source "$(dirname "$0")/env.sh"

[ $# -eq 4 ] || { echo "usage: start_supernode.sh <client-id> <data-root> <tasks> <state-dir>" >&2; exit 2; }
client_id="$1"
data_root="$(realpath -m "$2")"  # the ClientApp runs elsewhere: paths must be absolute
tasks="$3"
state_dir="$(realpath -m "$4")"
key="${NODE_KEY:?set NODE_KEY to this node\'s private key (gen_node_keys.sh)}"
root_cert="${ROOT_CERT:-${CERTS_DIR:?set CERTS_DIR or ROOT_CERT}/ca.crt}"
[ -d "$data_root" ] || { echo "[start_supernode] no data root $data_root" >&2; exit 2; }

(umask 077 && mkdir -p "$state_dir")  # Sigma_k is private: owner-only directory
export FLWR_HOME="${NODE_FLWR_HOME:-$state_dir/flwr}"

# Read by client/data.py (client_identity). Quoted values are TOML strings.
node_config="client-id=$client_id data-root='$data_root' tasks='$tasks' state-dir='$state_dir'"
echo "[start_supernode] client $client_id -> https://$SUPERLINK_ADDRESS, key $key," \
  "tasks $tasks, state $state_dir"
exec flower-supernode \
  --superlink "$SUPERLINK_ADDRESS" \
  --root-certificates "$root_cert" \
  --auth-supernode-private-key "$key" \
  --node-config "$node_config" \
  --host 127.0.0.1 --port "${NODE_PORT:-9094}"
