"""Checkpoints load with torch.load(weights_only=True): a pickled object in one is refused, never run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from vae_pipeline.core.model.checkpoint import CHECKPOINT_FORMAT_VERSION, load_checkpoint, load_model
from vae_pipeline.core.model.config import ModelConfig, TrainConfig
from vae_pipeline.core.model.train import fit
from vae_pipeline.core.model.vae import build_model


class _Payload:
    """What an attacker would pickle: unpickling it runs code (here: creates a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.makedirs, (str(self.marker),))


def test_a_checkpoint_with_a_pickled_object_is_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, "model_state": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        load_model(path, "cpu")  # the serving model and every asset load through here
    assert not marker.exists()


def test_the_checkpoints_fit_writes_load_under_weights_only(tmp_path: Path) -> None:
    model = build_model(ModelConfig(hidden_dims=(8,), latent_dim=2), seed=0)
    x = torch.rand(32, 1, 28, 28)
    fit(model, x, x[:8], TrainConfig(epochs=1, batch_size=16), "cpu", checkpoint_path=tmp_path / "ok.pt")
    state = torch.load(tmp_path / "ok.pt", weights_only=True)  # what load_checkpoint does; no exception
    assert state["epoch"] == 1 and load_checkpoint(tmp_path / "ok.pt")["epoch"] == 1
