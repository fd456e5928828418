# Sourced by the deploy/ scripts: the repository, its virtual environment and offline defaults.
# Flower's components start further Flower executables (flower-superexec, flwr-serverapp,
# flwr-clientapp) by name, so the venv's bin/ must come first on PATH.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
export PATH="$VENV/bin:$PATH"
# No telemetry and no update check: organisations' machines may have no internet access.
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
# One HTTPS port on the SuperLink serves Flower 1.41's Fleet, Control and Runtime APIs. It
# listens on loopback only: the Control API (register keys, start and list runs) must not be
# reachable by other organisations. They reach the Fleet API through the proxy
# (start_proxy.sh) on PUBLIC_HOST:PUBLIC_PORT.
SUPERLINK_HOST="${SUPERLINK_HOST:-127.0.0.1}"
SUPERLINK_PORT="${SUPERLINK_PORT:-9093}"
PUBLIC_HOST="${PUBLIC_HOST:-127.0.0.1}"
PUBLIC_PORT="${PUBLIC_PORT:-9092}"
# How SuperNodes reach the SuperLink: the proxy's public address, a name or IP in the server
# certificate's SANs (differs from PUBLIC_HOST when the proxy listens on 0.0.0.0).
SUPERLINK_ADDRESS="${SUPERLINK_ADDRESS:-127.0.0.1:$PUBLIC_PORT}"
# How the operator's `flwr` CLI reaches the Control API: loopback, on the SuperLink's machine.
CONTROL_ADDRESS="${CONTROL_ADDRESS:-127.0.0.1:$SUPERLINK_PORT}"
CONNECTION="${CONNECTION:-fedcolora-tls}"

# write_connection <ca.crt>: add or replace [superlink.$CONNECTION] (the Control API on
# CONTROL_ADDRESS) in $FLWR_HOME/config.toml, the connection `flwr run` and
# `flwr supernode register` use. Other connections are kept.
# FLWR_HOME defaults to the repository's .flwr, as for `make run`.
write_connection() {
  local ca
  ca="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"  # Flower requires an absolute path
  : "${FLWR_HOME:=$REPO/.flwr}"
  export FLWR_HOME
  mkdir -p "$FLWR_HOME"
  echo "[deploy] connection '$CONNECTION' -> https://$CONTROL_ADDRESS in $FLWR_HOME/config.toml"
  "$VENV/bin/python" - "$FLWR_HOME/config.toml" "$CONNECTION" "$CONTROL_ADDRESS" "$ca" <<'PY'
import os
import sys
from pathlib import Path

import tomli
import tomli_w

path, name, address, ca = Path(sys.argv[1]), *sys.argv[2:]
config = tomli.loads(path.read_text()) if path.exists() else {}
links = config.setdefault("superlink", {})
links[name] = {"address": address, "root-certificates": ca, "insecure": False}
path.with_suffix(".tmp").write_text(tomli_w.dumps(config))
os.replace(path.with_suffix(".tmp"), path)  # atomic: a concurrent `flwr` never reads half a file
PY
}
