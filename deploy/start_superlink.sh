#!/usr/bin/env bash
# Start the SuperLink with TLS and SuperNode authentication, in the foreground.
#
#   CERTS_DIR=deploy/certs deploy/start_superlink.sh
#
# Environment: CERTS_DIR (from gen_certs.sh, required), SUPERLINK_HOST (default 127.0.0.1:
# loopback only; use the machine's address to accept remote SuperNodes), SUPERLINK_PORT
# (default 9093), SUPERLINK_DB (a file keeps registered SuperNodes and runs across restarts;
# default in memory), FLWR_HOME (where the SuperLink unpacks apps; default ~/.flwr).
#
# In Flower 1.41 a single HTTPS port serves all three SuperLink APIs: Fleet (SuperNodes),
# Control (`flwr run`, `flwr supernode register`) and Runtime (the ServerApp). The ServerApp runs
# in a subprocess started by the SuperLink's own flower-superexec.
set -euo pipefail
source "$(dirname "$0")/env.sh"

certs="${CERTS_DIR:?set CERTS_DIR to the directory written by gen_certs.sh}"
args=(
  --ssl-ca-certfile "$certs/ca.crt"
  --ssl-certfile "$certs/server.pem"
  --ssl-keyfile "$certs/server.key"
  # Only SuperNodes whose public key was registered (register_nodes.sh) may connect.
  --enable-supernode-auth
  --host "$SUPERLINK_HOST" --port "$SUPERLINK_PORT"
  # The environment is installed by scripts/setup.sh; never `uv sync` a FAB's dependencies.
  --disable-runtime-dependency-installation
)
[ -n "${SUPERLINK_DB:-}" ] && args+=(--database "$SUPERLINK_DB")

echo "[start_superlink] flower-superlink on https://$SUPERLINK_HOST:$SUPERLINK_PORT" \
  "(TLS from $certs, SuperNode auth on, database ${SUPERLINK_DB:-in memory})"
exec flower-superlink "${args[@]}"
