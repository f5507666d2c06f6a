"""Checkpoints: self-describing files (model, optimizer, configs, epoch, history) read without pickle.

A checkpoint is written atomically and read with `torch.load(weights_only=True)`, so a file from
elsewhere can hold tensors and plain values but never code that runs on load. Every way a file
can be unusable (missing, truncated, from another format version, of the wrong kind for its use)
is a `CheckpointError` that names the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from vae_pipeline.core.atomic import atomic_path
from vae_pipeline.core.model.config import ConfigError, ModelConfig, from_dict
from vae_pipeline.core.model.vae import VAE

CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the fix."""


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a crash while writing leaves the previous checkpoint intact.

    The state is serialized in memory first and written with Python's file API, so a full or
    read-only disk raises an OSError naming the path (torch's own writer reports only
    "basic_ios::clear: iostream error").
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes: what a cached result records of its checkpoint, and checks on reuse."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read a checkpoint onto the CPU with `weights_only=True` (no pickled code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train with checkpoint_path={str(path)!r} first.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise  # a pickled object was refused: say so as torch says it, never run it
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({str(exc).splitlines()[0]}); delete it and "
            "re-materialize the asset that trains it."
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict; retrain.")
    version = state.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version={version}, this code reads {CHECKPOINT_FORMAT_VERSION}; "
            "retrain, or load it with the version of vae_pipeline that wrote it."
        )
    return state


def load_model(path: Path | str, device: torch.device | str, *, variational: bool | None = None) -> VAE:
    """The model stored in a checkpoint, rebuilt from its config, on `device`, in eval mode.

    With `variational`, the checkpoint must hold that kind of model (True: a VAE, False: a plain
    auto-encoder); an auto-encoder where a VAE belongs has no posterior variance to report.
    """
    state = load_checkpoint(path)
    try:
        cfg = from_dict(ModelConfig, state["model_config"])
    except (KeyError, ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} has no usable model_config ({exc}); retrain.") from exc
    if variational is not None and cfg.variational != variational:
        kinds = {True: "a VAE", False: "a plain auto-encoder"}
        raise CheckpointError(
            f"checkpoint {path} holds {kinds[cfg.variational]}, but {kinds[variational]} is needed here; "
            "point the asset at the right checkpoint or re-materialize the training asset."
        )
    model = VAE(cfg)
    try:
        model.load_state_dict(state["model_state"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path}'s weights do not fit its own model_config ({exc}); retrain.") from exc
    return model.to(device).eval()


__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "file_sha256",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
