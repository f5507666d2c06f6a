#!/usr/bin/env bash
# A sweep on one machine, no servers: add the sweep file's variants as partitions of this instance,
# materialize what every variant shares (raw data, tensor store, judge) once, then train, evaluate
# and gate each variant (one `dg launch` run per variant, its steps in the run's process), and end
# with one sweep_comparison over every variant evaluated.
#   bash scripts/sweep.sh                       # sweeps/default.yaml (or $VAE_PIPELINE_SWEEP)
#   bash scripts/sweep.sh sweeps/mine.yaml      # another sweep file
#   bash scripts/sweep.sh sweeps/mine.yaml -c run_config.yaml   # extra arguments go to every dg launch
#   bash scripts/sweep.sh sweeps/mine.yaml -c deploy/local/multiprocess.yaml   # one process per step
# Steps run in-process by default: on a small machine that is twice as fast as one process per
# step (benchmarks/bench_sweep_executors.py, README "Executors"), which pays only with long steps and free cores.
# Each run's config applies to every variant (epochs, batch size, evaluation); the partition key
# sets latent size, beta and likelihood. The script stops at the first variant whose run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
sweep_file="${1:-${VAE_PIPELINE_SWEEP:-sweeps/default.yaml}}"
shift || true
[ -x .venv/bin/dg ] || bash scripts/setup.sh   # installs on first use (scripts/setup.sh updates an existing .venv)
source .venv/bin/activate
source scripts/instance.sh
keys="$(python -m vae_pipeline.variants_cli sweep "$sweep_file")"   # checked before anything runs
python -m vae_pipeline.variants_cli add --sweep "$sweep_file"
# vae_pipeline_job's assets, split: those every variant shares, and those of one variant (partitioned).
shared=mnist_raw,mnist_tensors,digit_classifier
per_variant=vae_model,autoencoder_baseline,latent_embeddings,prior_samples,reconstruction_report,latent_evaluation
per_variant+=,version_comparison,champion_comparison,champion_model
echo "== shared: raw data, tensor store, judge"
dg launch --assets "$shared" "$@"
for key in $keys; do
  echo "== variant $key"
  dg launch --assets "$per_variant" --partition "$key" "$@"
done
echo "== sweep comparison"
dg launch --assets sweep_comparison "$@"
echo "== every variant done: ${VAE_PIPELINE_DATA_DIR:-data}/sweeps/vae-<dataset>/comparison.parquet"
