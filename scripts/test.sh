#!/usr/bin/env bash
# The test suite (README's test command). Tests marked `slow` load the real offline models.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# no path given: pytest runs testpaths from pyproject.toml (tests/)
python -m pytest -q -p no:cacheprovider "$@"
