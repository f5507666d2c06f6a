#!/usr/bin/env bash
# Source this: sets DAGSTER_HOME (default: inside the data folder, so a moved data folder takes its
# Dagster history along) and gives it the project's instance config (run monitoring on) if it has none.
# A remote data folder (s3://...) cannot hold Dagster's sqlite files: DAGSTER_HOME is then ./dagster_home.
data_dir="${VAE_PIPELINE_DATA_DIR:-$PWD/data}"
case "$data_dir" in
  *://*) default_home="$PWD/dagster_home" ;;
  *) default_home="$data_dir/dagster_home" ;;
esac
export DAGSTER_HOME="${DAGSTER_HOME:-$default_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp deploy/local/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
