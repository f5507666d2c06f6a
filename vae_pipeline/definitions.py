"""The code location: every asset, check, job and schedule of the pipeline."""

from __future__ import annotations

import dagster as dg

from vae_pipeline.defs.assets import ingest
from vae_pipeline.defs.checks import DATA_CHECKS
from vae_pipeline.defs.resources import default_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest]),
    asset_checks=DATA_CHECKS,
    resources=default_resources(),
)
