"""The code location: every asset, check, job and sensor of the pipeline."""

import dagster as dg
import torch

from vae_pipeline.defs.assets import comparison, evaluation, ingest, judge, outputs, promotion, sweep, training
from vae_pipeline.defs.automation import automation_sensor
from vae_pipeline.defs.checks import DATA_CHECKS
from vae_pipeline.defs.jobs import vae_pipeline_job
from vae_pipeline.defs.raw_files import RAW_FILES_ASSET, observe_raw_files
from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.sensors import end_mlflow_runs_of_failed_runs
from vae_pipeline.defs.validation import checked_executor
from vae_pipeline.defs.variants import sweep_variants

# Flush denormal floats to zero: the logits of MNIST's always-black border pixels drift until
# Adam's squared gradients are denormal, which slows CPU training by 15-20% (measured in
# benchmarks/bench_training.py). It only reaches every thread if set before torch starts its
# thread pool, so it is set when the code location loads, not inside fit().
torch.set_flush_denormal(True)

defs = dg.Definitions(
    assets=[RAW_FILES_ASSET, *dg.load_assets_from_modules([ingest, training, judge, outputs, evaluation, comparison, promotion, sweep])],
    asset_checks=[*DATA_CHECKS, *promotion.GATES],
    jobs=[vae_pipeline_job],
    # No schedule: the raw folder is observed and assets update on new data (defs/automation.py).
    sensors=[observe_raw_files, sweep_variants, automation_sensor, end_mlflow_runs_of_failed_runs],
    resources=default_resources(),
    # In-process by default, multiprocess or Celery through the run config; every asset's config is
    # checked before the first step under each (defs/validation.py).
    executor=checked_executor,
)
