"""The latent parquet table: schema, ids, one file per version, pandas filters across versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from vae_pipeline.core.evaluation import latents
from vae_pipeline.core.model.config import ConfigError
from vae_pipeline.core.model.device import resolve_device


def _split(n: int, d: int, offset: int, variational: bool = True) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(offset)
    return {
        "index": np.arange(offset, offset + n),
        "label": rng.integers(0, 10, n),
        "mu": rng.normal(size=(n, d)),
        "logvar": rng.normal(size=(n, d)) if variational else None,
        "recon_nll_at_mu": rng.uniform(50, 150, n),
        "kl": rng.uniform(10, 30, n) if variational else None,
    }


class TestLatentTable:
    def test_schema_ids_and_values(self) -> None:
        splits = {"train": _split(5, 3, 0), "val": _split(2, 3, 5), "test": _split(4, 3, 0)}
        table = latents.latent_table(splits, model_version=7, metadata={"model_name": "vae-mnist"})
        assert table.num_rows == 11
        assert table.schema.metadata[b"model_name"] == b"vae-mnist"
        assert table.schema.metadata[b"latent_dim"] == b"3"
        frame = table.to_pandas()
        assert frame["image_id"].tolist()[:2] == ["train-00000", "train-00001"]
        assert frame["image_id"].tolist()[5] == "train-00005"  # val comes from the official train file
        assert frame["image_id"].tolist()[7] == "t10k-00000"
        assert frame["image_id"].is_unique
        np.testing.assert_allclose(np.stack(frame["mu"][:5]), splits["train"]["mu"], rtol=1e-6)
        assert set(frame["model_version"]) == {7}

    def test_autoencoder_rows_have_null_logvar_and_kl(self) -> None:
        table = latents.latent_table({"test": _split(3, 2, 0, variational=False)}, model_version=1)
        assert table.column("logvar").null_count == 3 and table.column("kl").null_count == 3

    @pytest.mark.parametrize("bad", [255, -1, 128])
    def test_labels_that_int8_would_wrap_are_refused(self, bad: int) -> None:
        split = _split(3, 2, 0)
        split["label"] = np.array([1, bad, 2])
        with pytest.raises(ValueError, match="outside what the latents table stores"):
            latents.latent_table({"test": split}, model_version=1)


class TestParquetFolder:
    def test_pandas_reads_one_version_or_all(self, tmp_path: Path) -> None:
        for version in (1, 2, 3):
            table = latents.latent_table({"test": _split(4, 2, version)}, model_version=version)
            latents.write_parquet(table, tmp_path / f"v{version:04d}.parquet")
        every = pd.read_parquet(tmp_path)
        assert every.groupby("model_version").size().to_dict() == {1: 4, 2: 4, 3: 4}
        two = pd.read_parquet(tmp_path, filters=[("model_version", "==", 2)])
        assert len(two) == 4 and set(two["model_version"]) == {2}

    def test_an_autoencoder_file_and_another_latent_size_do_not_poison_the_folder(self, tmp_path: Path) -> None:
        # Before: a null fixed-size logvar list made pd.read_parquet fail for the whole folder.
        latents.write_parquet(latents.latent_table({"test": _split(4, 3, 1)}, 1), tmp_path / "v0001.parquet")
        ae = latents.latent_table({"test": _split(4, 3, 2, variational=False)}, 2)
        latents.write_parquet(ae, tmp_path / "v0002.parquet")
        latents.write_parquet(latents.latent_table({"test": _split(4, 2, 3)}, 3), tmp_path / "v0003.parquet")
        every = pd.read_parquet(tmp_path)
        assert every.groupby("model_version").size().to_dict() == {1: 4, 2: 4, 3: 4}
        assert every.loc[every.model_version == 2, "logvar"].isna().all()
        assert every.loc[every.model_version == 2, "kl"].isna().all()
        assert np.stack(every.loc[every.model_version == 3, "mu"]).shape == (4, 2)
        assert np.stack(every.loc[every.model_version == 1, "logvar"]).shape == (4, 3)

    def test_failed_write_keeps_the_previous_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = tmp_path / "v0001.parquet"
        latents.write_parquet(latents.latent_table({"test": _split(4, 2, 0)}, 1), path)
        before = path.read_bytes()

        def crash(table, where, **kwargs) -> None:
            Path(where).write_bytes(b"PAR1 half")
            raise KeyboardInterrupt  # a kill in the middle of the write

        monkeypatch.setattr(latents.pq, "write_table", crash)
        with pytest.raises(KeyboardInterrupt):
            latents.write_parquet(latents.latent_table({"test": _split(9, 2, 1)}, 1), path)
        assert path.read_bytes() == before
        assert pq.read_table(path).num_rows == 4
        assert [p.name for p in tmp_path.iterdir()] == ["v0001.parquet"]


class TestResolveDevice:
    def test_auto_and_cpu(self) -> None:
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert resolve_device("auto").type == expected
        assert resolve_device("cpu") == torch.device("cpu")

    @pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
    def test_cuda_without_a_gpu_is_an_error(self) -> None:
        with pytest.raises(ConfigError, match="no usable CUDA GPU"):
            resolve_device("cuda")

    @pytest.mark.parametrize("spec", ["tpu", "gpu0", "mps"])
    def test_unknown_devices_are_errors(self, spec: str) -> None:
        with pytest.raises(ConfigError, match="device="):
            resolve_device(spec)
