#!/usr/bin/env bash
# Submit the fedcolora app to the secured SuperLink and stream its logs until it finishes.
#
#   CERTS_DIR=deploy/certs deploy/run.sh [key=value ...]
#   e.g. deploy/run.sh "num-server-rounds=5" "run-name='fed-5'" "strategy.min-train-nodes=3" \
#     "strategy.min-available-nodes=3"   # must be >= min-train-nodes
#
# Writes the connection [superlink.$CONNECTION] (the loopback Control API at CONTROL_ADDRESS,
# root certificate $CERTS_DIR/ca.crt) into $FLWR_HOME/config.toml (default: the repository's
# .flwr, as `make run`), then runs `flwr run . $CONNECTION --stream`. Each argument is a
# key=value run-config override; output-dir defaults to the repository's runs/ (a path on the
# SuperLink's machine).
# Exits non-zero unless the run finished with status completed.
set -euo pipefail
source "$(dirname "$0")/env.sh"

write_connection "${CERTS_DIR:?set CERTS_DIR to the directory written by gen_certs.sh}/ca.crt"
cd "$REPO"  # `flwr run .` packages this directory as the app (FAB)

# All overrides go in ONE --run-config string: Flower 1.41 merges separate --run-config flags
# shallowly, so `-c train.a=1 -c train.b=2` would silently drop train.a.
overrides=(--run-config "output-dir='$REPO/runs'")
[ $# -eq 0 ] || overrides+=(--run-config "$*")
echo "[run] flwr run . $CONNECTION --stream ${overrides[*]@Q}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
flwr run . "$CONNECTION" --stream "${overrides[@]}" 2>&1 | tee "$log"

# `--stream` returns when the run ends, with exit code 0 either way: ask the SuperLink.
run_id="$(sed -n 's/.*Successfully started run \([0-9]*\).*/\1/p' "$log" | head -n 1)"
[ -n "$run_id" ] || { echo "[run] the run was not started" >&2; exit 1; }
status="$(flwr ls "$CONNECTION" --run-id "$run_id" --format json \
  | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["status"])')"
echo "[run] run $run_id: $status"
[ "$status" = "finished:completed" ]
