#!/usr/bin/env bash
# The full-size jina-embeddings-v4 on one GPU (random weights, no download): one table of tokens/s,
# MFU, padded vs packed batches, peak memory, the server at c=64 vs the library, a training step.
# About 6 minutes on one H200. Needs torch with CUDA, transformers and uniembed's dependencies;
# run from a checkout (src/ goes on PYTHONPATH). `benchmarks/gpu.sh --smoke` checks it on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && python=.venv/bin/python
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec "$python" benchmarks/gpu.py "$@"
