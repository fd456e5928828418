#!/usr/bin/env bash
# Start the SuperLink with TLS and SuperNode authentication, in the foreground.
#
#   CERTS_DIR=deploy/certs deploy/start_superlink.sh
#
# Environment: CERTS_DIR (from gen_certs.sh, required), SUPERLINK_HOST (default 127.0.0.1;
# only loopback is accepted without ALLOW_PUBLIC_CONTROL_API=1: remote SuperNodes come in
# through start_proxy.sh), SUPERLINK_PORT (default 9093), SUPERLINK_DB (a file keeps registered
# SuperNodes and runs across restarts; default in memory), FLWR_HOME (where the SuperLink unpacks apps; default ~/.flwr).
#
# In Flower 1.41 a single HTTPS port serves all three SuperLink APIs: Fleet (SuperNodes),
# Control (`flwr run`, `flwr supernode register`) and Runtime (the ServerApp). The ServerApp runs
# in a subprocess started by the SuperLink's own flower-superexec. Anyone who reaches the
# Control API can register their own SuperNode key and list or start runs, so the port is
# bound to loopback and only the Fleet routes are published, by start_proxy.sh.
set -euo pipefail
source "$(dirname "$0")/env.sh"

case "$SUPERLINK_HOST" in
  127.* | ::1 | localhost) ;;
  *)
    if [ "${ALLOW_PUBLIC_CONTROL_API:-0}" != 1 ]; then
      echo "[start_superlink] refusing SUPERLINK_HOST=$SUPERLINK_HOST: it would publish the" \
        "Control API (anyone could register a SuperNode or list runs). Keep the SuperLink on" \
        "loopback and publish the Fleet API with deploy/start_proxy.sh, or set" \
        "ALLOW_PUBLIC_CONTROL_API=1 behind your own access control." >&2
      exit 2
    fi
    ;;
esac

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
