"""Promotion compares like with like: each gate outcome forced with models built to be clearly better or worse.

Only ingest, training, the comparison and the champion are materialized (the t-SNE work of
latent_evaluation plays no part in promotion).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from vae_pipeline.definitions import defs
from vae_pipeline.defs.resources import default_resources
from vae_pipeline_tests.defs.test_graph import TINY_GATES, TINY_TRAINING

pytestmark = pytest.mark.slow

SELECTION = ["mnist_raw", "mnist_tensors", "vae_model", "champion_comparison", "champion_model"]
GATE_CONFIG = TINY_GATES
UNTRAINED = {"learning_rate": 1e-7}  # one epoch at this rate leaves the initial weights: clearly worse


def promote(data_dir: Path, source_dir: Path, training: dict | None = None, gate: dict | None = None) -> dg.ExecuteInProcessResult:
    uri = f"sqlite:///{data_dir / 'mlflow.db'}"
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=SELECTION,
        run_config={"ops": {
            "mnist_raw": {"config": {"source_dir": str(source_dir), "verify_md5": False, "allow_download": False}},
            "mnist_tensors": {"config": {"val_size": 200}},
            "vae_model": {"config": {**TINY_TRAINING, **(training or {})}},
            "champion_comparison": {"config": {**GATE_CONFIG, **(gate or {})}},
        }},
        resources=default_resources(str(data_dir), tracking_uri=uri),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def champion(data_dir: Path) -> int:
    uri = f"sqlite:///{data_dir / 'mlflow.db'}"
    return int(MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("vae-mnist", "champion").version)


def gates(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {e.check_name: (e.passed, e.description) for e in result.get_asset_check_evaluations()}


def comparison(result: dg.ExecuteInProcessResult) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("champion_comparison")[0].metadata.items()}


def test_a_clearly_worse_challenger_stays_challenger(tmp_path: Path, mnist_slice_dir: Path) -> None:
    first = promote(tmp_path, mnist_slice_dir)
    assert first.success and champion(tmp_path) == 1
    worse = promote(tmp_path, mnist_slice_dir, training={**UNTRAINED, "seed": 1})
    outcome = gates(worse)
    assert not worse.success
    assert outcome["nll_not_worse_than_champion"][0] is False
    assert "is worse than champion v1's" in outcome["nll_not_worse_than_champion"][1]
    assert "val split" in outcome["nll_not_worse_than_champion"][1]
    assert comparison(worse)["champion_source"] == "recorded"  # same protocol: the champion's own figures
    assert champion(tmp_path) == 1  # the alias did not move
    assert "champion_model" not in {e.asset_key.to_user_string() for e in worse.get_asset_materialization_events()}


def test_a_gaussian_challenger_is_not_compared_with_a_bernoulli_champion(tmp_path: Path, mnist_slice_dir: Path) -> None:
    assert promote(tmp_path, mnist_slice_dir).success
    gaussian = promote(tmp_path, mnist_slice_dir, training={"likelihood": "gaussian"})
    outcome = gates(gaussian)
    for gate in ("nll_not_worse_than_champion", "probe_not_worse_than_champion"):
        passed, text = outcome[gate]
        assert passed is False
        assert text.startswith("not compared: the champion's likelihood is bernoulli and the challenger's gaussian")
        assert text.endswith("champion v1 kept")
    assert champion(tmp_path) == 1


def test_a_champion_measured_with_another_k_is_measured_again(tmp_path: Path, mnist_slice_dir: Path) -> None:
    # The first champion trained 2 epochs and was measured with k=20; the challenger trains 12
    # epochs and is measured with k=30: it is compared with the champion re-measured with k=30.
    assert promote(tmp_path, mnist_slice_dir).success and champion(tmp_path) == 1
    better = promote(tmp_path, mnist_slice_dir, training={"epochs": 12}, gate={"iwae_k": 30})
    assert better.success, gates(better)
    figures = comparison(better)
    assert figures["champion_source"] == "re-measured (was iwae_k: 20 -> 30)"
    assert figures["protocol"]["iwae_k"] == 30
    assert figures["champion_val_iwae_nll"] > figures["val_iwae_nll"] + 1.0
    assert champion(tmp_path) == 2
