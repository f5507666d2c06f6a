#!/usr/bin/env bash
# Install, then materialize every asset on the default config (outputs under data/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/instance.sh
exec .venv/bin/dagster asset materialize -m vae_pipeline.definitions --select '*' "$@"
