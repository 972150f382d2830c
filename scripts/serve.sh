#!/usr/bin/env bash
# Set up (idempotent) and start the embedding service; arguments go to `uniembed serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/uniembed serve "$@"
