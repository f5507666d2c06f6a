"""Bad config fails before any step runs, with the field and the fix, and writes nothing."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline.core.model import memory
from vae_pipeline.core.model.config import ConfigError
from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.storage.folder import DATA_DIR_ENV
from vae_pipeline.defs.validation import (
    CONFIG_CHECKS,
    PARTITION_TAG,
    check_run_config,
    check_run_memory,
    check_run_partition,
    checked_executor,
)
from vae_pipeline_tests.helpers import BAD_TRAINING, BAD_VARIANTS, materialize_all, run_config
from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

# (A run that skips the partition check, such as materialize, fails in vae_model itself: test_variants.py.)


def _assert_names_the_key_and_the_fix(message: str, key: str) -> None:
    """The message for the bad partition `key` says the key, the form a key has, and what to do."""
    for words in (f"partition {key!r}", "z<latent_dim>-b<beta>-<bern|gauss>", "e.g. z20-b1-bern"):
        assert words in message
    assert "delete that partition in the ui" in message.lower()


# Configs of the assets after training: before, they were checked only when their step ran, so
# `iwae_k: 0` failed with "math domain error" after training and registering a new challenger.
BAD_DOWNSTREAM = {
    "iwae_k 0": ("latent_evaluation", {"iwae_k": 0}, "iwae_k=0 must be at least 1"),
    "iwae_examples 0": ("latent_evaluation", {"iwae_examples": 0}, "iwae_examples=0 must be at least 1"),
    "tsne_points 10": ("latent_evaluation", {"tsne_points": 10}, "tsne_points=10 must be at least 50"),
    "knn_k above probe rows": ("latent_evaluation", {"knn_k": 50, "probe_max_train": 20}, "knn_k=50 is above its bound 20"),
    "smoothness_steps 2": ("latent_evaluation", {"smoothness_steps": 2}, "smoothness_steps=2 must be at least 3"),
    "no prior samples": ("prior_samples", {"n_samples": 0}, "n_samples=0 must be at least 1"),
    "one-frame interpolation": ("prior_samples", {"interpolation_steps": 1}, "interpolation_steps=1 must be at least 2"),
    "empty gallery": ("reconstruction_report", {"gallery_size": 0}, "gallery_size=0 must be at least 1"),
    "version written v7": ("latent_evaluation", {"model_version": "v7"}, "'v7' is neither a version number (e.g. 7, without a 'v')"),
    "version 0": ("version_comparison", {"baseline": "0"}, "'0' is neither a version number"),
    "alias with a space": ("version_comparison", {"candidate": "my champion"}, "'my champion' is neither"),
    "too few prior draws to compare": ("version_comparison", {"prior_samples": 50}, "prior_samples=50 must be at least 200"),
    # Counts that scale memory or time: 1e8 prior samples grew past 19 GB of RSS after ingest and training.
    "1e8 prior samples": ("prior_samples", {"n_samples": 100_000_000}, "n_samples=100000000 is above its bound 10000"),
    "1e8 interpolation steps": ("prior_samples", {"interpolation_steps": 100_000_000}, "interpolation_steps=100000000 is above its bound 100"),
    "iwae_k 1e9": ("latent_evaluation", {"iwae_k": 1_000_000_000}, "iwae_k=1000000000 is above its bound 10000"),
    "tsne_points 1e8": ("latent_evaluation", {"tsne_points": 100_000_000}, "tsne_points=100000000 is above its bound 10000"),
    "gate probe rows 1e7": ("champion_comparison", {"probe_max_train": 10_000_000}, "probe_max_train=10000000 is above its bound 60000"),
}


def _bad_config(case: str, source_dir: Path = Path("/nonexistent")) -> dict:
    overrides, _ = BAD_TRAINING[case]
    return run_config(source_dir, **overrides).to_config_dict()


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # The "cuda" case means "a machine without CUDA"; on a GPU runner pretend there is none.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


class TestCheckRunConfig:
    def test_the_tiny_and_the_default_configs_pass(self, tmp_path: Path) -> None:
        check_run_config(run_config(tmp_path).to_config_dict())
        check_run_config({})

    @pytest.mark.parametrize("case", sorted(BAD_TRAINING))
    def test_each_bad_value_names_the_field_and_the_fix(self, case: str) -> None:
        with pytest.raises(ConfigError) as info:
            check_run_config(_bad_config(case))
        for words in BAD_TRAINING[case][1]:
            assert words in str(info.value)

    @pytest.mark.parametrize("case", sorted(BAD_VARIANTS))
    def test_each_bad_partition_key_names_the_key_and_the_fix(self, case: str) -> None:
        key = BAD_VARIANTS[case]
        with pytest.raises(ConfigError) as info:
            check_run_partition({PARTITION_TAG: key})
        _assert_names_the_key_and_the_fix(str(info.value), key)

    def test_a_good_partition_key_or_none_passes(self) -> None:
        check_run_partition({PARTITION_TAG: TINY_VARIANT}, ["vae_model"])
        check_run_partition({})  # a run of the unpartitioned assets (ingest, the judge, the sweep table)

    def test_partitioned_assets_without_a_variant_are_refused(self) -> None:
        """`dg launch --partition ''` launches without a partition: it trained the judge, then failed at vae_model."""
        with pytest.raises(ConfigError) as info:
            check_run_partition({}, ["vae_model", "latent_embeddings"])
        message = str(info.value)
        assert "executes vae_model, latent_embeddings, which are partitioned by model variant, but names no variant" in message
        assert "--partition z20-b1-bern" in message

    @pytest.mark.parametrize("key", ["", "z20-b1-bern "])
    def test_an_empty_or_malformed_range_end_is_refused(self, key: str) -> None:
        tags = {"dagster/asset_partition_range_start": TINY_VARIANT, "dagster/asset_partition_range_end": key}
        with pytest.raises(ConfigError, match=f"partition {key!r}"):
            check_run_partition(tags, ["vae_model"])

    @pytest.mark.parametrize("case", sorted(BAD_DOWNSTREAM))
    def test_each_bad_downstream_value_names_the_asset_field_and_fix(self, case: str) -> None:
        asset, values, words = BAD_DOWNSTREAM[case]
        with pytest.raises(ConfigError) as info:
            check_run_config({"ops": {asset: {"config": values}}})
        assert str(info.value).startswith(f"ops.{asset}.config: ") and words in str(info.value)

    def test_every_configurable_asset_is_checked(self) -> None:
        from vae_pipeline.definitions import defs

        configurable = {
            key.to_user_string()
            for assets_def in defs.assets
            if isinstance(assets_def, dg.AssetsDefinition)  # not the external raw-files asset
            for key in assets_def.keys
            if getattr(assets_def.op.config_schema.as_field().config_type, "fields", None)  # no config: Any
        }
        assert configurable and configurable <= set(CONFIG_CHECKS), configurable - set(CONFIG_CHECKS)

    def test_a_bad_ingest_value_is_named_too(self) -> None:
        with pytest.raises(ConfigError, match=r"ops.mnist_tensors.config: val_size=0 must be at least 1"):
            check_run_config({"ops": {"mnist_tensors": {"config": {"val_size": 0}}}})
        with pytest.raises(ConfigError, match=r"ops.mnist_raw.config: dataset='cifar'"):
            check_run_config({"ops": {"mnist_raw": {"config": {"dataset": "cifar"}}}})


class TestExecutorChoice:
    """The code location's executor: in-process by default, multiprocess or Celery through the run config."""

    @staticmethod
    def _execution(execution: dict | None) -> dict:
        """The executor config a launch makes of `execution.config` (None: the run config has no `execution`)."""
        from vae_pipeline.definitions import defs

        job = defs.resolve_job_def("vae_pipeline_job")
        checked = dg.validate_run_config(job, {} if execution is None else {"execution": {"config": execution}})
        return checked["execution"][job.executor_def.name]

    def test_in_process_is_the_default(self) -> None:
        assert set(self._execution(None)) == {"in_process"}

    def test_multiprocess_and_celery_are_accepted(self) -> None:
        assert self._execution({"multiprocess": {"max_concurrent": 2}})["multiprocess"]["max_concurrent"] == 2
        celery = self._execution({"celery": {"broker": "redis://127.0.0.1:6379/0", "backend": "redis://127.0.0.1:6379/1"}})
        assert celery["celery"]["broker"] == "redis://127.0.0.1:6379/0"
        assert celery["celery"]["backend"] == "redis://127.0.0.1:6379/1"

    def test_the_broker_can_come_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6380/0")
        assert self._execution({"celery": {"broker": {"env": "CELERY_BROKER_URL"}}})["celery"]["broker"] == "redis://127.0.0.1:6380/0"

    def test_a_misspelt_celery_field_is_refused_at_launch(self) -> None:
        with pytest.raises(dg.DagsterInvalidConfigError, match='unexpected config entry "brokr" at path root:execution:config:celery'):
            self._execution({"celery": {"brokr": "redis://127.0.0.1:6379/0"}})

    def test_each_choice_builds_its_executor_behind_the_check(self, data_dir: Path) -> None:
        from vae_pipeline.definitions import defs

        executor_def = defs.resolve_job_def("vae_pipeline_job").executor_def
        expected = {"in_process": "InProcessExecutor", "multiprocess": "MultiprocessExecutor", "celery": "CeleryExecutor"}
        with dg.instance_for_test() as instance:
            for key, cls in expected.items():
                config = self._execution({key: {"broker": "redis://127.0.0.1:6379/0"} if key == "celery" else {}})
                executor = executor_def.executor_creation_fn(
                    dg.InitExecutorContext(job=dg.reconstructable(checked_job), executor_def=executor_def,
                                           executor_config=config, instance=instance)
                )
                assert type(executor._inner).__name__ == cls  # the chosen one, behind the config check
        # Celery's execution loop reads the broker from the executor it is given: the wrapper
        assert executor.app_args()["broker"] == "redis://127.0.0.1:6379/0"


def checked_job() -> dg.JobDefinition:
    """The pipeline job with the code location's executor, on $VAE_PIPELINE_DATA_DIR (for dg.reconstructable).

    Dagster caches the job it rebuilds, so the data folder is fixed per module (the tracking URI is
    read from $MLFLOW_TRACKING_URI at run time).
    """
    from vae_pipeline.definitions import defs

    location = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        resources=default_resources(os.environ[DATA_DIR_ENV]),
        executor=checked_executor,
    )
    return location.resolve_job_def("vae_pipeline_job")


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("untouched")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_DIR_ENV, str(data_dir))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data_dir.parent / 'mlflow.db'}")
        yield data_dir


def _unreachable_broker() -> dict[str, object]:
    """Celery executor config naming a Redis broker and backend on a port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {
        "broker": f"redis://127.0.0.1:{port}/0",
        "backend": f"redis://127.0.0.1:{port}/1",
        # Give up on the result store after one retry (Celery's default, 20 retries a second apart, takes 20 s).
        "config_source": {"result_backend_transport_options": {"retry_policy": {"max_retries": 1}}},
    }


def _run_without_steps(run_config: dict, *, config_error: bool = False, partition: str | None = TINY_VARIANT) -> str:
    """Run the whole graph for the variant `partition` (None: no variant); assert it failed before any step started;
    return the failure's text.

    With `config_error`, also that the run is marked not to be retried: the same config fails again.
    """
    with dg.instance_for_test() as instance:
        if partition is not None:
            add_variants(instance, partition)  # as the UI's "Add partition" would, whatever the key
        result = dg.execute_job(dg.reconstructable(checked_job), instance, run_config=run_config,
                                tags={PARTITION_TAG: partition} if partition is not None else {})
        assert not result.success
        assert [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START] == []
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        if config_error:
            assert instance.get_run_by_id(result.run_id).tags.get("dagster/max_retries") == "0"
        return str(failure.event_specific_data.error)


class TestRunFailsBeforeAnyStep:
    """A real run of the whole graph (execute_in_process would swap the executor)."""

    @pytest.mark.parametrize("case", sorted(BAD_TRAINING))
    def test_bad_training_config(self, case: str, data_dir: Path, mnist_slice_dir: Path) -> None:
        message = _run_without_steps(_bad_config(case, mnist_slice_dir), config_error=True)
        for words in BAD_TRAINING[case][1]:
            assert words in message
        assert _files(data_dir) == []

    @pytest.mark.parametrize("case", sorted(BAD_VARIANTS))
    def test_bad_partition_key(self, case: str, data_dir: Path, mnist_slice_dir: Path) -> None:
        key = BAD_VARIANTS[case]
        message = _run_without_steps(run_config(mnist_slice_dir).to_config_dict(), config_error=True, partition=key)
        _assert_names_the_key_and_the_fix(message, key)
        assert _files(data_dir) == []

    def test_no_variant(self, data_dir: Path, mnist_slice_dir: Path) -> None:
        message = _run_without_steps(run_config(mnist_slice_dir).to_config_dict(), config_error=True, partition=None)
        assert "partitioned by model variant, but names no variant" in message
        assert _files(data_dir) == []

    def test_training_that_cannot_fit_the_memory(self, data_dir: Path, mnist_slice_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        """Two 8,192-wide layers are within every bound but need 3.4 GiB; on a machine with 2 GiB free the run is refused."""
        monkeypatch.setattr(memory, "available_bytes", lambda: 2 << 30)
        config = run_config(mnist_slice_dir, hidden_dims=[8192, 8192]).to_config_dict()
        message = _run_without_steps(config, config_error=True)
        assert f"ops.vae_model.config: training variant {TINY_VARIANT} would need about 3.4 GiB" in message
        assert "2.0 GiB available; use smaller hidden_dims" in message
        assert _files(data_dir) == []
        check_run_memory(run_config(mnist_slice_dir).to_config_dict(), {PARTITION_TAG: TINY_VARIANT})  # the tiny model fits

    @pytest.mark.parametrize("execution", ["in_process", "multiprocess", "celery"])
    def test_bad_evaluation_config_fails_before_training_under_every_executor(
        self, execution: str, data_dir: Path, mnist_slice_dir: Path
    ) -> None:
        config = run_config(mnist_slice_dir).to_config_dict()
        config["ops"]["latent_evaluation"]["config"]["iwae_k"] = 0
        config["execution"] = {"config": {execution: _unreachable_broker() if execution == "celery" else {}}}
        message = _run_without_steps(config, config_error=True)
        assert "ops.latent_evaluation.config: iwae_k=0 must be at least 1" in message
        assert "celery" not in message.lower()  # the broker was never contacted (it would have failed: see below)
        assert _files(data_dir) == []

    def test_under_celery_a_good_config_gets_as_far_as_the_broker(self, data_dir: Path, mnist_slice_dir: Path) -> None:
        """The control for the test above: with nothing wrong, the same run fails only at the unreachable broker."""
        config = run_config(mnist_slice_dir).to_config_dict()
        config["execution"] = {"config": {"celery": _unreachable_broker()}}
        message = _run_without_steps(config)
        assert "Celery result store" in message and "Connection refused" in message, message
        assert _files(data_dir) == []

    def test_unreachable_tracking_server(self, data_dir: Path, mnist_slice_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        with socket.socket() as s:  # a free port that nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        message = _run_without_steps(run_config(mnist_slice_dir).to_config_dict())
        assert f"MLflow tracking server http://127.0.0.1:{port} is unreachable" in message
        assert "mlflow server --host 127.0.0.1" in message
        assert _files(data_dir) == []


def test_batch_larger_than_a_slice_fails_before_training_writes_anything(tmp_path: Path, mnist_slice_dir: Path) -> None:
    """The slice has 1,000 training images: the launch check cannot know, vae_model checks before its folder exists."""
    from mlflow.tracking import MlflowClient


    result = materialize_all(tmp_path, mnist_slice_dir, batch_size=5000)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "vae_model"
    assert "batch_size=5000 is larger than the 1000 training images" in str(failure.event_specific_data.error)
    assert not (tmp_path / "models" / "vae").exists()  # the judge (models/judge) is independent of vae_model
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
