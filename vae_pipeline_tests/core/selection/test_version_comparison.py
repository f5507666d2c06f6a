"""Two versions side by side: one protocol for both, likelihood figures compared only when they score the same thing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vae_pipeline.core.data.tensor_store import Split, TensorStore
from vae_pipeline.core.evaluation.judge import Judge, JudgeConfig, judge_outputs
from vae_pipeline.core.evaluation.regularity import SampleQuality
from vae_pipeline.core.model.config import ComparisonConfig, ConfigError, ModelConfig
from vae_pipeline.core.model.vae import build_model
from vae_pipeline.core.selection.protocol import MeasurementProtocol
from vae_pipeline.core.selection.version_comparison import (
    VersionFigures,
    comparison_markdown,
    comparison_protocol,
    incomparable_note,
    per_class_deltas,
    per_class_markdown,
    version_figures,
)

PRIOR = SampleQuality(n=2000, fd=50.0, mean_max_prob=0.9, confident_share=0.8, class_coverage=0.95)
SHARED = MeasurementProtocol(dataset="mnist", data_version="v1", split="test", likelihood="", seed=0, iwae_k=1000,
                             iwae_examples=60, probe_rows=60, judge="j", prior_samples=2000)
BERNOULLI = VersionFigures(
    protocol=SHARED.for_likelihood("bernoulli"), latent_dim=4, iwae_nll=100.0, iwae_nll_se=0.3,
    recon_nll_at_mu=80.0, kl=20.0, probe_accuracy=0.9, active_units=4.0, prior=PRIOR,
    per_class_recon={k: 70.0 + k for k in range(10)},
)


def _store(n: int = 60) -> TensorStore:
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 28, 28, generator=gen) * 255).to(torch.uint8)
    split = Split(images=images, labels=torch.arange(n) % 10, index=torch.arange(n))
    return TensorStore({"train": split, "val": split, "test": split}, {"dataset": "mnist", "content_sha256": "v1"})


class TestProtocol:
    def test_is_on_the_test_split_and_capped_by_its_size(self) -> None:
        protocol = comparison_protocol(_store(), ComparisonConfig(iwae_examples=2000, probe_max_train=10_000), judge="j1")
        assert (protocol.split, protocol.iwae_examples, protocol.probe_rows, protocol.judge) == ("test", 60, 60, "j1")
        assert protocol.likelihood == ""  # shared by both versions; each is scored in its own

    def test_too_few_prior_samples_for_a_frechet_distance_are_refused(self) -> None:
        with pytest.raises(ConfigError, match="prior_samples=100"):
            ComparisonConfig(prior_samples=100)


class TestVersionFigures:
    def test_both_versions_see_the_same_draws_so_a_model_against_itself_has_no_difference(self) -> None:
        store = _store()
        protocol = comparison_protocol(store, ComparisonConfig(iwae_k=5, iwae_examples=20, probe_max_train=40, prior_samples=200), "j")
        judge = Judge(JudgeConfig()).eval()
        reference, _ = judge_outputs(judge, store["test"].float_images(), "cpu")
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3), seed=0)
        a = version_figures(model, store, protocol, judge, reference, "cpu")
        b = version_figures(model, store, protocol, judge, reference, "cpu")
        assert a == b and a.protocol == protocol.for_likelihood("bernoulli") and a.protocol.scoring == "binarized, seed 0"
        assert sorted(a.per_class_recon) == list(range(10)) and a.kl > 0 and a.iwae_nll > 0
        other = version_figures(build_model(ModelConfig(hidden_dims=(16,), latent_dim=3), seed=1), store, protocol, judge, reference, "cpu")
        assert other.iwae_nll != a.iwae_nll

    def test_an_autoencoder_is_refused(self) -> None:
        store = _store()
        protocol = comparison_protocol(store, ComparisonConfig(prior_samples=200), "j")
        ae = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3, variational=False), seed=0)
        with pytest.raises(ValueError, match="plain auto-encoder"):
            version_figures(ae, store, protocol, Judge(JudgeConfig()).eval(), torch.zeros(60, 128), "cpu")


class TestSideBySide:
    def test_per_class_change_is_candidate_minus_baseline(self) -> None:
        better = dataclasses.replace(BERNOULLI, per_class_recon={k: 60.0 + k for k in range(10)})
        deltas = per_class_deltas(BERNOULLI, better)
        assert list(deltas.index) == list(range(10))
        assert (deltas["change"] == -10.0).all() and deltas.loc[3, "baseline"] == 73.0 and deltas.loc[3, "candidate"] == 63.0
        assert "| 3 | 73.00 | 63.00 | -10.00 |" in per_class_markdown(deltas, None)

    def test_a_lower_nll_reads_better_and_a_lower_probe_reads_worse(self) -> None:
        candidate = dataclasses.replace(BERNOULLI, iwae_nll=98.0, probe_accuracy=0.85)
        table = comparison_markdown("v1", BERNOULLI, "v2", candidate, comparison_protocol(_store(), ComparisonConfig(), "j"))
        assert "| 100.00 | 98.00 | -2.00 (better) |" in table
        assert "| 0.9000 | 0.8500 | -0.0500 (worse) |" in table

    def test_a_gaussian_version_is_not_compared_on_likelihood_with_a_bernoulli_one(self) -> None:
        gaussian = dataclasses.replace(BERNOULLI, protocol=SHARED.for_likelihood("gaussian"), iwae_nll=-700.0)
        note = incomparable_note(BERNOULLI, gaussian)
        assert note == ("measured differently (baseline vs candidate: likelihood: bernoulli vs gaussian (a Bernoulli NLL of "
                        "binarized pixels and a Gaussian density of grey values are different quantities))")
        table = comparison_markdown("v1", BERNOULLI, "v2", gaussian, comparison_protocol(_store(), ComparisonConfig(), "j"))
        nll_row = next(line for line in table.splitlines() if line.startswith("| IWAE NLL"))
        assert "not compared" in nll_row and "better" not in nll_row
        fd_row = next(line for line in table.splitlines() if line.startswith("| FD of"))
        assert fd_row.endswith("| 50.00 | 50.00 | +0.00 |")  # the judge's figures stay comparable
        assert per_class_markdown(per_class_deltas(BERNOULLI, gaussian), note).startswith("Per-class reconstruction NLL not compared")

    def test_same_scoring_is_comparable(self) -> None:
        assert incomparable_note(BERNOULLI, dataclasses.replace(BERNOULLI, iwae_nll=90.0)) is None
