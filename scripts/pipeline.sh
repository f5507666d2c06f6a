#!/usr/bin/env bash
# Install, then materialize every asset on the default config (outputs under data/): the default
# variant's model (DEFAULT_VARIANT in vae_pipeline/defs/variants.py, z20-b1-bern), the shared data
# and judge, and the sweep table. Extra arguments go to `dg launch`, e.g.
# `bash scripts/pipeline.sh --config-json '{...}'`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# dg warns unless the project's .venv is the active environment; this also puts its dg on PATH.
source .venv/bin/activate
source scripts/instance.sh
# The model assets are partitioned by variant, and a run's partition must exist in the instance
# first: add the default variant (nothing if it is there), then launch that partition.
variant="$(python -c 'from vae_pipeline.defs.variants import DEFAULT_VARIANT; print(DEFAULT_VARIANT.key)')"
python -m vae_pipeline.variants_cli add "$variant"
# In-process, in this shell's instance ($DAGSTER_HOME); blocks until the run ends and exits non-zero
# if any step failed. The job selects every asset that can be materialized; `--assets '*'` selects the
# same, but Dagster's selection parser prints a BetaWarning for it. Another variant: add it with
# `python -m vae_pipeline.variants_cli add KEY` and pass `--partition KEY` (the last --partition wins).
exec dg launch --job vae_pipeline_job --partition "$variant" "$@"
