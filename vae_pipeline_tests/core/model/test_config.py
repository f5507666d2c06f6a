"""Configs validate themselves and round-trip through plain dicts."""

from __future__ import annotations

import pytest

from vae_pipeline.core.evaluation.judge import JudgeConfig
from vae_pipeline.core.model.config import (
    ComparisonConfig,
    ConfigError,
    DataConfig,
    EvaluationConfig,
    GateConfig,
    ModelConfig,
    SamplesConfig,
    TrainConfig,
    from_dict,
    to_dict,
)


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


class TestBounds:
    """Every count that scales time or memory has an upper bound, refused before any work with the field, bound and why."""

    @pytest.mark.parametrize(
        ("cls", "kwargs", "words"),
        [
            (SamplesConfig, {"n_samples": 100_000_000}, "n_samples=100000000 is above its bound 10000: the decoded images"),
            (SamplesConfig, {"interpolation_steps": 100_000_000}, "interpolation_steps=100000000 is above its bound 100"),
            (SamplesConfig, {"n_interpolations": 1000}, "n_interpolations=1000 is above its bound 100"),
            (EvaluationConfig, {"iwae_k": 1_000_000_000}, "iwae_k=1000000000 is above its bound 10000: each image costs k"),
            (EvaluationConfig, {"iwae_examples": 1_000_000}, "iwae_examples=1000000 is above its bound 10000"),
            (EvaluationConfig, {"tsne_points": 100_000_000}, "tsne_points=100000000 is above its bound 10000"),
            (EvaluationConfig, {"probe_max_train": 10_000_000}, "probe_max_train=10000000 is above its bound 60000"),
            (EvaluationConfig, {"regularity_samples": 1_000_000}, "regularity_samples=1000000 is above its bound 10000"),
            (GateConfig, {"iwae_k": 50_000}, "iwae_k=50000 is above its bound 10000"),
            (ComparisonConfig, {"prior_samples": 1_000_000}, "prior_samples=1000000 is above its bound 10000"),
            (ModelConfig, {"hidden_dims": (100_000, 100_000)}, "hidden_dims[0]=100000 is above its bound 16384: each layer's"),
            (ModelConfig, {"hidden_dims": (64,) * 17}, "must list between 1 and 16 widths"),
            (ModelConfig, {"latent_dim": 1_000_000_000}, "latent_dim=1000000000 is above its bound 784: a code of more numbers"),
            (ModelConfig, {"architecture": "conv", "conv_channels": (4096,)}, "conv_channels[0]=4096 is above its bound 1024"),
            (TrainConfig, {"batch_size": 100_000}, "batch_size=100000 is above its bound 59999"),
            (TrainConfig, {"mc_samples": 100_000}, "mc_samples=100000 is above its bound 1000"),
            (TrainConfig, {"epochs": 1_000_000}, "epochs=1000000 is above its bound 1000"),
            (JudgeConfig, {"channels": (16, 100_000)}, "channels=100000 is above its bound 1024"),
        ],
    )
    def test_an_unbounded_count_is_refused_with_its_bound_and_why(self, cls: type, kwargs: dict, words: str) -> None:
        with pytest.raises(ConfigError) as info:
            cls(**kwargs)
        assert words in str(info.value)
        assert "use at most" in str(info.value) or "between" in str(info.value)

    @pytest.mark.parametrize("value", [2.7, 3.0, True, "4"])
    def test_a_latent_size_that_is_not_a_whole_number_is_refused_not_truncated(self, value: object) -> None:
        with pytest.raises(ConfigError, match=r"latent_dim=.* must be a whole number between 1 and 784"):
            ModelConfig(latent_dim=value)  # type: ignore[arg-type]

    def test_the_defaults_are_within_every_bound(self) -> None:
        for cls in (DataConfig, ModelConfig, TrainConfig, SamplesConfig, EvaluationConfig, GateConfig, ComparisonConfig, JudgeConfig):
            cls()
