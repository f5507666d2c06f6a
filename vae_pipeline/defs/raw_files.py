"""The raw folder as an external asset, watched by a sensor: a new drop of files is a new data version.

`mnist_raw_files` stands for the four IDX files in the watched folder ($VAE_PIPELINE_MNIST_DIR,
else data/raw/MNIST/raw); something outside the pipeline (a user, a sync job) updates them. The
sensor looks at the files' sizes and modification times every minute, hashes them (md5, about
0.2 s for the official set) only when those moved, and reports a new version of the external
asset (a runless materialization whose data version is the md5s) only when the md5s differ from
the last reported ones. An unchanged folder leaves no event and starts no run; `mnist_raw` and
everything below it update through their automation conditions (defs/automation.py).

Dagster's `observable_source_asset` would say the same with an observation, but it is a beta API
in Dagster 1.13 (a BetaWarning on every load) and its observations need a run per look; an
external AssetSpec with events reported by a sensor uses stable APIs only.
"""

import json
import os
from pathlib import Path

import dagster as dg

from vae_pipeline.core import raw_source
from vae_pipeline.defs.automation import default_sensor_status
from vae_pipeline.defs.resources import MNIST_DIR_ENV, PipelineStorage

RAW_FILES_ASSET = dg.AssetSpec(
    "mnist_raw_files",
    group_name="ingest",
    description="The raw IDX files in the watched folder ($VAE_PIPELINE_MNIST_DIR or data/raw/MNIST/raw); their md5s are its data version.",
)
# The event tag Dagster reads an asset's data version from (events of external assets carry it here).
DATA_VERSION_TAG = "dagster/data_version"


def watched_raw_dir(storage: PipelineStorage) -> Path:
    """The folder automation watches for new raw files: $VAE_PIPELINE_MNIST_DIR, else MNIST's folder under data/raw."""
    return Path(os.environ.get(MNIST_DIR_ENV) or raw_source.local_raw_dir(storage.root, "mnist"))


def _stat(directory: Path) -> list[list]:
    """Name, size and mtime of the folder's files: cheap, and it moves whenever a file is replaced."""
    if not directory.is_dir():
        return []
    return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in directory.iterdir() if p.is_file())


def _last_reported(instance: dg.DagsterInstance) -> str | None:
    """The data version of the latest reported version of the raw files, if any."""
    records = instance.fetch_materializations(RAW_FILES_ASSET.key, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    return records[0].asset_materialization.tags.get(DATA_VERSION_TAG)


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=default_sensor_status(),
    description="Reports a new version of mnist_raw_files when the raw files' md5s change; otherwise does nothing.",
)
def observe_raw_files(context: dg.SensorEvaluationContext, storage: PipelineStorage) -> dg.SensorResult | dg.SkipReason:
    directory = watched_raw_dir(storage)
    cursor = json.loads(context.cursor) if context.cursor else {}
    stat = _stat(directory)
    if cursor.get("directory") == str(directory) and cursor.get("stat") == stat:
        return dg.SkipReason(f"{directory}: no file changed size or time since the last look")
    seen = raw_source.observe_raw_files(directory)
    new_cursor = json.dumps({"directory": str(directory), "stat": stat, "data_version": seen.data_version})
    last = cursor.get("data_version") or _last_reported(context.instance)  # a reset cursor does not repeat an event
    if last == seen.data_version:
        return dg.SensorResult(skip_reason=f"{directory}: contents unchanged (data version {last})", cursor=new_cursor)
    context.log.info(f"{directory}: raw data version {last or 'none'} -> {seen.data_version}")
    new_version = dg.AssetMaterialization(
        RAW_FILES_ASSET.key,
        description=f"the raw files in {directory} changed",
        tags={DATA_VERSION_TAG: seen.data_version},
        metadata={"directory": dg.MetadataValue.path(str(directory)), "md5": dg.MetadataValue.json(seen.md5),
                  "missing": ", ".join(seen.missing) or "none"},
    )
    return dg.SensorResult(asset_events=[new_version], cursor=new_cursor)
