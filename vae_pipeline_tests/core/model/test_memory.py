"""A training step's peak memory is estimated from its config alone, and a step that cannot fit is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vae_pipeline.core.model.config import ConfigError, ModelConfig, TrainConfig
from vae_pipeline.core.model.memory import GIB, activation_values, check_training_fits, training_estimate
from vae_pipeline.core.model.vae import build_model

CONFIGS = {
    "mlp default": ModelConfig(),
    "mlp two layers": ModelConfig(hidden_dims=(300, 200), latent_dim=7),
    "auto-encoder": ModelConfig(variational=False),
    "conv default": ModelConfig(architecture="conv"),
    "conv three layers": ModelConfig(architecture="conv", conv_channels=(8, 16, 32), hidden_dims=(64, 32)),
    "conv odd colour image": ModelConfig(architecture="conv", conv_channels=(5, 6), image_shape=(3, 13, 9)),
}


def _counted_by_a_forward_pass(model: nn.Module) -> int:
    """Values the leaf modules output for one image, counted by hooks on a real forward pass."""
    counted = [0]
    leaves = [m for m in model.modules() if not list(m.children()) and not isinstance(m, nn.Flatten)]
    hooks = [m.register_forward_hook(lambda _m, _i, out: counted.__setitem__(0, counted[0] + out[0].numel())) for m in leaves]
    mu, _ = model.encode(torch.zeros(1, *model.cfg.image_shape))
    model.decode(mu)
    for hook in hooks:
        hook.remove()
    return counted[0]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_activations_are_counted_exactly_without_a_forward_pass(name: str) -> None:
    model = build_model(CONFIGS[name])
    assert activation_values(model) == _counted_by_a_forward_pass(model)


def test_parameters_count_weights_gradients_and_both_adam_moments() -> None:
    cfg = ModelConfig(hidden_dims=(300, 200))
    n_parameters = sum(p.numel() for p in build_model(cfg).parameters())
    assert training_estimate(cfg, TrainConfig(), n_images=0).parameters == 16 * n_parameters


def test_a_model_too_large_for_the_memory_is_refused_naming_the_estimate() -> None:
    """Within every bound, yet 56 GiB with gradients and Adam: refused before a single weight is allocated."""
    wide = ModelConfig(hidden_dims=(16_384,) * 8)
    with pytest.raises(ConfigError) as info:
        check_training_fits(wide, TrainConfig(), 60_000, "vae_model[z20-b1-bern]", available=int(24 * GIB))
    message = str(info.value)
    assert message.startswith("vae_model[z20-b1-bern] would need about 58.1 GiB")
    assert "parameters with gradients and Adam state 56.4 GiB" in message and "24.0 GiB available" in message
    assert "use smaller hidden_dims, conv_channels, batch_size or mc_samples" in message


def test_the_batch_and_the_samples_of_z_scale_the_activations() -> None:
    cfg = ModelConfig()
    one = training_estimate(cfg, TrainConfig(batch_size=100), 0).activations
    assert training_estimate(cfg, TrainConfig(batch_size=200), 0).activations == 2 * one
    assert training_estimate(cfg, TrainConfig(batch_size=100, mc_samples=5), 0).activations == 5 * one


def test_the_default_training_fits_in_two_gib() -> None:
    check_training_fits(ModelConfig(), TrainConfig(), 60_000, "vae_model", available=int(2 * GIB))
