"""The local copy of a remote data folder: push after writing, pull before reading, the remote is the truth."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from vae_pipeline.defs.storage.mirror import Mirror, MirrorError, is_url


@pytest.fixture(params=["file", "memory"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A remote folder: a mounted one (file://, written by rename) or an object-store-like one (memory://, whole PUTs)."""
    if request.param == "file":
        return (tmp_path / "remote").as_uri()
    return f"memory://mirror-{uuid.uuid4().hex}"


def two_machines(url: str, tmp_path: Path) -> tuple[Mirror, Mirror]:
    return Mirror(url, tmp_path / "machine_a"), Mirror(url, tmp_path / "machine_b")


def write(mirror: Mirror, relative: str, data: bytes) -> Path:
    path = mirror.local / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def raising(error: OSError) -> Callable[..., None]:
    """A stand-in for a filesystem call that fails with `error` (a full disk, a denied bucket)."""

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    return fail


class TestPushAndPull:
    def test_a_pushed_file_is_pulled_on_another_machine(self, remote_url: str, tmp_path: Path) -> None:
        a, b = two_machines(remote_url, tmp_path)
        a.push(write(a, "models/vae/abc/checkpoint.pt", b"weights"))
        pulled = b.pull("models/vae/abc/checkpoint.pt")
        assert pulled == b.local / "models/vae/abc/checkpoint.pt"
        assert pulled.read_bytes() == b"weights"

    def test_a_folder_is_pulled_whole(self, remote_url: str, tmp_path: Path) -> None:
        a, b = two_machines(remote_url, tmp_path)
        write(a, "latents/vae-mnist/v0001.parquet", b"one")
        write(a, "latents/vae-mnist/v0002.parquet", b"two")
        a.push(a.local / "latents")
        folder = b.pull("latents/vae-mnist")
        assert sorted(p.name for p in folder.iterdir()) == ["v0001.parquet", "v0002.parquet"]

    def test_a_rewritten_file_is_pulled_again(self, remote_url: str, tmp_path: Path) -> None:
        a, b = two_machines(remote_url, tmp_path)
        path = write(a, "results/x.json", b"old")
        a.push(path)
        assert b.pull("results/x.json").read_bytes() == b"old"
        path.write_bytes(b"newer")
        a.push(path)
        assert b.pull("results/x.json").read_bytes() == b"newer"

    def test_an_unchanged_file_is_neither_uploaded_nor_downloaded_again(self, remote_url: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        a, b = two_machines(remote_url, tmp_path)
        path = write(a, "tensors/store.safetensors", b"x" * 1000)
        a.push(path)
        b.pull("tensors/store.safetensors")
        calls: list[str] = []
        monkeypatch.setattr(a.fs, "put_file", lambda *args, **kw: calls.append("put"))
        monkeypatch.setattr(b.fs, "get_file", lambda *args, **kw: calls.append("get"))
        a.push(path)
        b.pull("tensors/store.safetensors")
        b.pull("tensors")
        assert calls == []

    def test_a_local_copy_changed_by_hand_is_replaced_by_the_remote(self, remote_url: str, tmp_path: Path) -> None:
        a, b = two_machines(remote_url, tmp_path)
        a.push(write(a, "summary.json", b'{"done": true}'))
        pulled = b.pull("summary.json")
        pulled.write_bytes(b"garbage, longer than before")
        assert b.pull("summary.json").read_bytes() == b'{"done": true}'


class TestTheRemoteIsTheTruth:
    def test_a_file_the_remote_no_longer_holds_is_removed_locally(self, remote_url: str, tmp_path: Path) -> None:
        a, b = two_machines(remote_url, tmp_path)
        a.push(write(a, "models/vae/abc/summary.json", b"finished"))
        b.delete("models/vae/abc/summary.json")  # a wiped bucket, as seen from machine a
        assert not a.pull("models/vae/abc/summary.json").exists()

    def test_a_file_never_published_is_left_to_the_step_writing_it(self, remote_url: str, tmp_path: Path) -> None:
        a, _ = two_machines(remote_url, tmp_path)
        written = write(a, "results/x/v0001.json", b"about to be pushed")
        assert a.pull("results/x/v0001.json").read_bytes() == b"about to be pushed"
        a.pull("results")
        assert written.is_file()

    def test_a_folder_pull_drops_files_the_remote_no_longer_holds(self, remote_url: str, tmp_path: Path) -> None:
        a, b = two_machines(remote_url, tmp_path)
        a.push(write(a, "models/vae/abc/checkpoint.pt", b"w"))
        a.push(write(a, "models/vae/abc/summary.json", b"finished"))
        b.pull("models/vae/abc")
        a.delete("models/vae/abc/summary.json")
        folder = b.pull("models/vae/abc")
        assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]

    def test_a_folder_pull_leaves_a_file_another_process_has_not_published_yet(self, remote_url: str,
                                                                                tmp_path: Path) -> None:
        a, _ = two_machines(remote_url, tmp_path)
        a.push(write(a, "latents/vae-mnist/v0001.parquet", b"one"))
        in_progress = write(a, "latents/vae-mnist/v0002.parquet", b"two, written, about to be pushed")
        a.pull("latents/vae-mnist")
        assert in_progress.read_bytes() == b"two, written, about to be pushed"

    def test_delete_removes_both_sides_so_no_pull_brings_it_back(self, remote_url: str, tmp_path: Path) -> None:
        a, b = two_machines(remote_url, tmp_path)
        a.push(write(a, "models/vae/abc/mlflow_run.json", b'{"run_id": "finished"}'))
        b.pull("models/vae/abc/mlflow_run.json")
        a.delete("models/vae/abc/mlflow_run.json")
        assert not (a.local / "models/vae/abc/mlflow_run.json").exists()
        assert not b.pull("models/vae/abc/mlflow_run.json").exists()


class TestFailures:
    def test_a_failed_upload_leaves_the_remote_object_as_it_was(self, remote_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
        a, b = two_machines(remote_url, tmp_path)
        path = write(a, "checkpoint.pt", b"epoch 1")
        a.push(path)
        path.write_bytes(b"epoch 2")
        monkeypatch.setattr(a.fs, "put_file", raising(OSError(28, "No space left on device")))
        with pytest.raises(MirrorError, match="could not write .*checkpoint.pt.*No space left"):
            a.push(path)
        assert b.pull("checkpoint.pt").read_bytes() == b"epoch 1"

    def test_a_mounted_remote_is_written_beside_and_renamed_over(self, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        a, b = two_machines((tmp_path / "remote").as_uri(), tmp_path)
        path = write(a, "x/y.bin", b"epoch 1")
        a.push(path)
        path.write_bytes(b"epoch 2, half written when the copy stops")
        monkeypatch.setattr(a.fs, "mv", raising(OSError(5, "Input/output error")))
        with pytest.raises(MirrorError):
            a.push(path)
        assert [p.name for p in (tmp_path / "remote" / "x").iterdir()] == ["y.bin"]  # no partial file left
        assert b.pull("x/y.bin").read_bytes() == b"epoch 1"

    def test_a_scheme_without_its_filesystem_names_the_package(self, tmp_path: Path) -> None:
        with pytest.raises(MirrorError, match="Install the fsspec filesystem"):
            Mirror("nosuchscheme://bucket/vae", tmp_path / "local")

    def test_a_failed_download_names_the_object(self, remote_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        a, b = two_machines(remote_url, tmp_path)
        a.push(write(a, "tensors/s.safetensors", b"s"))
        monkeypatch.setattr(b.fs, "get_file", raising(PermissionError(13, "Access Denied")))
        with pytest.raises(MirrorError, match="could not read .*tensors/s.safetensors.*Access Denied"):
            b.pull("tensors/s.safetensors")
        assert not (b.local / "tensors" / "s.safetensors").exists()


def test_urls_and_paths_are_told_apart() -> None:
    assert is_url("s3://bucket/vae") and is_url("file:///mnt/shared") and is_url("memory://x")
    assert not is_url("data") and not is_url("/mnt/shared/vae") and not is_url("~/data")

