"""latent_evaluation's protocol: what it records beside its test figures, and the version it refuses to measure."""

from __future__ import annotations

import pytest

from vae_pipeline.core.model.config import EvaluationConfig
from vae_pipeline.core.selection.protocol import MeasurementProtocol
from vae_pipeline.defs.assets.evaluation import check_measured_on_its_data, evaluation_protocol
from vae_pipeline.defs.identity.lineage import LineageError
from vae_pipeline.defs.identity.versions import RegisteredVersion
from vae_pipeline.defs.manifests import MnistTensors

TENSORS = MnistTensors(path="tensors/mnist/b.safetensors", dataset="mnist", content_sha256="b" * 64, val_size=200,
                       split_seed=0, counts={"train": 1000, "val": 200, "test": 300})


def _version(data_version: str) -> RegisteredVersion:
    return RegisteredVersion(role="vae", fingerprint="?", data_version=data_version, dataset="mnist", model_name="vae-mnist",
                             model_version=1, mlflow_run_id="run1")


def test_the_protocol_records_test_split_data_likelihood_judge_and_settings_capped_by_the_split() -> None:
    config = EvaluationConfig(iwae_k=20, iwae_examples=2000, probe_max_train=10_000, regularity_samples=200)
    protocol = evaluation_protocol(TENSORS, config, "bernoulli", "judge1")
    assert (protocol.split, protocol.data_version, protocol.likelihood, protocol.judge) == ("test", "b" * 64, "bernoulli", "judge1")
    assert (protocol.iwae_k, protocol.iwae_examples, protocol.probe_rows, protocol.prior_samples) == (20, 300, 1000, 200)
    assert protocol.settings["knn_k"] == config.knn_k and "iwae_k" not in protocol.settings
    assert MeasurementProtocol.from_json(protocol.to_json()) == protocol


def test_a_version_trained_on_other_data_is_refused_naming_the_difference() -> None:
    protocol = evaluation_protocol(TENSORS, EvaluationConfig(), "bernoulli", "judge1")
    check_measured_on_its_data(_version("b" * 64), "v1", protocol)  # this run's data: measured
    with pytest.raises(LineageError, match=r"vae-mnist v1 was trained on other data than this run's mnist_tensors, judge and "
                                           r"auto-encoder \(its data vs this run's: data_version: aaaaaaaaaaaa vs bbbbbbbbbbbb\)"
                                           r"\. Materialize mnist_tensors with the config that produced aaaaaaaaaaaa"):
        check_measured_on_its_data(_version("a" * 64), "v1", protocol)
