"""The raw folder as an external asset, watched by a sensor: a new drop of files is a new data version.

`mnist_raw_files` stands for the four IDX files in the watched folder ($VAE_PIPELINE_MNIST_DIR,
else data/raw/MNIST/raw); something outside the pipeline (a user, a sync job) updates them. The
sensor looks at the files' sizes and modification times every minute, hashes them (md5, about
0.2 s for the official set) only when those moved, and reports a new version of the external
asset (a runless materialization whose data version is the md5s) only when the md5s differ from
the last reported ones. An unchanged folder leaves no event and starts no run; `mnist_raw` and
everything below it update through their automation conditions (defs/automation.py).

A file counts only once it has settled (core/data/raw_settle.py): quiet for $VAE_PIPELINE_RAW_SETTLE_SECONDS
(default 60 s) by its mtime or by the sensor's own looks. While one is still being written the sensor
reports nothing, names it in the skip reason and keeps the previous version, so a slow copy is one
new version when it is done, not one per minute of copying, each starting an ingest of half a file.

Dagster's `observable_source_asset` would say the same with an observation, but it is a beta API
in Dagster 1.13 (a BetaWarning on every load) and its observations need a run per look; an
external AssetSpec with events reported by a sensor uses stable APIs only.
"""

import json
import math
import os
import time
from pathlib import Path

import dagster as dg

from vae_pipeline.core.data import raw_settle, raw_source
from vae_pipeline.defs.automation import default_sensor_status
from vae_pipeline.defs.storage.folder import MNIST_DIR_ENV, PipelineStorage

SETTLE_ENV = "VAE_PIPELINE_RAW_SETTLE_SECONDS"
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


def raw_settle_seconds() -> float:
    """How long a raw file must be left alone before it counts: $VAE_PIPELINE_RAW_SETTLE_SECONDS, else 60 s."""
    value = os.environ.get(SETTLE_ENV, "").strip()
    if not value:
        return raw_settle.SETTLE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(
            f"${SETTLE_ENV}={value!r} is not a number of seconds; set it to 0 or more "
            f"(0 counts every file at once; the default is {raw_settle.SETTLE_SECONDS:g}) or unset it."
        )
    return seconds


def _cursor(
    directory: Path, files: dict[str, raw_settle.FileLook], data_version: str | None, writing: list[str]
) -> str:
    """What the next look starts from: this look's files, the version they stand for, those still being written."""
    stat = sorted([name, f.size, f.mtime_ns, f.since_ns] for name, f in files.items())
    return json.dumps({"directory": str(directory), "stat": stat, "data_version": data_version, "writing": writing})


def _looks_from_cursor(entries: list[list]) -> dict[str, raw_settle.FileLook]:
    # Entries of another length come from an older cursor (name, size, mtime of every file): dropped,
    # they only cost one extra hash.
    return {e[0]: raw_settle.FileLook(e[1], e[2], e[3]) for e in entries if len(e) == 4}


def _last_reported(instance: dg.DagsterInstance) -> str | None:
    """The data version of the latest reported version of the raw files, if any."""
    records = instance.fetch_materializations(RAW_FILES_ASSET.key, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    return records[0].asset_materialization.tags.get(DATA_VERSION_TAG)


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=default_sensor_status(),
    description="Reports a new version of mnist_raw_files when the raw files' md5s change and every file has settled; "
    "otherwise does nothing.",
)
def observe_raw_files(context: dg.SensorEvaluationContext, storage: PipelineStorage) -> dg.SensorResult | dg.SkipReason:
    directory = watched_raw_dir(storage)
    cursor = json.loads(context.cursor) if context.cursor else {}
    known = cursor.get("directory") == str(directory) and "stat" in cursor  # not a manifest: the sensor's cursor
    previous = _looks_from_cursor(cursor["stat"]) if known else {}
    now = time.time_ns()
    files = raw_settle.look(directory, previous, now)
    if known and not cursor.get("writing") and raw_settle.same_files(files, previous):
        return dg.SkipReason(f"{directory}: no file changed size or time since the last look")
    # A reset cursor does not repeat an event.
    last = cursor.get("data_version") or _last_reported(context.instance)  # not a manifest: the sensor's cursor
    settle = raw_settle_seconds()
    writing = raw_settle.unsettled(files, now, settle)
    if writing:
        return dg.SensorResult(
            skip_reason=f"{directory}: {', '.join(writing)} still being written (changed within the last "
            f"{settle:g} s); the raw data version stays {last or 'none'} until every file has been left alone "
            f"for {settle:g} s",
            cursor=_cursor(directory, files, last, writing),
        )
    seen = raw_source.observe_raw_files(directory)
    if last == seen.data_version:
        return dg.SensorResult(skip_reason=f"{directory}: contents unchanged (data version {last})",
                               cursor=_cursor(directory, files, seen.data_version, []))
    context.log.info(f"{directory}: raw data version {last or 'none'} -> {seen.data_version}")
    new_version = dg.AssetMaterialization(
        RAW_FILES_ASSET.key,
        description=f"the raw files in {directory} changed",
        tags={DATA_VERSION_TAG: seen.data_version},
        metadata={"directory": dg.MetadataValue.path(str(directory)), "md5": dg.MetadataValue.json(seen.md5),
                  "missing": ", ".join(seen.missing) or "none"},
    )
    return dg.SensorResult(asset_events=[new_version], cursor=_cursor(directory, files, seen.data_version, []))
