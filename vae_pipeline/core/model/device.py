"""Turning a device setting ("auto", "cpu", "cuda", "cuda:1") into a torch.device, checked."""

from __future__ import annotations

import torch

from vae_pipeline.core.model.config import ConfigError


def resolve_device(spec: str) -> torch.device:
    """The device a setting names; "auto" is CUDA when present, else the CPU.

    Asking for CUDA on a machine without it is an error, not a silent fallback: a nightly job
    that quietly trains 50x slower on the CPU is worse than one that fails and says why.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"device={spec!r} is not a device name; use auto, cpu, cuda or cuda:N.") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec!r} but this machine has no usable CUDA GPU; use device=auto or cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={spec!r} but only {torch.cuda.device_count()} CUDA device(s) exist; pick a lower index."
            )
    elif device.type != "cpu":
        raise ConfigError(f"device={spec!r} is not supported; use auto, cpu, cuda or cuda:N.")
    return device
