#!/usr/bin/env bash
# Install, then materialize every asset on the default config (outputs under data/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/data/dagster_home}"
mkdir -p "$DAGSTER_HOME"
exec .venv/bin/dagster asset materialize -m vae_pipeline.definitions --select '*' "$@"
