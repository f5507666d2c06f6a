"""Model variants as partitions: the sweep sensor and the CLI add them, and a key that is not a variant is refused by name."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline.core.model.config import ConfigError
from vae_pipeline.definitions import defs
from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.variants import SWEEP_ENV, VARIANTS, sweep_variants, variant_of
from vae_pipeline.variants_cli import main
from vae_pipeline_tests.helpers import REPO_ROOT, run_config
from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

# A grid of two latent sizes and two likelihoods, and one variant listed on its own.
SWEEP = """
grid:
  latent_dim: [2, 4]
  likelihood: [bernoulli, gaussian]
variants:
  - {latent_dim: 8, beta: 0.5}
"""
SWEEP_KEYS = ["z8-b0.5-bern", "z2-b1-bern", "z2-b1-gauss", "z4-b1-bern", "z4-b1-gauss"]  # the file's order: variants, then grid


@pytest.fixture
def sweep_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    monkeypatch.setenv(SWEEP_ENV, str(path))
    return path


def partitions(instance: dg.DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(VARIANTS.name))


def tick(instance: dg.DagsterInstance) -> dg.SensorResult | dg.SkipReason:
    """One evaluation of the sweep sensor, its partition requests applied as the daemon applies them."""
    result = sweep_variants(dg.build_sensor_context(instance=instance))
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            assert isinstance(request, dg.AddDynamicPartitionsRequest)  # the sensor never deletes a variant
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


class TestSweepSensor:
    def test_it_adds_exactly_the_files_variants_then_skips(self, sweep_file: Path) -> None:
        instance = dg.DagsterInstance.ephemeral()
        first = tick(instance)
        assert isinstance(first, dg.SensorResult)
        ((request,),) = [first.dynamic_partitions_requests]
        assert request.partitions_def_name == VARIANTS.name and list(request.partition_keys) == SWEEP_KEYS
        assert partitions(instance) == SWEEP_KEYS
        second = tick(instance)
        assert isinstance(second, dg.SkipReason)
        assert second.skip_message == f"every variant of {sweep_file} is a partition already"
        assert partitions(instance) == SWEEP_KEYS

    def test_it_adds_only_the_missing_ones_and_deletes_none(self, sweep_file: Path) -> None:
        instance = add_variants(dg.DagsterInstance.ephemeral(), "z4-b1-bern", "z16-b4-bern")  # one in the file, one not
        result = tick(instance)
        assert isinstance(result, dg.SensorResult)
        (request,) = result.dynamic_partitions_requests
        assert list(request.partition_keys) == [k for k in SWEEP_KEYS if k != "z4-b1-bern"]
        assert sorted(partitions(instance)) == sorted([*SWEEP_KEYS, "z16-b4-bern"])  # the UI's variant stays

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            ("variants:\n  - {latent_dim: 0}\n", "variants[0]: latent_dim=0 must be at least 1"),
            ("grid:\n  likelihood: [poisson]\n", "likelihood='poisson'"),
            ("variants: [\n", "is not valid YAML"),
            ("models: []\n", "must be a mapping with `variants:`"),
        ],
    )
    def test_a_bad_sweep_file_fails_the_tick_naming_the_file(self, sweep_file: Path, text: str, words: str) -> None:
        sweep_file.write_text(text)
        instance = dg.DagsterInstance.ephemeral()
        with pytest.raises(ConfigError, match=re.escape(f"sweep file {sweep_file}")) as info:
            tick(instance)
        assert words in str(info.value)
        assert partitions(instance) == []  # nothing of a bad file is added

    def test_a_missing_sweep_file_is_named(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        missing = tmp_path / "nowhere.yaml"
        monkeypatch.setenv(SWEEP_ENV, str(missing))
        with pytest.raises(ConfigError, match=re.escape(f"sweep file {missing} does not exist")):
            tick(dg.DagsterInstance.ephemeral())


class TestVariantsCli:
    @pytest.fixture(autouse=True)
    def _dagster_home(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        home = tmp_path / "dagster_home"
        home.mkdir()
        # As scripts/instance.sh does: the project's instance config (without one, Dagster warns on stderr).
        shutil.copy(REPO_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(home))

    @staticmethod
    def _partitions() -> list[str]:
        with dg.DagsterInstance.get() as instance:  # the instance of $DAGSTER_HOME, as the CLI's
            return partitions(instance)

    def test_add_named_keys_then_list(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["add", TINY_VARIANT, "z10-b4-gauss"]) == 0
        assert capsys.readouterr().out.strip() == f"added {TINY_VARIANT}, z10-b4-gauss"
        assert main(["add", TINY_VARIANT]) == 0
        assert capsys.readouterr().out.strip() == "every variant is a partition already"
        assert self._partitions() == [TINY_VARIANT, "z10-b4-gauss"]
        assert main(["list"]) == 0
        assert capsys.readouterr().out.splitlines() == [TINY_VARIANT, "z10-b4-gauss"]

    @pytest.mark.parametrize("keys", [["foo"], [TINY_VARIANT, "z0-b1-bern"]])
    def test_a_bad_key_adds_nothing_and_exits_2(self, keys: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["add", *keys]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"variant key {keys[-1]!r} is not of the form" in err
        assert self._partitions() == []  # every key is checked before any is added

    def test_add_without_keys_adds_the_sweep_files_variants(self, sweep_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["add"]) == 0
        assert capsys.readouterr().out.strip() == f"added {', '.join(SWEEP_KEYS)}"
        assert self._partitions() == SWEEP_KEYS

    def test_sweep_prints_the_files_keys_and_adds_nothing(self, sweep_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["sweep"]) == 0
        assert capsys.readouterr().out.splitlines() == SWEEP_KEYS
        assert self._partitions() == []
        sweep_file.write_text("variants:\n  - {latent_dim: 0}\n")
        assert main(["sweep"]) == 2
        assert f"sweep file {sweep_file}" in capsys.readouterr().err


class TestVariantOf:
    def test_a_variant_key_is_the_variant(self) -> None:
        variant = variant_of(dg.build_asset_context(partition_key="z8-b0.5-gauss"))
        assert (variant.latent_dim, variant.beta, variant.likelihood) == (8, 0.5, "gaussian")

    @pytest.mark.parametrize("key", ["foo", "z0-b1-bern", "z4-b1-poisson"])
    def test_vae_model_refuses_a_partition_that_is_not_a_variant_by_name(
        self, key: str, tmp_path: Path, mnist_slice_dir: Path
    ) -> None:
        """Any string can be added as a partition in the UI; training one names it before writing anything."""
        from mlflow.tracking import MlflowClient

        selection = ["mnist_raw", "mnist_tensors", "vae_model"]
        config = run_config(mnist_slice_dir).to_config_dict()
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=selection,
            run_config={"ops": {asset: config["ops"][asset] for asset in selection}},
            resources=default_resources(str(tmp_path), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
            instance=add_variants(dg.DagsterInstance.ephemeral(), key),
            partition_key=key,
            raise_on_error=False,
        )
        assert not result.success
        (failure,) = result.get_step_failure_events()
        assert failure.step_key == "vae_model"
        error = failure.event_specific_data.error.cause  # Dagster wraps what the step raised
        assert error.cls_name == "ConfigError"
        assert f"ConfigError: partition {key!r}: variant key {key!r} is not of the form z<latent_dim>-b<beta>-<bern|gauss>" in error.message
        assert "Delete that partition in the UI" in error.message
        assert not (tmp_path / "models" / "vae").exists()
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
