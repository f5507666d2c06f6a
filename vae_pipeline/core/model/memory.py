"""A training step's peak memory, estimated from its config before any work, and the check that it fits.

Every count that scales memory has a fixed bound in the configs, but a model's size is a product
of several of them (widths, depth, channels, batch, samples of z), so whether it fits depends on
the machine. The estimate builds the model on PyTorch's "meta" device, where tensors have shapes
but no storage, and pushes one batch through it: that counts the parameters and the activations
exactly without allocating them. It is an estimate of what training holds at its peak:

- parameters, their gradients and Adam's two moment buffers: 4 x 4 bytes per parameter;
- the batch's activations kept for backward and their gradients: 2 x 4 bytes per activation
  value, for each of the `mc_samples` draws of z (an upper bound: the encoder runs once);
- the images held in memory: training and validation splits as float32 (an upper bound: the
  training split stays uint8 until a batch is drawn);
- a fixed allowance for the interpreter, PyTorch and the libraries loaded beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from torch import nn

from vae_pipeline.core.model.config import ConfigError, ModelConfig, TrainConfig
from vae_pipeline.core.model.vae import VAE

FLOAT_BYTES = 4
RUNTIME_BYTES = 1 << 30  # measured: a process holds 0.77 GiB once the definitions (PyTorch, Dagster, MLflow) are imported
GIB = float(1 << 30)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a step needs at its peak, by part."""

    parameters: int  # weights, gradients and optimiser state
    activations: int  # one batch's forward values kept for backward, and their gradients
    data: int  # images held in memory
    runtime: int = RUNTIME_BYTES

    @property
    def total(self) -> int:
        return self.parameters + self.activations + self.data + self.runtime

    def describe(self) -> str:
        return (
            f"{self.total / GIB:.1f} GiB (parameters with gradients and Adam state {self.parameters / GIB:.1f} GiB, "
            f"one batch's activations {self.activations / GIB:.1f} GiB, images {self.data / GIB:.1f} GiB, "
            f"runtime {self.runtime / GIB:.1f} GiB)"
        )


def _conv_out(size: tuple[int, int], layer: nn.Conv2d | nn.ConvTranspose2d) -> tuple[int, int]:
    """The spatial size a (transposed) convolution maps `size` to (PyTorch's formulas)."""
    out = []
    for i, n in enumerate(size):
        k, s, p, d = layer.kernel_size[i], layer.stride[i], layer.padding[i], layer.dilation[i]
        if isinstance(layer, nn.ConvTranspose2d):
            out.append((n - 1) * s - 2 * p + d * (k - 1) + layer.output_padding[i] + 1)
        else:
            out.append((n + 2 * p - d * (k - 1) - 1) // s + 1)
    return out[0], out[1]


def activation_values(model: VAE) -> int:
    """Values one image produces in the model's layers on its way through encoder and decoder.

    The leaf modules are walked in the order they are registered, which is the order data flows
    (see `VAE`); the decoder's transposed convolutions start from the size the encoder's
    convolutions ended at, as the model mirrors them. Counted from the modules' own sizes, with
    no forward pass: PyTorch's meta-device forward would take seconds to import its shape machinery.
    """
    _, h, w = model.cfg.image_shape
    spatial: tuple[int, int] | None = (h, w)  # None once a linear layer made the values flat
    encoded, last, total = (h, w), 0, 0
    for module in model.modules():
        if list(module.children()) or isinstance(module, nn.Flatten):  # containers; a flatten is a view
            continue
        if isinstance(module, nn.Linear):
            spatial, last = None, module.out_features
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            spatial = _conv_out(encoded if spatial is None else spatial, module)
            if isinstance(module, nn.Conv2d):
                encoded = spatial
            last = module.out_channels * spatial[0] * spatial[1]
        total += last  # a ReLU adds a rectified copy of its input's values
    return total


def training_estimate(model_cfg: ModelConfig, train_cfg: TrainConfig, n_images: int) -> MemoryEstimate:
    """What fitting `model_cfg` with `train_cfg` on `n_images` images (training + validation) holds at its peak."""
    with torch.device("meta"):  # shapes only: a 40 GB model costs nothing to describe
        model = VAE(model_cfg)
    n_parameters = sum(p.numel() for p in model.parameters())
    activations = activation_values(model) * train_cfg.batch_size * train_cfg.mc_samples
    return MemoryEstimate(
        parameters=4 * FLOAT_BYTES * n_parameters,
        activations=2 * FLOAT_BYTES * activations,
        data=FLOAT_BYTES * n_images * model_cfg.input_dim,
    )


def available_bytes() -> int:
    """Memory this process can still take: the machine's available memory, or less under a cgroup (container) limit."""
    available = psutil.virtual_memory().available
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit, used = ((cgroup / f"memory.{name}").read_text().strip() for name in ("max", "current"))
    except OSError:  # no cgroup v2 files: not in a container, or an older kernel
        return available
    if limit == "max":
        return available
    return min(available, int(limit) - int(used))


def check_fits(estimate: MemoryEstimate, what: str, fix: str, available: int | None = None) -> None:
    """Refuse a step whose estimated peak memory exceeds what is available, naming the estimate and the fix."""
    available = available_bytes() if available is None else available
    if estimate.total > available:
        raise ConfigError(
            f"{what} would need about {estimate.describe()}, but this machine has {available / GIB:.1f} GiB available; "
            f"{fix}"
        )


def check_training_fits(model_cfg: ModelConfig, train_cfg: TrainConfig, n_images: int, what: str,
                        available: int | None = None) -> None:
    """Refuse training that cannot fit this machine's memory; `what` names the step and its config in the message."""
    check_fits(
        training_estimate(model_cfg, train_cfg, n_images),
        what,
        "use smaller hidden_dims, conv_channels, batch_size or mc_samples, or a machine with more memory.",
        available,
    )


__all__ = ["MemoryEstimate", "activation_values", "available_bytes", "check_fits", "check_training_fits", "training_estimate"]
