"""A sweep through the deployment: three variants added as partitions, one asset backfill, one table.

As a user does it in the UI: "Add partition" three times (GraphQL addDynamicPartition), then
"Materialize" the selected partitions of the model assets and the sweep table (GraphQL
launchPartitionBackfill with an asset selection and the tiny run config). The backfill daemon of
`dagster dev` runs one run per variant (its model, baseline, latents and evaluation) and, once all
three are done, one run of the unpartitioned sweep_comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from vae_pipeline.core.sweep import Variant
from vae_pipeline_tests.e2e.conftest import DagsterDev, manifest, mlflow_client, wait_for

pytestmark = pytest.mark.slow

# Latent sizes 2 and 4, beta 1 and 4: tiny models that differ in both knobs a sweep turns.
SWEEP = ["z2-b1-bern", "z4-b1-bern", "z4-b4-bern"]
PER_VARIANT = ["vae_model", "autoencoder_baseline", "latent_embeddings", "latent_evaluation"]
SEED = 31  # no other test trains with it: every variant trains (and registers) anew

LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message stack } ... on Error { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status error { message }
    runs { runId status tags { key value } } } ... on PythonError { message } } }"""
BACKFILL_ENDED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def _backfill(dev: DagsterDev, backfill_id: str) -> dict[str, Any]:
    found = dev.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
    assert found["__typename"] == "PartitionBackfill", found
    return found


def test_a_backfill_of_three_variants_registers_each_and_compares_them(
    dagster_dev: DagsterDev, tiny_config: Callable[..., dict[str, Any]], first_run: str
) -> None:
    # first_run made the shared, unpartitioned inputs (tensors, judge) that the selection leaves out.
    dagster_dev.add_variants(*SWEEP)
    assert set(SWEEP) <= set(dagster_dev.variants())
    started = time.monotonic()
    launched = dagster_dev.graphql(LAUNCH_BACKFILL, {"params": {
        "partitionNames": SWEEP,
        "assetSelection": [{"path": [asset]} for asset in [*PER_VARIANT, "sweep_comparison"]],
        "runConfigData": tiny_config(seed=SEED),  # the same training config for every variant: the key sets the rest
        "title": "tiny sweep",
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    ended = wait_for(
        f"backfill {backfill_id}", lambda: (b := _backfill(dagster_dev, backfill_id))["status"] in BACKFILL_ENDED and b,
        600, 2.0, log=dagster_dev.server.log,
    )
    elapsed = time.monotonic() - started
    runs = {next((t["value"] for t in r["tags"] if t["key"] == "dagster/partition"), None): r for r in ended["runs"]}
    assert ended["status"] == "COMPLETED_SUCCESS", ended
    assert set(runs) == {*SWEEP, None} and len(ended["runs"]) == len(SWEEP) + 1, ended["runs"]  # a run per variant, one for the table
    assert {r["status"] for r in ended["runs"]} == {"SUCCESS"}

    # Each variant: its own training run and registered version, which say which variant they are.
    client = mlflow_client(dagster_dev.tracking_uri)
    models = {}
    for key in SWEEP:
        run_id = runs[key]["runId"]
        materialized = {e["stepKey"] for e in dagster_dev.run_events(run_id) if e["__typename"] == "MaterializationEvent"}
        assert materialized == set(PER_VARIANT)
        vae = manifest(dagster_dev.data_dir, "vae_model", run_id, key)
        assert (vae["variant"], vae["reused"]) == (key, False)
        mlflow_run = client.get_run(vae["mlflow_run_id"])
        variant = Variant.from_key(key)
        assert mlflow_run.data.params["variant"] == key and mlflow_run.data.tags["dagster.run_id"] == run_id
        assert (int(mlflow_run.data.params["model.latent_dim"]), float(mlflow_run.data.params["train.beta"])) == (variant.latent_dim, variant.beta)
        version = client.get_model_version(vae["model_name"], str(vae["model_version"]))
        assert (version.run_id, version.tags["variant"]) == (vae["mlflow_run_id"], key)
        evaluation = manifest(dagster_dev.data_dir, "latent_evaluation", run_id, key)
        assert evaluation["model_version"] == vae["model_version"]
        models[key] = vae
    assert len({m["mlflow_run_id"] for m in models.values()}) == len({m["model_version"] for m in models.values()}) == len(SWEEP)

    # The table: every variant's row, of the version the backfill trained, measured alike.
    table_run = runs[None]["runId"]
    assert {e["stepKey"] for e in dagster_dev.run_events(table_run) if e["__typename"] == "MaterializationEvent"} == {"sweep_comparison"}
    comparison = manifest(dagster_dev.data_dir, "sweep_comparison", table_run, variant=None)
    parquet = dagster_dev.data_dir / "sweeps" / "vae-mnist" / "comparison.parquet"
    assert dagster_dev.data_dir / comparison["path"] == parquet and (dagster_dev.data_dir / comparison["picture"]).is_file()
    rows = pd.read_parquet(parquet).set_index("variant")
    assert set(SWEEP) <= set(rows.index) and set(SWEEP) <= set(comparison["comparable"])
    assert {key: int(rows.loc[key, "model_version"]) for key in SWEEP} == {key: m["model_version"] for key, m in models.items()}
    assert {key: (int(rows.loc[key, "latent_dim"]), float(rows.loc[key, "beta"])) for key in SWEEP} == {
        key: (Variant.from_key(key).latent_dim, Variant.from_key(key).beta) for key in SWEEP
    }
    assert client.get_run(comparison["mlflow_run_id"]).data.tags["dagster.run_id"] == table_run
    print(f"sweep backfill of {len(SWEEP)} variants: {elapsed:.0f} s from launch to completion")  # shown with -s
