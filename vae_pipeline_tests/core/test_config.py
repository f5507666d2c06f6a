"""Configs validate themselves and round-trip through plain dicts."""

from __future__ import annotations

import pytest

from vae_pipeline.core.config import ConfigError, DataConfig, ModelConfig, TrainConfig, from_dict, to_dict


class TestValidation:
    @pytest.mark.parametrize(
        ("cls", "kwargs", "message"),
        [
            (TrainConfig, {"epochs": -1}, "epochs=-1 must be at least 1"),
            (TrainConfig, {"batch_size": 0}, "batch_size=0"),
            (TrainConfig, {"learning_rate": 0.0}, "learning_rate"),
            (TrainConfig, {"binarization": "random"}, "binarization='random' is not supported; use one of dynamic"),
            (ModelConfig, {"latent_dim": 0}, "latent_dim=0 must be at least 1"),
            (ModelConfig, {"likelihood": "poisson"}, "likelihood='poisson' is not supported; use one of bernoulli, gaussian"),
            (ModelConfig, {"architecture": "transformer"}, "architecture='transformer'"),
            (ModelConfig, {"gaussian_sigma": -0.1}, "gaussian_sigma=-0.1 must be positive"),
            (DataConfig, {"dataset": "cifar10"}, "dataset='cifar10' is not supported"),
            (DataConfig, {"val_size": 60_000}, "val_size=60000"),
        ],
    )
    def test_bad_values_name_the_field_and_the_fix(self, cls: type, kwargs: dict, message: str) -> None:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            cls(**kwargs)


class TestRoundTrip:
    def test_to_dict_and_back(self) -> None:
        cfg = ModelConfig(hidden_dims=(500, 500), latent_dim=50)
        assert to_dict(cfg)["hidden_dims"] == [500, 500]
        assert from_dict(ModelConfig, to_dict(cfg)) == cfg

    def test_unknown_field_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="unknown TrainConfig field 'epoch'"):
            from_dict(TrainConfig, {"epoch": 3})
