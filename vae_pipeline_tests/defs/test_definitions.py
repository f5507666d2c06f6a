"""The code location loads, shows every asset with a description and a group, and fits the scripts' instance."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from vae_pipeline.definitions import defs
from vae_pipeline.defs.variants import VARIANTS
from vae_pipeline_tests.helpers import REPO_ROOT

# One model's assets, one partition per variant (defs/variants.py); the data, the judge and the sweep's table are shared.
PARTITIONED = {
    "vae_model", "autoencoder_baseline", "latent_embeddings", "prior_samples", "reconstruction_report",
    "latent_evaluation", "version_comparison", "champion_comparison", "champion_model",
}


def test_definitions_load_and_describe_every_asset() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "mnist_raw_files", "mnist_raw", "mnist_tensors", "vae_model", "autoencoder_baseline", "latent_embeddings",
        "prior_samples", "reconstruction_report", "latent_evaluation", "champion_comparison", "champion_model",
        "version_comparison",
        "digit_classifier", "sweep_comparison",
    }
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        assert node.group_name != "default", f"{key} has no group"


def test_one_models_assets_are_partitioned_by_variant_and_the_rest_are_not() -> None:
    graph = defs.resolve_asset_graph()
    partitions = {k.to_user_string(): graph.get(k).partitions_def for k in graph.materializable_asset_keys}
    assert {name for name, p in partitions.items() if p is not None} == PARTITIONED
    assert all(partitions[name] == VARIANTS for name in PARTITIONED)
    assert {name for name, p in partitions.items() if p is None} == {
        "mnist_raw", "mnist_tensors", "digit_classifier", "sweep_comparison"}
    assert graph.get(dg.AssetKey("mnist_raw_files")).partitions_def is None


def test_every_asset_has_a_code_version_and_updates_on_new_data() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        assert node.code_version, f"{key.to_user_string()} has no code_version"
        assert node.automation_condition is not None, f"{key.to_user_string()} has no automation condition"
    assert graph.get(dg.AssetKey("mnist_raw")).parent_keys == {dg.AssetKey("mnist_raw_files")}
    assert not graph.get(dg.AssetKey("mnist_raw_files")).is_materializable  # an external asset: the raw folder


def test_automation_raw_file_and_sweep_sensors_are_on_by_default_and_no_blind_schedule() -> None:
    for name in ("automation", "observe_raw_files", "sweep_variants"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    assert not list(defs.schedules or [])
    job = defs.resolve_job_def("vae_pipeline_job")  # kept for the CLI and backfills
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} >= {"vae_model", "champion_model"}


def test_automation_off_stops_the_sensors_that_start_work_by_default() -> None:
    # The status is decided when the code location loads, so a fresh interpreter reads the variable.
    probe = (
        "from vae_pipeline.definitions import defs\n"
        "for name in ('automation', 'observe_raw_files', 'sweep_variants', 'end_mlflow_runs_of_failed_runs'):\n"
        "    print(name, defs.resolve_sensor_def(name).default_status.value)\n"
    )
    env = {**os.environ, "VAE_PIPELINE_AUTOMATION": "off"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert dict(line.split() for line in out.splitlines()) == {
        "automation": "STOPPED", "observe_raw_files": "STOPPED", "sweep_variants": "STOPPED",
        "end_mlflow_runs_of_failed_runs": "RUNNING",  # ending a dead run's MLflow run starts no work
    }


def test_the_failed_run_sensor_is_on_by_default() -> None:
    sensor = defs.resolve_sensor_def("end_mlflow_runs_of_failed_runs")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_assets_that_train_share_a_pool_and_the_scripts_instance_retries_dead_runs(tmp_path: Path) -> None:
    graph = defs.resolve_asset_graph()
    in_pool = {k.to_user_string() for k in graph.materializable_asset_keys if "gpu" in graph.get(k).pools}
    assert in_pool == {"vae_model", "autoencoder_baseline", "digit_classifier"}  # evaluation stays outside it
    shutil.copy(REPO_ROOT / "deploy" / "local" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        # No limit here: CLI runs are not monitored, and a killed one's slot would block training for good.
        assert instance.get_concurrency_config().pool_config.default_pool_limit is None
        # a dead worker's runs are retried and its pool slots freed; a step that raised is not retried
        assert instance.run_retries_enabled and instance.run_retries_max_retries >= 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def _readme_edges(text: str) -> set[tuple[str, str]]:
    """The edges of the README's mermaid graph: `a --> b --> c` chains, `a --> b & c` fans."""
    block = text.split("```mermaid", 1)[1].split("```", 1)[0]
    edges: set[tuple[str, str]] = set()
    for line in block.splitlines():
        steps = [[name.strip() for name in step.split("&")] for step in line.split("-->")]
        for sources, targets in zip(steps, steps[1:]):
            edges.update((a, b) for a in sources for b in targets)
    return edges


def test_the_readme_graph_is_the_definitions_graph() -> None:
    graph = defs.resolve_asset_graph()
    actual = {(parent.to_user_string(), key.to_user_string()) for key in graph.get_all_asset_keys()
              for parent in graph.get(key).parent_keys}
    drawn = _readme_edges((REPO_ROOT / "README.md").read_text())
    assert drawn == actual, f"missing from the README: {sorted(actual - drawn)}; not in the code: {sorted(drawn - actual)}"
    assert _readme_edges("```mermaid\na --> b & c --> d\n```") == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
