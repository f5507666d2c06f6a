"""The code location: every asset, check, job and schedule of the pipeline."""

import dagster as dg

from vae_pipeline.defs.assets import evaluation, ingest, outputs, training
from vae_pipeline.defs.checks import DATA_CHECKS
from vae_pipeline.defs.jobs import nightly_retrain, vae_pipeline_job
from vae_pipeline.defs.resources import default_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest, training, outputs, evaluation]),
    asset_checks=[*DATA_CHECKS, *evaluation.GATES],
    jobs=[vae_pipeline_job],
    schedules=[nightly_retrain],
    resources=default_resources(),
    # One process per run: on a 2-core machine a process per step costs more (imports) than it buys.
    executor=dg.in_process_executor,
)
