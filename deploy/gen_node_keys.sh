#!/usr/bin/env bash
# Generate SuperNode authentication key pairs: ECDSA on NIST P-384 in OpenSSH format, which is
# what Flower reads (`flower-supernode --auth-supernode-private-key`, `flwr supernode register`).
#
#   deploy/gen_node_keys.sh <dir> <n> [first-id]
#
# Writes <dir>/node-<id> (private, stays on that organisation's machine) and <dir>/node-<id>.pub
# (sent to the SuperLink operator, who puts it on the allow-list with register_nodes.sh) for
# id = first-id .. first-id+n-1 (first-id defaults to 1). Existing keys are kept, so re-running
# never changes a node's identity.
set -euo pipefail

dir="${1:?usage: gen_node_keys.sh <dir> <n> [first-id]}"
n="${2:?usage: gen_node_keys.sh <dir> <n> [first-id]}"
first="${3:-1}"
mkdir -p "$dir"

for ((id = first; id < first + n; id++)); do
  key="$dir/node-$id"
  if [ -f "$key" ]; then
    echo "[gen_node_keys] $key exists, kept"
    continue
  fi
  echo "[gen_node_keys] $key(.pub)"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "fedcolora-node-$id" -f "$key"
done
