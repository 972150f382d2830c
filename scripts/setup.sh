#!/usr/bin/env bash
# Create .venv and install uniembed with its test dependencies.
# torch 2.13.0 goes in first (the CPU wheel from /opt/wheels where it exists) so that the
# `torch>=2.4` requirement is already met and no multi-GB CUDA build is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
.venv/bin/python -m pip install -q "${find_links[@]}" "torch==2.13.0"
.venv/bin/python -m pip install -q "${find_links[@]}" -e '.[dev]'
