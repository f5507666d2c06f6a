"""The product as its users run it: `dagster dev` and `mlflow server`, a launch of one variant through GraphQL, the sensors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from vae_pipeline.core.selection.sweep import load_sweep
from vae_pipeline.defs.variants import DEFAULT_SWEEP, VARIANTS
from vae_pipeline_tests.e2e.servers import REPOSITORY, DagsterDev, Server, group_commands, listening_addresses
from vae_pipeline_tests.helpers import BAD_TRAINING, BAD_VARIANTS, PIPELINE_ASSETS, REPO_ROOT, mlflow_client
from vae_pipeline_tests.variants import TINY_VARIANT

pytestmark = pytest.mark.slow

DELETE_PARTITIONS = """mutation($repo: RepositorySelector!, $name: String!, $keys: [String!]!) {
  deleteDynamicPartitions(repositorySelector: $repo, partitionsDefName: $name, partitionKeys: $keys) {
    __typename ... on Error { message } } }"""


def test_servers_listen_on_loopback_only(dagster_dev: DagsterDev, mlflow_server: Server) -> None:
    """Started without a host, both servers (and dagster's code server) bind 127.0.0.1 only."""
    for server in (dagster_dev.server, mlflow_server):
        addresses = listening_addresses(server)
        assert addresses, f"{server.name} listens nowhere?"
        assert addresses <= {"127.0.0.1", "::1"}, f"{server.name} listens on {addresses}"


def test_the_mlflow_server_starts_no_job_consumers(mlflow_server: Server, first_run: str) -> None:
    # MLflow's job execution (unused here) would start seven `huey_consumer` processes in the server's group.
    commands = group_commands(mlflow_server.process.pid)
    assert any("uvicorn" in c for c in commands), commands  # the server itself is there
    assert not [c for c in commands if "huey" in c], commands


def test_whole_graph_through_graphql_lands_in_mlflow(dagster_dev: DagsterDev, first_run: str) -> None:
    steps = {e["stepKey"] for e in dagster_dev.run_events(first_run) if e["__typename"] == "MaterializationEvent"}
    assert steps == PIPELINE_ASSETS
    client = mlflow_client(dagster_dev.tracking_uri)  # the server's REST API
    runs = client.search_runs(
        [client.get_experiment_by_name("vae-pipeline").experiment_id], f"tags.`dagster.run_id` = '{first_run}'"
    )
    assert sorted(r.data.tags["role"] for r in runs) == ["autoencoder", "sweep_comparison", "vae"]
    vae_run = next(r for r in runs if r.data.tags["role"] == "vae")
    assert vae_run.info.status == "FINISHED"
    assert {"val_neg_elbo", "eval_iwae_nll", "test_recon_nll_at_mu"} <= set(vae_run.data.metrics)
    assert (vae_run.data.params["variant"], vae_run.data.params["model.latent_dim"]) == (TINY_VARIANT, "4")  # the partition's
    versions = [v for v in client.search_model_versions("name='vae-mnist'") if v.run_id == vae_run.info.run_id]
    assert len(versions) == 1 and versions[0].status == "READY" and versions[0].tags["variant"] == TINY_VARIANT
    champion = client.get_model_version_by_alias("vae-mnist", "champion")
    assert champion.run_id == vae_run.info.run_id  # the first model has no champion to beat
    artifacts = {a.path for a in client.list_artifacts(vae_run.info.run_id)}
    assert {"checkpoint", "samples", "evaluation", "reconstruction_report"} <= artifacts  # MLflow 3 keeps the model apart
    # the files are where the README says, under the data folder dagster dev was given
    parquet = dagster_dev.data_dir / "latents" / "vae-mnist" / f"v{int(versions[0].version):04d}.parquet"
    assert len(pd.read_parquet(parquet)) == 1500
    # The sweep table of this deployment has the variant's row, of one of its versions (other tests of the
    # session train the same variant again, so not necessarily this run's).
    sweep = pd.read_parquet(dagster_dev.data_dir / "sweeps" / "vae-mnist" / "comparison.parquet")
    mine = {int(v.version) for v in client.search_model_versions("name='vae-mnist'") if v.tags.get("variant") == TINY_VARIANT}
    assert int(versions[0].version) in mine
    assert int(sweep.set_index("variant").loc[TINY_VARIANT, "model_version"]) in mine


def test_nothing_written_is_a_pickle(dagster_dev: DagsterDev, first_run: str) -> None:
    """Manifests are JSON, checkpoints are torch zip files read with weights_only, the MLflow model is code."""
    data_dir = dagster_dev.data_dir
    for manifest in (data_dir / "manifests").rglob("*"):
        if manifest.is_file():
            assert manifest.suffix == ".json"
            json.loads(manifest.read_text())
    for path in data_dir.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                assert fh.read(1) != b"\x80", f"{path} is a pickle"  # protocol 2+ pickles start with 0x80
    artifacts = dagster_dev.data_dir.parent / "mlflow" / "artifacts"
    assert list(artifacts.rglob("*.pkl")) == [] and list(artifacts.rglob("checkpoint.pt"))


def test_the_sensors_are_registered_and_the_raw_files_sensor_reports_the_folder(dagster_dev: DagsterDev, mnist_slice_dir: Path) -> None:
    data = dagster_dev.graphql(
        """{ sensorsOrError(repositorySelector: {repositoryLocationName: "vae_pipeline", repositoryName: "__repository__"}) {
             ... on Sensors { results { name sensorType sensorState { status } } } }
           instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"""
    )
    sensors = {s["name"]: s for s in data["sensorsOrError"]["results"]}
    assert {"automation", "observe_raw_files", "sweep_variants", "end_mlflow_runs_of_failed_runs"} <= set(sensors)
    assert sensors["automation"]["sensorType"] == "AUTO_MATERIALIZE"  # GraphQL's name for automation-condition sensors
    # Off here only because this deployment sets VAE_PIPELINE_AUTOMATION=off (test_definitions: on by default).
    assert sensors["automation"]["sensorState"]["status"] == "STOPPED"
    assert sensors["sweep_variants"]["sensorState"]["status"] == "STOPPED"
    assert sensors["end_mlflow_runs_of_failed_runs"]["sensorState"]["status"] == "RUNNING"
    daemons = {d["daemonType"]: d for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]}
    assert daemons["SENSOR"]["healthy"], daemons
    # The UI's "Test sensor": evaluated by the code server against the watched folder (the MNIST slice).
    dry = dagster_dev.graphql(
        """mutation($selector: SensorSelector!) { sensorDryRun(selectorData: $selector, cursor: null) {
             __typename ... on DryRunInstigationTick { evaluationResult { skipReason cursor error { message } } }
             ... on PythonError { message } } }""",
        {"selector": {"repositoryLocationName": "vae_pipeline", "repositoryName": "__repository__", "sensorName": "observe_raw_files"}},
    )["sensorDryRun"]
    assert dry["__typename"] == "DryRunInstigationTick", dry
    result = dry["evaluationResult"]
    # A new version of the raw files is an asset event, not a run request (GraphQL calls that "empty").
    assert result["error"] is None and "contents unchanged" not in (result["skipReason"] or "")
    cursor = json.loads(result["cursor"])
    assert cursor["directory"] == str(mnist_slice_dir) and cursor["data_version"] != "absent"  # the four files were hashed


def test_the_sweep_sensor_proposes_the_sweep_files_missing_variants(dagster_dev: DagsterDev) -> None:
    """The UI's "Test sensor" on sweep_variants: the code server reads sweeps/default.yaml and asks for the variants the
    instance lacks; a dry run adds none."""
    before = dagster_dev.variants()
    dry = dagster_dev.graphql(
        """mutation($selector: SensorSelector!) { sensorDryRun(selectorData: $selector, cursor: null) {
             __typename ... on DryRunInstigationTick { evaluationResult {
               skipReason error { message } dynamicPartitionsRequests { partitionKeys partitionsDefName type } } }
             ... on PythonError { message } } }""",
        {"selector": {**REPOSITORY, "sensorName": "sweep_variants"}},
    )["sensorDryRun"]
    assert dry["__typename"] == "DryRunInstigationTick", dry
    result = dry["evaluationResult"]
    missing = [v.key for v in load_sweep(REPO_ROOT / DEFAULT_SWEEP) if v.key not in before]
    assert missing and result["error"] is None, result  # the default grid has variants no test adds
    assert result["dynamicPartitionsRequests"] == [{"partitionKeys": missing, "partitionsDefName": VARIANTS.name, "type": "ADD_PARTITIONS"}]
    assert dagster_dev.variants() == before


def _new_files(folder: Path, before: set[Path]) -> set[Path]:
    return set(folder.rglob("*")) - before if folder.exists() else set()


# Through the server, one bad config and one bad key: the run worker's launch check is one function for
# every case (defs/validation.py), and defs/test_validation.py runs each case of BAD_TRAINING and
# BAD_VARIANTS through a real run's executor; what only a server shows (the run worker process fails
# before its first step, its failure reaches the UI's events, nothing is written) is the same for all.
# Each case is a run worker process of its own: all eight took 133 s of this file's 2-core setup.
SERVER_TRAINING = ("a layer of 40 GB",)
SERVER_VARIANTS = ("not a variant key",)


@dataclass(frozen=True)
class BadRuns:
    """A bad config and a bad variant key launched at once (each run is a process of its own that fails before
    its first step), and what the deployment looked like afterwards."""

    statuses: dict[str, str]  # case -> the run's final status
    failures: dict[str, list[dict[str, Any]]]  # case -> the run's events
    new_files: set[Path]  # written under the data folder while they ran
    new_mlflow_runs: int


@pytest.fixture(scope="module")
def bad_runs(dagster_dev: DagsterDev, tiny_config: Callable[..., dict[str, Any]], first_run: str) -> BadRuns:
    training = {case: BAD_TRAINING[case][0] for case in SERVER_TRAINING}
    variants = {case: BAD_VARIANTS[case] for case in SERVER_VARIANTS}
    dagster_dev.wait_idle()
    before = set(dagster_dev.data_dir.rglob("*"))
    client = mlflow_client(dagster_dev.tracking_uri)
    experiment = client.get_experiment_by_name("vae-pipeline").experiment_id
    runs_before = len(client.search_runs([experiment]))
    dagster_dev.add_variants(*variants.values())
    try:
        launched = {case: dagster_dev.launch(tiny_config(seed=7, **overrides)) for case, overrides in training.items()}
        launched |= {case: dagster_dev.launch(tiny_config(seed=7), variant=key) for case, key in variants.items()}
        statuses = {case: dagster_dev.wait(run_id, timeout_s=240) for case, run_id in launched.items()}
    finally:  # the partitions go again, so that the other tests see the deployment's variants only
        deleted = dagster_dev.graphql(DELETE_PARTITIONS, {"repo": REPOSITORY, "name": VARIANTS.name, "keys": list(variants.values())})
        assert deleted["deleteDynamicPartitions"]["__typename"] == "DeleteDynamicPartitionsSuccess", deleted
    return BadRuns(statuses, {case: dagster_dev.run_events(run_id) for case, run_id in launched.items()},
                   _new_files(dagster_dev.data_dir, before), len(client.search_runs([experiment])) - runs_before)


def _failure_message(events: list[dict[str, Any]]) -> str:
    """The run's failure message, after checking that no step started."""
    assert [e for e in events if e["__typename"] == "ExecutionStepStartEvent"] == []
    failure = next(e for e in events if e["__typename"] == "RunFailureEvent")
    return failure["error"]["message"] if failure.get("error") else failure["message"]


def test_bad_runs_write_nothing(bad_runs: BadRuns) -> None:
    assert bad_runs.new_files == set()
    assert bad_runs.new_mlflow_runs == 0


@pytest.mark.parametrize("case", SERVER_TRAINING)
def test_bad_config_fails_before_any_step(case: str, bad_runs: BadRuns) -> None:
    assert bad_runs.statuses[case] == "FAILURE"
    message = _failure_message(bad_runs.failures[case])
    for w in BAD_TRAINING[case][1]:
        assert w in message, message


@pytest.mark.parametrize("case", SERVER_VARIANTS)
def test_a_bad_variant_key_fails_before_any_step(case: str, bad_runs: BadRuns) -> None:
    """A key added from the UI's "Add partition" can be any string; a run of one that is no variant fails before its first step."""
    key = BAD_VARIANTS[case]
    assert bad_runs.statuses[case] == "FAILURE"
    message = _failure_message(bad_runs.failures[case])
    # It names the key, the form of a variant key, and the fix.
    for w in (f"partition {key!r}", "z<latent_dim>-b<beta>-<bern|gauss>", "delete that partition in the ui"):
        assert w in message.lower(), message
