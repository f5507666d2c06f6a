#!/usr/bin/env bash
# Source this: sets DAGSTER_HOME (default: inside the data folder, so a moved data folder takes its
# Dagster history along) and gives it the project's instance config (run monitoring on) if it has none.
data_dir="${VAE_PIPELINE_DATA_DIR:-$PWD/data}"
export DAGSTER_HOME="${DAGSTER_HOME:-$data_dir/dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp deploy/local/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
