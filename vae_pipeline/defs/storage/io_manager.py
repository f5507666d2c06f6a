"""The IO manager that hands each asset's manifest downstream: small JSON files under the data folder, per run."""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from vae_pipeline.defs.manifests import read_manifest, write_manifest
from vae_pipeline.defs.storage.folder import DATA_DIR_ENV, PipelineStorage, write_json_atomic

# Input metadata asking ManifestIOManager for every materialized partition of a partitioned input.
ALL_PARTITIONS = "all_partitions"


class ManifestIOManager(dg.ConfigurableIOManager):
    """Stores each asset's output as a small JSON manifest (paths, versions, figures), never a pickle.

    The value is the asset's manifest type (defs/manifests.py), written and read there.

    The heavy artifacts (tensor store, checkpoints, parquet) are written by the assets under the
    data folder; the manifest says where they are, so downstream assets receive them as parameters.
    Manifests are kept per run (manifests/<asset>/<run id>.json, and manifests/<asset>/<partition>/
    <run id>.json for a partition): a downstream step reads the one its own run wrote, else the one
    of the run that Dagster records as the latest materialization of that partition, so two runs at
    once never hand each other their outputs.
    """

    storage: PipelineStorage

    def _path(self, key: dg.AssetKey, run_id: str, partition: str | None = None) -> Path:
        folder = self.storage.root / "manifests" / "__".join(key.path)
        return (folder / partition if partition else folder) / f"{run_id}.json"

    def _fetch(self, key: dg.AssetKey, run_id: str, partition: str | None) -> Path:
        path = self._path(key, run_id, partition)
        return self.storage.fetch(self.storage.relative(path))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        partition = context.partition_key if context.has_asset_partitions else None
        path = self._path(context.asset_key, context.run_id, partition)
        write_json_atomic(path, write_manifest(obj))
        # The asset published its files before returning; the manifest goes last, so a reader that
        # finds it also finds them.
        self.storage.publish(path)

    def _load(self, context: dg.InputContext, partition: str | None) -> Any | None:
        """The manifest of one partition (or of the unpartitioned asset): this run's, else the latest; None if never made."""
        key = context.asset_key
        path = self._fetch(key, context.step_context.run_id, partition)
        if not path.is_file():
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
            ).records
            if not records:
                return None
            path = self._fetch(key, records[0].run_id, partition)
            if not path.is_file():
                raise FileNotFoundError(
                    f"{self.storage.relative(path)} is missing from the data folder {self.storage.location}: the latest "
                    f"materialization of {_name(key, partition)} wrote it under another data folder; point "
                    f"{DATA_DIR_ENV} there or re-materialize {_name(key, partition)}."
                )
        return read_manifest(key.path[-1], json.loads(path.read_text()))

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        if not context.has_asset_partitions:
            value = self._load(context, None)
            if value is None:
                raise FileNotFoundError(f"{key.to_user_string()} has never been materialized; materialize it first.")
            return value
        partitions = context.asset_partition_keys
        if (context.definition_metadata or {}).get(ALL_PARTITIONS) is True:
            # An input over every partition (AssetIn(metadata=EVERY_PARTITION)): {partition: manifest} of
            # those materialized so far, in the partitions' order.
            loaded = {partition: self._load(context, partition) for partition in partitions}
            return {partition: value for partition, value in loaded.items() if value is not None}
        run_partition = context.step_context.dagster_run.tags.get("dagster/partition")
        if len(partitions) != 1 and run_partition in partitions:
            # An asset check of a partitioned asset is not partitioned itself; it checks this run's partition.
            partitions = [run_partition]
        if len(partitions) != 1:
            raise ValueError(f"{key.to_user_string()}: {len(partitions)} partitions map to one input; "
                             f"declare the input with AssetIn(metadata={{'{ALL_PARTITIONS}': True}}) to receive them all.")
        value = self._load(context, partitions[0])
        if value is None:
            raise FileNotFoundError(f"{_name(key, partitions[0])} has never been materialized; materialize it first.")
        return value


def _name(key: dg.AssetKey, partition: str | None) -> str:
    return f"{key.to_user_string()}[{partition}]" if partition else key.to_user_string()
