"""Declarative automation: a new drop is ingested at once and flows down once in the night; a night with nothing new
does nothing; a forced re-run reuses.

The daemon is played by hand, with Dagster's own pieces: the sweep sensor adds the variants of a
one-variant sweep file as partitions, the raw-files sensor is evaluated and its events stored as
the daemon would store them, `evaluate_automation_conditions` decides what each tick requests, and
the requested assets are materialized into the same instance, one run per partition as the daemon
launches them (with the tiny test config, as a deployment would launch them with its own). The
ticks run on a clock: drops arrive in the afternoon, and retraining waits for the nightly window
(02:00-07:00 UTC, the default cadence). Everything is read back from the instance's event log and from MLflow.
"""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from vae_pipeline.definitions import defs
from vae_pipeline.defs.automation import RETRAINING_ENV, retraining_cadence
from vae_pipeline.defs.raw_files import observe_raw_files
from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.variants import SWEEP_ENV, sweep_variants
from vae_pipeline_tests.helpers import run_config
from vae_pipeline_tests.idx_files import write_mnist_slice
from vae_pipeline_tests.variants import TINY_VARIANT

pytestmark = [
    pytest.mark.slow,
    # Dagster's own test helper (evaluate_automation_conditions) selects with a beta parameter; not our code path.
    pytest.mark.filterwarnings("ignore:Parameter `include_sources`:dagster.BetaWarning"),
]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MAX_TICKS = 12  # a drop needs one tick per layer of the graph (about seven); more means the automation loops
MATERIALIZABLE = {k.to_user_string() for k in defs.resolve_asset_graph().materializable_asset_keys}
# What one tick asks for: a run per partition, (partition key or None for the unpartitioned assets, asset names).
Request = tuple[str | None, list[str]]
FIRST_DAY = datetime(2026, 12, 1, 13, 58, tzinfo=timezone.utc)
INGEST = [[(None, ["mnist_raw"])], [(None, ["mnist_tensors"])]]  # what a drop starts in daylight: ingest and its checks


@dataclass
class Deployment:
    """One instance, one data folder, the raw-files sensor's cursor and the automation cursor."""

    root: Path
    watched: Path
    instance: dg.DagsterInstance = field(default_factory=dg.DagsterInstance.ephemeral)
    sensor_cursor: str | None = None
    automation_cursor: object = None
    now: datetime = FIRST_DAY  # the time of the next automation tick; each tick takes a minute

    def __post_init__(self) -> None:
        self.uri = f"sqlite:///{self.root / 'mlflow.db'}"
        self.resources = default_resources(str(self.root / "data"), tracking_uri=self.uri)
        self.defs = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, resources=self.resources)
        self.config = run_config(self.watched).to_config_dict()["ops"]

    def observe(self) -> int:
        """One evaluation of the raw-files sensor; returns how many asset events it reported."""
        context = dg.build_sensor_context(instance=self.instance, cursor=self.sensor_cursor,
                                          resources={"storage": self.resources["storage"]})
        result = observe_raw_files(context)
        if not isinstance(result, dg.SensorResult):
            return 0
        self.sensor_cursor = result.cursor
        for event in result.asset_events or []:
            self.instance.report_runless_asset_event(event)
        return len(result.asset_events or [])

    def add_sweep(self, sweep_file: Path) -> list[str]:
        """One evaluation of the sweep sensor, its partitions added as the daemon adds them; returns the keys added."""
        with pytest.MonkeyPatch.context() as env:
            env.setenv(SWEEP_ENV, str(sweep_file))
            result = sweep_variants(dg.build_sensor_context(instance=self.instance))
        if not isinstance(result, dg.SensorResult):
            return []
        added = []
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            added += request.partition_keys
        return added

    def tick(self) -> list[Request]:
        """One automation tick: what it requests, grouped into runs by partition (the unpartitioned assets first)."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.automation_cursor,
                                                   evaluation_time=self.now)
        self.automation_cursor, self.now = result.cursor, self.now + timedelta(minutes=1)
        by_partition: dict[str | None, list[str]] = defaultdict(list)
        for r in result.results:
            if isinstance(r.key, dg.AssetKey):
                for partition in result.get_requested_partitions(r.key):
                    by_partition[partition].append(r.key.to_user_string())
        return [(p, sorted(by_partition[p])) for p in sorted(by_partition, key=lambda p: (p is not None, p or ""))]

    def run(self, selection: list[str], partition: str | None = None) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [*self.defs.assets, *self.defs.asset_checks], selection=selection,
            run_config={"ops": {k: v for k, v in self.config.items() if k in selection}},
            resources=self.resources, instance=self.instance, partition_key=partition, raise_on_error=False,
        )

    def settle(self) -> list[tuple[Request, dg.ExecuteInProcessResult]]:
        """Tick and run what is requested, a run per partition, until a tick requests nothing."""
        runs, ticks = [], []
        for _ in range(MAX_TICKS):
            requested = self.tick()
            if not requested:
                self.ticks = ticks
                return runs
            ticks.append(requested)
            runs += [((partition, assets), self.run(assets, partition)) for partition, assets in requested]
        raise AssertionError(f"automation still requests work after {MAX_TICKS} ticks: {ticks}")

    def night(self) -> Deployment:
        """Move the clock to 02:00 of the next night: the nightly window opens."""
        self.now = (self.now + timedelta(days=1)).replace(hour=2, minute=0)
        return self

    def afternoon(self) -> Deployment:
        """Move the clock to 14:00 of the next day (the window closed at 07:00)."""
        self.now = (self.now + timedelta(days=1) if self.now.hour >= 14 else self.now).replace(hour=14, minute=0)
        return self

    def materializations(self) -> Counter:
        """Materializations per asset and partition: "vae_model[z4-b1-bern]", "mnist_raw"."""
        counts = Counter()
        for key in MATERIALIZABLE:
            for record in self.instance.fetch_materializations(dg.AssetKey(key), limit=1000).records:
                partition = record.partition_key
                counts[f"{key}[{partition}]" if partition else key] += 1
        return counts

    def mlflow_counts(self) -> tuple[int, int]:
        client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        runs = client.search_runs([client.get_experiment_by_name("vae-pipeline").experiment_id])
        return len(runs), len(client.search_model_versions("name = 'vae-mnist'"))


def _materialized(runs: list[tuple[Request, dg.ExecuteInProcessResult]]) -> Counter:
    """Materializations per asset, with the partition for a partitioned one: "vae_model[z4-b1-bern]", "mnist_raw"."""
    counts = Counter()
    for _, result in runs:
        for event in result.get_asset_materialization_events():
            key, partition = event.asset_key.to_user_string(), event.partition
            counts[f"{key}[{partition}]" if partition else key] += 1
    return counts


def _every_asset_once() -> dict[str, int]:
    """Each asset once: the unpartitioned ones, and the tiny variant's partition of the partitioned ones."""
    graph = defs.resolve_asset_graph()
    return {key if graph.get(dg.AssetKey(key)).partitions_def is None else f"{key}[{TINY_VARIANT}]": 1
            for key in MATERIALIZABLE}


def _metadata(runs, asset: str) -> dict:
    (event,) = [e for _, r in runs for e in r.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def deployment(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("automation")
    watched = write_mnist_slice(mnist_dir, root / "raw", n_train=1200, n_test=300)
    sweep = root / "sweep.yaml"
    sweep.write_text("variants:\n  - {latent_dim: 4, beta: 1, likelihood: bernoulli}\n")  # TINY_VARIANT alone
    assert retraining_cadence() == "nightly", f"${RETRAINING_ENV} must be unset: the definitions were loaded with it"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VAE_PIPELINE_MNIST_DIR", str(watched))
        env.setenv("VAE_PIPELINE_RAW_SETTLE_SECONDS", "0")  # the test's files are written whole; none is being copied
        state = Deployment(root=root, watched=watched)
        assert state.add_sweep(sweep) == [TINY_VARIANT]
        assert state.tick() == []  # the daemon's first tick only starts its cursor
        assert state.observe() == 1  # the first look at the folder is a new version of the raw files
        state.first_day = state.settle()  # 14:00: ingest and its checks at once; retraining waits
        state.first_day_ticks = state.ticks
        state.first_night = state.first_day + state.night().settle()
        state.first_ticks = state.first_day_ticks + state.ticks
        yield state


def test_the_first_drop_flows_down_once_layer_by_layer(deployment: Deployment) -> None:
    assert deployment.first_day_ticks == INGEST  # nothing trains in daylight
    runs = deployment.first_night
    assert _materialized(runs) == Counter(_every_asset_once())  # sweep_comparison included
    ticks = deployment.first_ticks
    assert ticks[:3] == [
        [(None, ["mnist_raw"])], [(None, ["mnist_tensors"])], [(None, ["digit_classifier"]), (TINY_VARIANT, ["vae_model"])]]
    assert all(partition in (None, TINY_VARIANT) for tick in ticks for partition, _ in tick)
    assert all(result.success for _, result in runs)
    assert _metadata(runs, "vae_model")["reused"] is False
    # The VAE's and the auto-encoder's training runs and the sweep table's run; one registered version.
    assert deployment.mlflow_counts() == (3, 1)
    client = MlflowClient(tracking_uri=deployment.uri)
    mlflow_runs = client.search_runs([client.get_experiment_by_name("vae-pipeline").experiment_id])
    assert sorted(r.data.tags.get("role") for r in mlflow_runs) == ["autoencoder", "sweep_comparison", "vae"]


def test_a_second_night_with_nothing_changed_does_no_work(deployment: Deployment) -> None:
    before, mlflow_before = deployment.materializations(), deployment.mlflow_counts()
    assert deployment.observe() == 0  # the folder did not change: no event at all
    assert deployment.night().settle() == []
    assert deployment.materializations() == before
    assert deployment.mlflow_counts() == mlflow_before


def test_a_forced_rematerialization_reuses_everything_and_triggers_nothing(deployment: Deployment) -> None:
    mlflow_before = deployment.mlflow_counts()
    forced = deployment.run(sorted(MATERIALIZABLE), TINY_VARIANT)
    assert forced.success
    runs = [((TINY_VARIANT, sorted(MATERIALIZABLE)), forced)]
    for asset in ("vae_model", "autoencoder_baseline", "digit_classifier", "latent_embeddings", "prior_samples",
                  "reconstruction_report", "latent_evaluation", "sweep_comparison"):
        assert _metadata(runs, asset).get("reused") is True, asset
    assert deployment.mlflow_counts() == mlflow_before  # no new MLflow run, no new version
    # Every data version came out the same, so nothing downstream is stale: the next ticks request nothing.
    assert deployment.settle() == []


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_a_new_drop_of_raw_files_retrains_once(deployment: Deployment) -> None:
    before = deployment.materializations()
    fashion = write_mnist_slice(FASHION_DIR, deployment.root / "fashion", n_train=1200, n_test=300, dataset="fashion_mnist")
    for path in fashion.iterdir():  # a user's new drop, under the names the pipeline watches
        shutil.copyfile(path, deployment.watched / path.name)
    assert deployment.afternoon().observe() == 1
    # Two epochs on 1,200 Fashion-MNIST images make a ~65% judge; the deployment lowers the judge's floor for it.
    deployment.config["digit_classifier"] = {"config": {**deployment.config["digit_classifier"]["config"], "min_test_accuracy": 0.5}}
    day = deployment.settle()
    assert deployment.ticks == INGEST
    runs = day + deployment.night().settle()
    after = deployment.materializations()
    new = {key: after[key] - before[key] for key in _every_asset_once()}
    assert new[f"vae_model[{TINY_VARIANT}]"] == 1 and _metadata(runs, "vae_model")["reused"] is False
    # Everything that depends on the data ran exactly once; the champion moves only if the gates passed.
    gates = [e for _, r in runs for e in r.get_asset_check_evaluations() if e.asset_key == dg.AssetKey("champion_comparison")]
    assert len(gates) == 3
    gates_passed = all(e.passed for e in gates)
    assert new == _every_asset_once() | {f"champion_model[{TINY_VARIANT}]": 1 if gates_passed else 0}
    assert deployment.mlflow_counts()[1] == 2  # one new registered version
    assert deployment.observe() == 0 and deployment.settle() == []


def test_a_challenger_that_failed_its_gates_is_not_promoted_by_a_later_tick_or_by_hand(
    deployment: Deployment, mnist_dir: Path
) -> None:
    client = MlflowClient(tracking_uri=deployment.uri, registry_uri=deployment.uri)
    champion = client.get_model_version_by_alias("vae-mnist", "champion").version
    # A new drop (the MNIST slice again) and a config whose model stays untrained: clearly worse.
    write_mnist_slice(mnist_dir, deployment.watched, n_train=1200, n_test=300)
    deployment.config["vae_model"] = {"config": {**deployment.config["vae_model"]["config"], "learning_rate": 1e-7, "seed": 7}}
    assert deployment.afternoon().observe() == 1
    runs = deployment.settle() + deployment.night().settle()
    gates = {e.check_name: e.passed for _, r in runs for e in r.get_asset_check_evaluations()
             if e.asset_key == dg.AssetKey("champion_comparison")}
    assert gates["nll_not_worse_than_champion"] is False
    assert all("champion_model" not in assets for (_, assets), _ in runs)  # blocking checks ran in an earlier run
    assert client.get_model_version_by_alias("vae-mnist", "champion").version == champion
    by_hand = deployment.run(["champion_model"], TINY_VARIANT)
    assert not by_hand.success
    error = by_hand.get_step_failure_events()[0].event_specific_data.error
    failure = error.cause.message if error.cause else error.message  # the step's own exception, under Dagster's
    assert "did not pass the promotion gates" in failure and "the champion alias stays where it is" in failure
    assert client.get_model_version_by_alias("vae-mnist", "champion").version == champion
