#!/usr/bin/env bash
# Install, then materialize every asset on the default config (outputs under data/).
# Extra arguments go to `dg launch`, e.g. `bash scripts/pipeline.sh --config-json '{...}'`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# dg warns unless the project's .venv is the active environment; this also puts its dg on PATH.
source .venv/bin/activate
source scripts/instance.sh
# In-process, in this shell's instance ($DAGSTER_HOME); blocks until the run ends and exits non-zero
# if any step failed. The job selects every asset that can be materialized; `--assets '*'` selects the
# same, but Dagster's selection parser prints a BetaWarning for it.
exec dg launch --job vae_pipeline_job "$@"
