"""Promotion figures: protocols, comparability and the gate decisions, each outcome forced."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vae_pipeline.core.data.tensor_store import Split, TensorStore, split_indices
from vae_pipeline.core.model.config import GateConfig, ModelConfig
from vae_pipeline.core.model.vae import build_model
from vae_pipeline.core.selection.promotion import (
    Comparison,
    collapse_gate,
    gate_figures,
    held_out_protocol,
    held_out_rows,
    nll_gate,
    probe_gate,
    protocol_for,
)
from vae_pipeline.core.selection.protocol import MeasurementProtocol

PROTOCOL = MeasurementProtocol(dataset="mnist", data_version="abc", split="val", likelihood="bernoulli", seed=0,
                               iwae_k=1000, iwae_examples=2000, probe_rows=10000)
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


class TestProtocolFor:
    def test_records_the_split_data_and_scoring_capped_by_the_split(self) -> None:
        store = _store()
        protocol = protocol_for(store, "bernoulli", GateConfig(seed=3, iwae_k=5, iwae_examples=2000, probe_max_train=10_000))
        assert (protocol.dataset, protocol.data_version, protocol.split) == ("mnist", "v1", "val")
        assert (protocol.iwae_examples, protocol.probe_rows, protocol.scoring) == (60, 60, "binarized, seed 3")

    def test_the_comparison_stores_the_protocol_with_its_scoring(self) -> None:
        stored = _comparison(FIGURES).to_dict()["protocol"]
        assert stored["scoring"] == "binarized, seed 0" and MeasurementProtocol.from_dict(stored) == PROTOCOL


def _images(n: int, seed: int, brightness: float = 1.0) -> torch.Tensor:
    return (torch.rand(n, 28, 28, generator=torch.Generator().manual_seed(seed)) * 255 * brightness).to(torch.uint8)


def _store(n: int = 60, val: torch.Tensor | None = None, test: torch.Tensor | None = None, version: str = "v1") -> TensorStore:
    """Three different splits of random images (`val` and `test` replace theirs)."""
    labels = torch.arange(n) % 10

    def split(images: torch.Tensor) -> Split:
        return Split(images=images, labels=labels, index=torch.arange(n))

    return TensorStore(
        {"train": split(_images(n, 0)), "val": split(_images(n, 1) if val is None else val),
         "test": split(_images(n, 2) if test is None else test)},
        {"dataset": "mnist", "content_sha256": version},
    )


def _resplit(pool: torch.Tensor, val_size: int, seed: int, version: str) -> TensorStore:
    """A store of `pool` split by the product's own seeded split (positions in the pool are the images' identities)."""
    train_idx, val_idx = split_indices(len(pool), val_size, seed)
    labels = torch.arange(len(pool)) % 10

    def split(idx) -> Split:  # noqa: ANN001
        idx = torch.as_tensor(idx)
        return Split(images=pool[idx], labels=labels[idx], index=idx)

    return TensorStore({"train": split(train_idx), "val": split(val_idx), "test": split(val_idx[:10])},
                       {"dataset": "mnist", "content_sha256": version})


class TestGateFigures:
    def test_figures_are_on_the_validation_split_and_repeatable(self) -> None:
        """Fails if the figures came from another split: changing only the test split changes nothing, changing val does."""
        store = _store()
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3), seed=0)
        protocol = protocol_for(store, "bernoulli", GateConfig(iwae_k=5, iwae_examples=20, probe_max_train=40))
        assert (protocol.split, protocol.iwae_examples, protocol.probe_rows) == ("val", 20, 40)
        first = gate_figures(model, store, protocol, "cpu")
        assert first == gate_figures(model, store, protocol, "cpu")
        assert first["iwae_nll"] > 0 and 0 <= first["probe_accuracy"] <= 1 and first["iwae_nll_se"] > 0
        assert gate_figures(model, _store(test=_images(60, 9, 0.1)), protocol, "cpu") == first
        dark_val = gate_figures(model, _store(val=_images(60, 9, 0.1)), protocol, "cpu")
        assert dark_val["iwae_nll"] != pytest.approx(first["iwae_nll"], abs=1.0)

    def test_a_champion_split_differently_is_measured_only_on_images_neither_trained_on(self) -> None:
        """Fails if the champion is scored on the challenger's whole validation split (the old code): with another
        split seed, about half of it is the champion's training data."""
        pool = _images(3000, 5)
        champion, challenger = _resplit(pool, 1500, seed=0, version="old"), _resplit(pool, 1500, seed=1, version="new")
        champion_train = set(champion["train"].index.tolist())
        whole_val = challenger["val"].index.tolist()
        seen = [i for i in whole_val if i in champion_train]
        assert 600 < len(seen) < 900  # what the old protocol scored the champion on, among the rest
        protocol = protocol_for(challenger, "bernoulli", GateConfig(iwae_k=5, iwae_examples=2000, probe_max_train=40))
        shared, rows = held_out_protocol(protocol, challenger, champion["train"], "old", min_images=500)
        kept = challenger["val"].index[torch.as_tensor(rows)].tolist()
        assert not set(kept) & champion_train  # no image the champion trained on
        assert sorted(kept) == sorted(set(whole_val) - champion_train)  # and every other one
        assert (shared.held_out_from, shared.held_out_images, shared.iwae_examples) == ("old", len(kept), len(kept))
        assert dataclasses.replace(shared, held_out_from="", held_out_images=0, iwae_examples=1500) == protocol

    def test_held_out_images_are_found_by_their_pixels_whatever_their_position(self) -> None:
        store = _store()
        seen = Split(images=store["val"].images[[5, 7]], labels=torch.tensor([0, 0]), index=torch.tensor([999, 998]))
        assert 5 not in held_out_rows(store["val"], seen) and 7 not in held_out_rows(store["val"], seen)
        assert len(held_out_rows(store["val"], seen)) == 58

    def test_too_few_images_neither_trained_on_refuse_the_comparison_naming_the_fix(self) -> None:
        pool = _images(3000, 5)
        champion, challenger = _resplit(pool, 1500, seed=0, version="old"), _resplit(pool, 1500, seed=1, version="new")
        protocol = protocol_for(challenger, "bernoulli", GateConfig())
        reason = held_out_protocol(protocol, challenger, champion["train"], "old", min_images=1000)
        assert isinstance(reason, str) and reason.startswith("only ") and "of the 1500 val images were not in" in reason
        assert "need 1000 for a fair comparison" in reason and "Retrain the champion's variant on this data version" in reason

    def test_a_held_out_protocol_measures_exactly_its_rows(self) -> None:
        pool = _images(300, 5)
        champion, challenger = _resplit(pool, 150, seed=0, version="old"), _resplit(pool, 150, seed=1, version="new")
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3), seed=0)
        protocol = protocol_for(challenger, "bernoulli", GateConfig(iwae_k=5, iwae_examples=2000, probe_max_train=40))
        shared, rows = held_out_protocol(protocol, challenger, champion["train"], "old", min_images=10)
        val = challenger["val"]
        only_rows = TensorStore({**challenger.splits, "val": Split(val.images[rows], val.labels[rows], val.index[rows])},
                                challenger.metadata)
        expected = gate_figures(model, only_rows, protocol_for(only_rows, "bernoulli", GateConfig(iwae_k=5, probe_max_train=40)), "cpu")
        assert gate_figures(model, challenger, shared, "cpu", rows) == expected
        with pytest.raises(ValueError, match="held-out protocol is measured on exactly the rows"):
            gate_figures(model, challenger, shared, "cpu")

    def test_a_protocol_for_other_data_or_another_likelihood_is_refused(self) -> None:
        store = _store()
        model = build_model(ModelConfig(hidden_dims=(16,), latent_dim=3), seed=0)
        protocol = protocol_for(store, "bernoulli", GateConfig(iwae_k=5, iwae_examples=20))
        with pytest.raises(ValueError, match="data version"):
            gate_figures(model, store, dataclasses.replace(protocol, data_version="other"), "cpu")
        with pytest.raises(ValueError, match="gaussian likelihood"):
            gate_figures(model, store, dataclasses.replace(protocol, likelihood="gaussian"), "cpu")
