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
# Debian's Chromium and chromedriver for the search page's browser test (tests/retrieval); skipped
# when present, or when not root on Debian (the test then skips itself).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "setup: chromium + chromedriver not installed (needs root and apt-get); the browser test will skip" >&2
    fi
fi
