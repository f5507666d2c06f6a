"""The whole-pipeline job, for the CLI, the launchpad and backfills (automation needs no job: defs/automation.py)."""

import dagster as dg

# Everything, ingest included, so that new raw data reaches the model. Unchanged data, code and
# config reuse the trained model instead of retraining (see defs/assets/training.py).
vae_pipeline_job = dg.define_asset_job(
    "vae_pipeline_job",
    selection=dg.AssetSelection.all(),
    description="Ingest, train (or reuse), embed, sample, report, evaluate and promote.",
)
