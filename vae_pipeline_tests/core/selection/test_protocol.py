"""One protocol type and one comparability rule: each difference named, the data version included, old records read."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vae_pipeline.core.selection.protocol import MeasurementProtocol, ProtocolError, comparable, scoring

PROTOCOL = MeasurementProtocol(
    dataset="mnist", data_version="a" * 64, split="val", likelihood="bernoulli", seed=0, iwae_k=1000, iwae_examples=2000,
    probe_rows=10_000, judge="j1", prior_samples=2000, settings={"knn_k": 5}, training={"epochs": 30, "hidden_dims": [400]},
    code="c1",
)
# One changed value per field, and the text `comparable` must name it by.
CHANGES = {
    "dataset": ("fashion_mnist", "dataset: mnist vs fashion_mnist (likelihoods of different datasets are not comparable)"),
    "data_version": ("b" * 64, "data_version: aaaaaaaaaaaa vs bbbbbbbbbbbb"),
    "split": ("test", "split: val vs test"),
    "likelihood": ("gaussian", "likelihood: bernoulli vs gaussian (a Bernoulli NLL of binarized pixels and a Gaussian "
                               "density of grey values are different quantities)"),
    "seed": (1, "seed: 0 vs 1"),
    "iwae_k": (5000, "iwae_k: 1000 vs 5000"),
    "iwae_examples": (500, "iwae_examples: 2000 vs 500"),
    "probe_rows": (600, "probe_rows: 10000 vs 600"),
    "judge": ("j2", "judge: j1 vs j2 (Fréchet distances in different judges' feature spaces are not comparable)"),
    "prior_samples": (200, "prior_samples: 2000 vs 200"),
    "held_out_from": ("c" * 64, "held_out_from: (none) vs cccccccccccc"),
    "held_out_images": (150, "held_out_images: 0 vs 150"),
    "settings": ({"knn_k": 10}, "settings.knn_k: 5 vs 10"),
    "training": ({"epochs": 2, "hidden_dims": [400]}, "training.epochs: 30 vs 2"),
    "code": ("c2", "code: c1 vs c2 (measured by another version of the code that measures it)"),
}


class TestComparable:
    def test_identical_protocols_are_comparable(self) -> None:
        verdict = comparable(PROTOCOL, dataclasses.replace(PROTOCOL))
        assert verdict.comparable and verdict.differences == () and str(verdict) == "measured alike"

    def test_every_field_is_checked(self) -> None:
        assert set(CHANGES) == {f.name for f in dataclasses.fields(MeasurementProtocol)}

    @pytest.mark.parametrize("name", sorted(CHANGES))
    def test_each_difference_is_named_with_both_values(self, name: str) -> None:
        value, text = CHANGES[name]
        verdict = comparable(PROTOCOL, dataclasses.replace(PROTOCOL, **{name: value}))
        assert not verdict.comparable
        assert str(verdict) == text

    def test_several_differences_are_all_named(self) -> None:
        verdict = comparable(PROTOCOL, dataclasses.replace(PROTOCOL, iwae_k=5, training={"epochs": 2}))
        assert str(verdict) == "iwae_k: 1000 vs 5; training.epochs: 30 vs 2; training.hidden_dims: [400] vs (none)"

    def test_another_data_version_is_not_comparable(self) -> None:
        """The case the gates let through before (their check named dataset and likelihood only): figures of two data
        versions were comparable there while latent_evaluation and the sweep refused them."""
        other_data = dataclasses.replace(PROTOCOL, data_version="b" * 64)
        verdict = comparable(PROTOCOL, other_data)
        assert not verdict.comparable and verdict.fields == ("data_version",)
        assert verdict.remeasurable  # both can be measured again on one data version

    def test_another_likelihood_or_dataset_cannot_be_measured_alike(self) -> None:
        for change in ({"likelihood": "gaussian"}, {"dataset": "fashion_mnist"}):
            verdict = comparable(PROTOCOL, dataclasses.replace(PROTOCOL, iwae_k=5, **change))
            assert not verdict.remeasurable, change
        assert comparable(PROTOCOL, dataclasses.replace(PROTOCOL, iwae_k=5, probe_rows=600)).remeasurable


class TestScoring:
    def test_scoring_is_built_from_likelihood_and_seed(self) -> None:
        assert PROTOCOL.scoring == scoring("bernoulli", 0) == "binarized, seed 0"
        assert dataclasses.replace(PROTOCOL, seed=3).scoring == "binarized, seed 3"
        assert dataclasses.replace(PROTOCOL, likelihood="gaussian").scoring == "grey values"
        assert dataclasses.replace(PROTOCOL, likelihood="").scoring == ""  # shared by several likelihoods


class TestStored:
    def test_round_trips_through_json(self) -> None:
        back = MeasurementProtocol.from_json(PROTOCOL.to_json())
        assert back == PROTOCOL and comparable(back, PROTOCOL).comparable
        assert json.loads(PROTOCOL.to_json())["scoring"] == "binarized, seed 0"  # stored for readers, rebuilt on reading

    def test_tuples_read_back_equal(self) -> None:
        with_tuple = dataclasses.replace(PROTOCOL, training={"epochs": 30, "hidden_dims": (400,)})
        assert MeasurementProtocol.from_json(with_tuple.to_json()) == with_tuple == PROTOCOL

    def test_a_gate_protocol_of_the_previous_release_reads(self) -> None:
        stored = {"dataset": "mnist", "data_version": "a" * 64, "split": "val", "likelihood": "bernoulli",
                  "scoring": "binarized, seed 0", "iwae_k": 20, "iwae_examples": 100, "probe_rows": 600, "seed": 0,
                  "held_out_from": "", "held_out_images": 0}  # a run's gate_protocol tag, as GateProtocol wrote it
        read = MeasurementProtocol.from_json(json.dumps(stored))
        assert read == MeasurementProtocol(dataset="mnist", data_version="a" * 64, split="val", likelihood="bernoulli",
                                           seed=0, iwae_k=20, iwae_examples=100, probe_rows=600)
        assert read.describe() == ("val split, IWAE k=20 on 100 images (binarized, seed 0), probe on 600 training rows, "
                                   "data aaaaaaaaaaaa")

    def test_an_evaluation_protocol_of_the_previous_release_reads_with_what_its_caller_knows(self) -> None:
        stored = {"split": "test", "judge": "j1", "data_version": "a" * 64, "seed": 0, "iwae_k": 20, "iwae_examples": 50,
                  "probe_max_train": 600, "regularity_samples": 200, "knn_k": 5}  # an eval_protocol tag
        read = MeasurementProtocol.from_dict(stored, dataset="mnist", likelihood="bernoulli")
        assert (read.dataset, read.likelihood, read.probe_rows, read.prior_samples) == ("mnist", "bernoulli", 600, 200)
        assert read.settings == {"knn_k": 5}
        assert MeasurementProtocol.from_dict(stored, dataset="other", likelihood="gaussian", split="val").split == "test"

    def test_a_record_lacking_a_field_names_what_to_rematerialize(self) -> None:
        with pytest.raises(ProtocolError, match=r"latent_evaluation\[z4-b1-bern\] lacks dataset, likelihood, seed .*"
                                                r"re-materialize latent_evaluation\[z4-b1-bern\]"):
            MeasurementProtocol.from_dict({"split": "test", "judge": "j1", "data_version": "a" * 64},
                                          "latent_evaluation[z4-b1-bern]")
