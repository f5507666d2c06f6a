"""Promotion figures: protocols, comparability and the gate decisions, each outcome forced."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vae_pipeline.core.config import GateConfig, ModelConfig
from vae_pipeline.core.model import build_model
from vae_pipeline.core.promotion import (
    Comparison,
    GateProtocol,
    collapse_gate,
    gate_figures,
    incomparable_reason,
    nll_gate,
    probe_gate,
    protocol_for,
)
from vae_pipeline.core.tensor_store import Split, TensorStore

PROTOCOL = GateProtocol(dataset="mnist", data_version="abc", split="val", likelihood="bernoulli",
                        scoring="binarized, seed 0", iwae_k=1000, iwae_examples=2000, probe_rows=10000, seed=0)
FIGURES = {"iwae_nll": 100.0, "iwae_nll_se": 0.3, "probe_accuracy": 0.90, "active_units": 20.0}


def _comparison(challenger: dict, champion: dict | None = None, **extra: object) -> Comparison:
    return Comparison(protocol=PROTOCOL, challenger=challenger, champion=champion,
                      champion_version=1 if champion is not None or "incomparable" in extra else None,
                      champion_source="recorded" if champion is not None else None, **extra)


class TestGates:
    def test_no_champion_passes(self) -> None:
        assert nll_gate(_comparison(FIGURES), 1.0)[0] and probe_gate(_comparison(FIGURES), 0.005)[0]

    def test_a_clearly_worse_nll_fails_and_a_close_one_passes(self) -> None:
        worse = _comparison({**FIGURES, "iwae_nll": 101.5}, FIGURES)
        passed, text = nll_gate(worse, 1.0)
        assert not passed and "is worse than champion v1's 100.0000 nats" in text and "val split" in text
        assert nll_gate(_comparison({**FIGURES, "iwae_nll": 100.9}, FIGURES), 1.0)[0]

    def test_a_worse_probe_fails_and_a_better_one_passes(self) -> None:
        assert not probe_gate(_comparison({**FIGURES, "probe_accuracy": 0.89}, FIGURES), 0.005)[0]
        assert probe_gate(_comparison({**FIGURES, "probe_accuracy": 0.93}, FIGURES), 0.005)[0]

    def test_incomparable_models_fail_both_gates_and_say_why(self) -> None:
        comparison = _comparison(FIGURES, incomparable="the likelihoods differ")
        for gate in (lambda c: nll_gate(c, 1.0), lambda c: probe_gate(c, 0.005)):
            passed, text = gate(comparison)
            assert not passed and text == "not compared: the likelihoods differ; champion v1 kept"

    def test_too_few_active_units_is_collapse_and_one_unit_is_always_needed(self) -> None:
        assert collapse_gate(2.0, 20, 0.1) == (True, "2 of 20 latent units active on the val split (need 2)")
        assert collapse_gate(1.0, 20, 0.1) == (False, "1 of 20 latent units active on the val split (need 2)")
        assert collapse_gate(0.0, 2, 0.1) == (False, "0 of 2 latent units active on the val split (need 1)")


class TestComparability:
    def test_same_dataset_and_likelihood_are_comparable_whatever_the_estimator(self) -> None:
        other_k = dataclasses.replace(PROTOCOL, iwae_k=5000, probe_rows=600)
        assert incomparable_reason(PROTOCOL, other_k) is None
        assert PROTOCOL.differences(other_k) == ["iwae_k: 1000 -> 5000", "probe_rows: 10000 -> 600"]

    def test_another_likelihood_or_dataset_is_not(self) -> None:
        gaussian = dataclasses.replace(PROTOCOL, likelihood="gaussian", scoring="grey values")
        assert "different quantities" in incomparable_reason(PROTOCOL, gaussian)
        fashion = dataclasses.replace(PROTOCOL, dataset="fashion_mnist")
        assert "not comparable" in incomparable_reason(PROTOCOL, fashion)

    def test_the_protocol_round_trips_through_json(self) -> None:
        assert GateProtocol.from_json(PROTOCOL.to_json()) == PROTOCOL


def _store(n: int = 60) -> TensorStore:
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 28, 28, generator=gen) * 255).to(torch.uint8)
    labels = torch.arange(n) % 10
    split = Split(images=images, labels=labels, index=torch.arange(n))
    return TensorStore({"train": split, "val": split, "test": split}, {"dataset": "mnist", "content_sha256": "v1"})


class TestGateFigures:
    def test_figures_are_on_the_validation_split_and_repeatable(self) -> None:
        store = _store()
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3), seed=0)
        protocol = protocol_for(store, "bernoulli", GateConfig(iwae_k=5, iwae_examples=20, probe_max_train=40))
        assert (protocol.split, protocol.iwae_examples, protocol.probe_rows) == ("val", 20, 40)
        first = gate_figures(model, store, protocol, "cpu")
        assert first == gate_figures(model, store, protocol, "cpu")
        assert first["iwae_nll"] > 0 and 0 <= first["probe_accuracy"] <= 1 and first["iwae_nll_se"] > 0

    def test_a_protocol_for_other_data_or_another_likelihood_is_refused(self) -> None:
        store = _store()
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3), seed=0)
        protocol = protocol_for(store, "bernoulli", GateConfig(iwae_k=5, iwae_examples=20))
        with pytest.raises(ValueError, match="data version"):
            gate_figures(model, store, dataclasses.replace(protocol, data_version="other"), "cpu")
        with pytest.raises(ValueError, match="gaussian likelihood"):
            gate_figures(model, store, dataclasses.replace(protocol, likelihood="gaussian"), "cpu")
