"""A data folder in an object store: the graph on S3 (moto's server on 127.0.0.1), read back from another machine's copy."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import fsspec
import pytest

from vae_pipeline.definitions import defs
from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.storage.folder import PipelineStorage
from vae_pipeline.defs.tracking.resource import MlflowTracking, TrackingError
from vae_pipeline_tests.helpers import run_config
from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

BUCKET = "vae-team"


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """An empty bucket on a local S3 server; credentials and endpoint as a team would set them (AWS_* variables)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as env:
        for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            env.setenv(key, value)
        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(BUCKET)
        yield f"s3://{BUCKET}/data"
    server.stop()


def bucket_files(url: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return sorted(name[len(root) + 1:] for name in fs.find(root))


def run(url: str, cache: Path, tracking_uri: str, instance: dg.DagsterInstance, mnist_slice_dir: Path,
        selection: list[str] | None = None) -> dg.ExecuteInProcessResult:
    """The whole job (or the assets of `selection`) for the tiny variant, working in the local copy `cache` ("a machine")."""
    resources = default_resources(url, tracking_uri=tracking_uri, cache_dir=str(cache))
    config = run_config(mnist_slice_dir)
    if selection is None:
        return defs.resolve_job_def("vae_pipeline_job").execute_in_process(
            run_config=config, resources=resources, instance=instance, partition_key=TINY_VARIANT, raise_on_error=False)
    return dg.materialize(
        [*defs.assets, *defs.asset_checks], selection=selection,
        run_config={"ops": {name: value for name, value in config.ops.items() if name in selection}},
        resources=resources, instance=instance, partition_key=TINY_VARIANT, raise_on_error=False,
    )


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def on_s3(s3_url: str, mnist_slice_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The whole graph materialized with its data folder on S3, from machine A's local copy."""
    tmp = tmp_path_factory.mktemp("s3_graph")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    instance = add_variants(dg.DagsterInstance.ephemeral(), TINY_VARIANT)
    first = run(s3_url, tmp / "machine_a", tracking_uri, instance, mnist_slice_dir)
    return tmp, tracking_uri, instance, first


@pytest.mark.slow
class TestDataFolderOnS3:
    def test_every_output_and_manifest_is_in_the_bucket(self, on_s3, s3_url: str) -> None:
        _, _, _, first = on_s3
        assert first.success
        files = bucket_files(s3_url)
        published = {name.split("/")[1] for name in files if name.startswith("manifests/")}
        materialized = {e.asset_key.path[-1] for e in first.get_asset_materialization_events()}
        assert materialized <= published  # every asset's manifest, so any worker finds it
        for prefix in ("tensors/", "models/vae/", "models/autoencoder/", "models/judge/", "latents/vae-mnist/",
                       "samples/vae-mnist/", "reports/vae-mnist/", "evaluation/", "results/latent_evaluation/"):
            assert any(name.startswith(prefix) for name in files), f"nothing under {prefix} in the bucket: {files}"
        vae = [name for name in files if name.startswith("models/vae/")]
        assert {Path(name).name for name in vae} >= {"checkpoint.pt", "summary.json", "mlflow_run.json"}

    def test_another_machine_reads_everything_from_the_bucket(self, on_s3, s3_url: str, mnist_slice_dir: Path) -> None:
        tmp, tracking_uri, instance, _ = on_s3
        fs, root = fsspec.core.url_to_fs(s3_url)
        report_records = [n for n in bucket_files(s3_url) if n.startswith("results/reconstruction_report/")]
        fs.rm_file(f"{root}/{report_records[0]}")  # the report is computed again; the evaluation is reused
        machine_b = tmp / "machine_b"
        second = run(s3_url, machine_b, tracking_uri, instance, mnist_slice_dir,
                     selection=["reconstruction_report", "latent_evaluation"])
        assert second.success
        assert metadata_of(second, "latent_evaluation")["reused"] is True
        assert metadata_of(second, "reconstruction_report")["reused"] is False
        # Machine B pulled what it read (manifests, latents, checkpoints) into its own copy...
        pulled = {p.relative_to(machine_b).parts[0] for p in machine_b.rglob("*") if p.is_file()}
        assert {"manifests", "latents", "models", "results"} <= pulled
        # ...and published the report it computed.
        assert any(n.startswith("results/reconstruction_report/") for n in bucket_files(s3_url))

    def test_a_wiped_bucket_is_not_papered_over_by_a_local_copy(self, on_s3, s3_url: str, mnist_slice_dir: Path) -> None:
        tmp, tracking_uri, instance, _ = on_s3
        fs, root = fsspec.core.url_to_fs(s3_url)
        fs.rm(f"{root}/models/vae", recursive=True)
        again = run(s3_url, tmp / "machine_a", tracking_uri, instance, mnist_slice_dir, selection=["vae_model"])
        assert again.success
        assert metadata_of(again, "vae_model")["reused"] is False  # machine A's copy said "finished"; the bucket did not
        assert any(n.startswith("models/vae/") and n.endswith("summary.json") for n in bucket_files(s3_url))


class TestRemoteStorage:
    def test_the_local_copy_is_the_configured_cache(self, tmp_path: Path) -> None:
        storage = PipelineStorage(data_dir=(tmp_path / "shared").as_uri(), cache_dir=str(tmp_path / "cache"))
        assert storage.is_remote and storage.root == tmp_path / "cache"
        path = storage.path("results", "x.json")
        path.write_text("{}")
        storage.publish(path)
        assert (tmp_path / "shared" / "results" / "x.json").read_text() == "{}"

    def test_the_default_local_copy_is_per_url(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("VAE_PIPELINE_CACHE_DIR", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        one, two = PipelineStorage(data_dir="s3://a/vae"), PipelineStorage(data_dir="s3://b/vae")
        assert one.root.parent == two.root.parent == tmp_path / ".cache" / "vae-pipeline"
        assert one.root != two.root

    def test_a_local_data_folder_is_used_in_place(self, tmp_path: Path) -> None:
        storage = PipelineStorage(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "unused"))
        assert not storage.is_remote and storage.root == tmp_path / "data"

    def test_discard_removes_the_remote_file_too(self, tmp_path: Path) -> None:
        storage = PipelineStorage(data_dir=(tmp_path / "shared").as_uri(), cache_dir=str(tmp_path / "cache"))
        path = storage.path("models", "vae", "f", "mlflow_run.json")
        path.write_text("{}")
        storage.publish(path)
        storage.discard(path)
        assert not path.exists() and not (tmp_path / "shared" / "models" / "vae" / "f" / "mlflow_run.json").exists()
        assert not storage.resolve("models/vae/f/mlflow_run.json").exists()

    def test_a_remote_data_folder_needs_a_tracking_server(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        storage = PipelineStorage(data_dir="s3://bucket/vae", cache_dir=str(tmp_path / "cache"))
        with pytest.raises(TrackingError, match="MLFLOW_TRACKING_URI"):
            MlflowTracking(storage=storage).uri()
        assert not (tmp_path / "cache").exists()

