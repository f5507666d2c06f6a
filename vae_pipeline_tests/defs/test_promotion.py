"""Promotion compares like with like: each gate outcome forced with models built to be clearly better or worse.

Each test starts from a copy of the session's tiny graph, whose v1 (2 epochs) is the champion; then
only ingest (reused), training, the comparison and the champion are materialized.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from vae_pipeline.core.data.tensor_store import load_tensor_store
from vae_pipeline.core.selection.protocol import MeasurementProtocol
from vae_pipeline.definitions import defs
from vae_pipeline.defs.resources import default_resources
from vae_pipeline_tests.helpers import TINY_GATES, TINY_TRAINING, mlflow_client, tracking_uri
from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

pytestmark = pytest.mark.slow

SELECTION = ["mnist_raw", "mnist_tensors", "vae_model", "champion_comparison", "champion_model"]
GATE_CONFIG = TINY_GATES
UNTRAINED = {"learning_rate": 1e-7}  # one epoch at this rate leaves the initial weights: clearly worse
PROMOTION_GATES = {"nll_not_worse_than_champion", "probe_not_worse_than_champion", "no_posterior_collapse"}


def promote(
    data_dir: Path, source_dir: Path, training: dict | None = None, gate: dict | None = None, *,
    variant: str = TINY_VARIANT, selection: list[str] = SELECTION, instance: dg.DagsterInstance | None = None,
    tensors: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize `selection` for one variant, in `instance` (a fresh ephemeral one by default)."""
    configs = {
        "mnist_raw": {"config": {"source_dir": str(source_dir), "verify_md5": False, "allow_download": False}},
        "mnist_tensors": {"config": {"val_size": 200, **(tensors or {})}},
        "vae_model": {"config": {**TINY_TRAINING, **(training or {})}},
        "champion_comparison": {"config": {**GATE_CONFIG, **(gate or {})}},
    }
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=selection,
        run_config={"ops": {asset: config for asset, config in configs.items() if asset in selection}},
        resources=default_resources(str(data_dir), tracking_uri=tracking_uri(data_dir)),
        instance=add_variants(instance or dg.DagsterInstance.ephemeral(), variant),
        partition_key=variant,
        raise_on_error=False,
    )


def champion(data_dir: Path) -> int:
    return int(mlflow_client(tracking_uri(data_dir)).get_model_version_by_alias("vae-mnist", "champion").version)


def gates(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {e.check_name: (e.passed, e.description) for e in result.get_asset_check_evaluations()}


def gates_passed(result: dg.ExecuteInProcessResult) -> bool:
    """Whether every promotion gate evaluated in `result` passed (the data checks are not gates)."""
    outcome = gates(result)
    assert PROMOTION_GATES <= set(outcome), outcome
    return all(outcome[gate][0] for gate in PROMOTION_GATES)


def comparison(result: dg.ExecuteInProcessResult) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("champion_comparison")[0].metadata.items()}


def test_a_clearly_worse_challenger_stays_challenger(tiny_graph_copy: Path, mnist_slice_dir: Path) -> None:
    data_dir = tiny_graph_copy
    assert champion(data_dir) == 1
    worse = promote(data_dir, mnist_slice_dir, training={**UNTRAINED, "seed": 1})
    outcome = gates(worse)
    assert not worse.success
    assert outcome["nll_not_worse_than_champion"][0] is False
    assert "is worse than champion v1's" in outcome["nll_not_worse_than_champion"][1]
    assert "val split" in outcome["nll_not_worse_than_champion"][1]
    assert comparison(worse)["champion_source"] == "recorded"  # same protocol: the champion's own figures
    assert champion(data_dir) == 1  # the alias did not move
    assert "champion_model" not in {e.asset_key.to_user_string() for e in worse.get_asset_materialization_events()}


def test_a_gaussian_challenger_is_not_compared_with_a_bernoulli_champion(tiny_graph_copy: Path, mnist_slice_dir: Path) -> None:
    data_dir = tiny_graph_copy
    assert champion(data_dir) == 1
    gaussian = promote(data_dir, mnist_slice_dir, variant="z4-b1-gauss")  # the variant sets the likelihood
    outcome = gates(gaussian)
    for gate in ("nll_not_worse_than_champion", "probe_not_worse_than_champion"):
        passed, text = outcome[gate]
        assert passed is False
        assert text == ("not compared: champion v1 and the challenger cannot be measured alike (champion vs challenger: "
                        "likelihood: bernoulli vs gaussian (a Bernoulli NLL of binarized pixels and a Gaussian density of "
                        "grey values are different quantities)); champion v1 kept")
    assert champion(data_dir) == 1


def test_a_champion_measured_with_another_k_or_other_code_is_measured_again(tiny_graph_copy: Path, mnist_slice_dir: Path) -> None:
    # The first champion trained 2 epochs and was measured with k=20; the challenger trains 12
    # epochs and is measured with k=30: it is compared with the champion re-measured with k=30.
    # Its recorded figures are also made to look measured by an earlier version of the gate code,
    # which alone would have them measured again too.
    data_dir = tiny_graph_copy
    assert champion(data_dir) == 1
    client = mlflow_client(tracking_uri(data_dir))
    run_id = client.get_model_version("vae-mnist", "1").run_id
    recorded = MeasurementProtocol.from_json(client.get_run(run_id).data.tags["gate_protocol"])
    client.set_tag(run_id, "gate_protocol", replace(recorded, code="0123456789abcdef").to_json())
    better = promote(data_dir, mnist_slice_dir, training={"epochs": 12}, gate={"iwae_k": 30})
    assert better.success, gates(better)
    figures = comparison(better)
    assert figures["champion_source"] == ("re-measured (its recorded protocol differed: iwae_k: 20 vs 30; code: 0123456789abcdef "
                                          f"vs {recorded.code} (measured by another version of the code that measures it))")
    assert figures["protocol"]["iwae_k"] == 30
    assert figures["champion_val_iwae_nll"] > figures["val_iwae_nll"] + 1.0
    assert champion(data_dir) == 2


def _refusal(result: dg.ExecuteInProcessResult) -> str:
    """The message champion_model failed with, which must be a PromotionRefused."""
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "champion_model"
    error = failure.event_specific_data.error.cause  # Dagster wraps what the step raised
    assert error.cls_name == "PromotionRefused", error
    return error.message


def test_a_variant_compared_with_a_champion_that_has_since_moved_is_compared_again(
    tiny_graph_copy: Path, mnist_slice_dir: Path
) -> None:
    """Variants are promoted one partition at a time: the alias moves only from the champion a version was measured against.

    The second variant trains much longer than the first (20 epochs against 5), so measured again against
    the first, now champion, it passes its gates and is promoted: the test fails if the re-comparison
    still used the old champion's figures (it would name v1) or if the refused promotion had moved the alias.
    """
    data_dir = tiny_graph_copy
    instance = dg.DagsterInstance.ephemeral()  # one instance: later runs read the manifests earlier ones made
    assert champion(data_dir) == 1
    # Two variants, each trained longer than v1 and compared with champion v1, neither promoted yet.
    first, second = "z8-b1-bern", "z6-b1-bern"
    epochs = {first: 5, second: 20}
    compare_only = SELECTION[:-1]
    compared = {
        variant: promote(data_dir, mnist_slice_dir, training={"epochs": epochs[variant]}, variant=variant,
                         selection=compare_only, instance=instance)
        for variant in (first, second)
    }
    for variant, result in compared.items():
        assert result.success, (variant, gates(result))
        assert gates_passed(result), (variant, gates(result))  # so that what refuses it below is not a gate
        assert comparison(result)["champion_version"] == 1
    versions = {v: r.asset_materializations_for_node("vae_model")[0].metadata["model_version"].value for v, r in compared.items()}
    assert versions == {first: 2, second: 3}

    assert promote(data_dir, mnist_slice_dir, variant=first, selection=["champion_model"], instance=instance).success
    assert champion(data_dir) == 2
    stale = promote(data_dir, mnist_slice_dir, variant=second, selection=["champion_model"], instance=instance)
    assert not stale.success
    message = _refusal(stale)
    assert "v3 was compared with champion v1, but the champion is now v2" in message
    assert f"re-materialize champion_comparison[{second}]" in message
    assert champion(data_dir) == 2  # the alias did not move

    # Measured again, against the current champion, the longer-trained second variant passes and is promoted.
    again = promote(data_dir, mnist_slice_dir, variant=second, selection=["champion_comparison", "champion_model"],
                    instance=instance)
    assert comparison(again)["champion_version"] == 2 and comparison(again)["model_version"] == 3
    assert gates_passed(again), gates(again)
    assert again.success and champion(data_dir) == 3
    assert again.asset_materializations_for_node("champion_model")[0].metadata["previous_champion"].value == 2


def test_a_champion_trained_on_another_split_is_measured_only_on_images_neither_trained_on(
    tiny_graph_copy: Path, mnist_slice_dir: Path
) -> None:
    """Fails if the champion is scored on the challenger's whole validation split (the old code): with another split
    seed, about 170 of those 200 images were in the champion's training split, where it looks better than it is."""
    data_dir = tiny_graph_copy
    assert champion(data_dir) == 1
    stores = sorted((data_dir / "tensors" / "mnist").glob("*.safetensors"))
    refused = promote(data_dir, mnist_slice_dir, tensors={"split_seed": 1})  # the default minimum: 1,000 images
    (champion_store,) = stores  # the tiny graph's, split with seed 0
    (challenger_store,) = set((data_dir / "tensors" / "mnist").glob("*.safetensors")) - set(stores)
    versions = [load_tensor_store(path).content_sha256[:12] for path in (champion_store, challenger_store)]
    for gate in ("nll_not_worse_than_champion", "probe_not_worse_than_champion"):
        passed, text = gates(refused)[gate]
        assert passed is False and text.startswith(
            "not compared: champion v1 was measured on other data than the challenger (champion vs challenger: "
            f"data_version: {versions[0]} vs {versions[1]}), and only ")
        assert "of the 200 val images" in text
        assert "Retrain the champion's variant on this data version" in text and text.endswith("champion v1 kept")
    assert champion(data_dir) == 1

    measured = promote(data_dir, mnist_slice_dir, tensors={"split_seed": 1}, gate={"min_held_out": 10})
    figures = comparison(measured)
    champion_train = set(load_tensor_store(champion_store)["train"].index.tolist())
    challenger_val = set(load_tensor_store(challenger_store)["val"].index.tolist())  # the same raw files: positions name images
    neither = len(challenger_val - champion_train)
    assert 10 <= neither < 100  # most of the challenger's validation images were the champion's training images
    assert figures["protocol"]["held_out_from"] == load_tensor_store(champion_store).content_sha256
    assert figures["protocol"]["held_out_images"] == neither
    assert figures["champion_source"] == f"measured with the challenger on the {neither} val images neither trained on"
    assert f"only the {neither} val images neither model trained on" in gates(measured)["nll_not_worse_than_champion"][1]
