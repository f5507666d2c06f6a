"""State that never gets stuck: reuse checks what it reuses, and the data folder can move.

Each test starts from a copy of one materialized data folder (the session's tiny graph: a
real-MNIST slice, the tiny config, MLflow's default store inside the data folder), does to it what a user or a crash does,
and materializes the whole graph again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from vae_pipeline.core.model.checkpoint import CheckpointError
from vae_pipeline.definitions import defs
from vae_pipeline.defs.identity.lineage import load_trained_model
from vae_pipeline.defs.manifests import read_manifest
from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.storage.folder import PipelineStorage
from vae_pipeline_tests.helpers import run_config
from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _no_tracking_uri_from_the_environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:  # the default store: sqlite inside the data folder
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield


def materialize(data_dir: Path, source_dir: Path, tracking_uri: str | None = None) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """The whole job for the tiny variant on `data_dir`; returns the result and the run's log messages."""
    instance = add_variants(dg.DagsterInstance.ephemeral(), TINY_VARIANT)
    result = defs.resolve_job_def("vae_pipeline_job").execute_in_process(
        run_config=run_config(source_dir),
        resources=default_resources(str(data_dir), tracking_uri=tracking_uri),
        instance=instance,
        partition_key=TINY_VARIANT,
        raise_on_error=False,
    )
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result, messages


def client_of(data_dir: Path) -> MlflowClient:
    uri = f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions(client: MlflowClient) -> list[tuple[int, str]]:
    return sorted((int(v.version), v.run_id) for v in client.search_model_versions("name='vae-mnist'"))


def vae_folder(data_dir: Path) -> Path:
    (folder,) = (data_dir / "models" / "vae").iterdir()
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vae_manifest(result: dg.ExecuteInProcessResult) -> dict:
    return result.asset_materializations_for_node("vae_model")[0].metadata


@pytest.fixture
def base(tiny_graph) -> Path:
    """One finished materialization (the session's tiny graph): VAE v1 registered and champion, everything downstream written."""
    assert versions(client_of(tiny_graph.data_dir))[0][0] == 1
    return tiny_graph.data_dir


@pytest.fixture
def copy(tiny_graph_copy: Path) -> Path:
    return tiny_graph_copy


class TestReuseChecksWhatItReuses:
    def test_a_lost_tracking_store_is_refilled_without_retraining(self, copy: Path, mnist_slice_dir: Path) -> None:
        # Before: "not retraining", then `Run with id=... not found` in prior_samples, on every run.
        checkpoint = vae_folder(copy) / "checkpoint.pt"
        before = sha256(checkpoint)
        shutil.rmtree(copy / "mlflow")
        result, messages = materialize(copy, mnist_slice_dir)
        assert result.success
        assert any("is not on" in m and "logging the trained model there anew, without retraining" in m for m in messages)
        assert sha256(checkpoint) == before  # not retrained
        client = client_of(copy)
        ((version, run_id),) = versions(client)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "val_neg_elbo" in run.data.metrics and "eval_iwae_nll" in run.data.metrics
        assert int(client.get_model_version_by_alias("vae-mnist", "champion").version) == version

    def test_another_tracking_server_gets_the_model_logged_there(self, copy: Path, mnist_slice_dir: Path, tmp_path: Path) -> None:
        other = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
        (tmp_path / "other").mkdir()
        result, _ = materialize(copy, mnist_slice_dir, tracking_uri=other)
        assert result.success
        client = MlflowClient(tracking_uri=other, registry_uri=other)
        ((_, run_id),) = sorted((int(v.version), v.run_id) for v in client.search_model_versions("name='vae-mnist'"))
        assert json.loads((vae_folder(copy) / "summary.json").read_text())["mlflow_run_id"] == run_id
        assert versions(client_of(copy)) == versions(client_of(copy))  # the first store is left as it was
        assert len(versions(client_of(copy))) == 1

    def test_a_truncated_checkpoint_is_named_and_retrained_and_the_champion_run_is_untouched(
        self, copy: Path, mnist_slice_dir: Path
    ) -> None:
        # Before: "not retraining", then torch's "PytorchStreamReader failed reading zip archive"
        # downstream; deleting summary.json to force a retrain flipped the champion's run to FAILED.
        checkpoint = vae_folder(copy) / "checkpoint.pt"
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
        client = client_of(copy)
        ((_, champion_run),) = versions(client)
        result, messages = materialize(copy, mnist_slice_dir)
        assert result.success, [str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure]
        assert any(str(checkpoint) in m and "does not match the sha256" in m and "retraining" in m for m in messages)
        assert [v for v, _ in versions(client)] == [1, 2]
        assert client.get_run(champion_run).info.status == "FINISHED"

    def test_a_corrupt_partial_checkpoint_starts_afresh_in_a_new_run(self, copy: Path, mnist_slice_dir: Path) -> None:
        folder = vae_folder(copy)
        old_run = json.loads((folder / "summary.json").read_text())["mlflow_run_id"]
        (folder / "summary.json").unlink()  # what forcing a retrain by hand looks like
        (folder / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
        result, messages = materialize(copy, mnist_slice_dir)
        assert result.success
        assert any("cannot resume" in m and "truncated or corrupt" in m for m in messages)
        client = client_of(copy)
        assert client.get_run(old_run).info.status == "FINISHED"  # the champion's run was not reopened
        assert json.loads((folder / "summary.json").read_text())["mlflow_run_id"] != old_run

    def test_a_missing_registered_version_is_registered_once(self, copy: Path, mnist_slice_dir: Path) -> None:
        client = client_of(copy)
        ((_, run_id),) = versions(client)
        client.delete_model_version("vae-mnist", "1")
        result, messages = materialize(copy, mnist_slice_dir)
        assert result.success
        assert any("has no version of run" in m for m in messages)
        assert versions(client) == [(2, run_id)]
        again, _ = materialize(copy, mnist_slice_dir)
        assert again.success and versions(client) == [(2, run_id)]  # idempotent


class TestTheDataFolderCanMove:
    def test_no_stored_record_names_the_data_folder(self, base: Path) -> None:
        for path in [*base.glob("manifests/**/*.json"), *base.glob("models/**/*.json")]:
            assert str(base) not in path.read_text(), path

    def test_a_moved_folder_works_and_reuses_everything(self, base: Path, tmp_path: Path, mnist_slice_dir: Path) -> None:
        old, moved = tmp_path / "old" / "data", tmp_path / "elsewhere" / "data"
        shutil.copytree(base, old)
        moved.parent.mkdir()
        old.rename(moved)
        result, _ = materialize(moved, mnist_slice_dir)
        assert result.success
        assert vae_manifest(result)["reused"].value is True
        client = client_of(moved)
        assert len(versions(client)) == 1
        experiment = client.get_experiment_by_name("vae-pipeline")
        assert experiment.artifact_location == (moved / "mlflow" / "artifacts").as_uri()
        run_id = versions(client)[0][1]
        assert client.get_run(run_id).info.artifact_uri.startswith(moved.as_uri())
        assert any((moved / "mlflow" / "artifacts" / run_id).rglob("metrics.json"))  # written where the folder is now
        assert not old.exists()  # nothing wrote to the old place

    def test_a_copy_never_writes_into_the_original(self, base: Path, tmp_path: Path, mnist_slice_dir: Path) -> None:
        snapshot = {p: sha256(p) for p in base.rglob("*") if p.is_file()}
        copied = tmp_path / "copy" / "data"
        shutil.copytree(base, copied)
        result, _ = materialize(copied, mnist_slice_dir)
        assert result.success
        assert {p: sha256(p) for p in base.rglob("*") if p.is_file()} == snapshot  # not one byte changed
        assert any((copied / "mlflow" / "artifacts").rglob("metrics.json"))


class TestWrongKindOfCheckpoint:
    def test_an_autoencoder_checkpoint_where_the_vae_belongs_is_refused_by_name(self, base: Path) -> None:
        storage = PipelineStorage(data_dir=str(base))
        summary = read_manifest("vae_model", json.loads((vae_folder(base) / "summary.json").read_text()))
        (ae_folder,) = (base / "models" / "autoencoder").iterdir()
        wrong = dataclasses.replace(summary, checkpoint=storage.relative(ae_folder / "checkpoint.pt"))
        with pytest.raises(CheckpointError, match=r"holds a plain auto-encoder, but a VAE is needed"):
            load_trained_model(storage, wrong, "cpu")

    def test_an_autoencoder_checkpoint_copied_over_the_vae_is_not_reused(self, copy: Path, mnist_slice_dir: Path) -> None:
        (ae_folder,) = (copy / "models" / "autoencoder").iterdir()
        shutil.copy(ae_folder / "checkpoint.pt", vae_folder(copy) / "checkpoint.pt")
        result, messages = materialize(copy, mnist_slice_dir)
        assert result.success and any("does not match the sha256" in m for m in messages)
        import pandas as pd

        assert pd.read_parquet(copy / "latents" / "vae-mnist")["logvar"].notna().all()


class TestWriteErrors:
    def test_a_full_disk_while_checkpointing_names_the_path_and_ends_the_mlflow_run(
        self, tmp_path: Path, mnist_slice_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Before: `basic_ios::clear: iostream error` and an MLflow run left RUNNING.
        import errno

        real = Path.write_bytes

        def full_disk(self: Path, data: bytes) -> int:
            if self.name.startswith(".checkpoint.pt."):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", full_disk)
        data_dir = tmp_path / "data"
        result, _ = materialize(data_dir, mnist_slice_dir)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        message = str(failure.event_specific_data.error)
        assert failure.step_key == "vae_model"
        assert "could not write" in message and "checkpoint.pt: No space left on device" in message
        assert "VAE_PIPELINE_DATA_DIR" in message
        client = client_of(data_dir)
        runs = client.search_runs([client.get_experiment_by_name("vae-pipeline").experiment_id])
        assert [r.info.status for r in runs] == ["FAILED"]
