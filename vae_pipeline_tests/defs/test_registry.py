"""The registry explains itself: each version's tags and description, the champion's moves, logged models sorted by NLL.

One data folder goes through four runs: v1 trained and promoted (no evaluation); the evaluation
graph with v1 reused (its figures must still reach the registry, and nothing may be said twice);
v2, trained longer, promoted over v1; v3, untrained, failing the NLL gate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from vae_pipeline.definitions import defs
from vae_pipeline.defs.resources import default_resources
from vae_pipeline.defs.tracking.registry import CHAMPION_HISTORY, render_description
from vae_pipeline.defs.tracking.resource import MlflowTracking
from vae_pipeline_tests.helpers import TINY_EVALUATION, TINY_GATES, TINY_JUDGE, TINY_TRAINING
from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

pytestmark = pytest.mark.slow

NAME = "vae-mnist"
DAGSTER_UI = "http://dagster.test:3000/"  # a configured base URL; the trailing slash must not double
PROMOTION = ["mnist_raw", "mnist_tensors", "vae_model", "champion_comparison", "champion_model"]
EVALUATION = [*PROMOTION, "autoencoder_baseline", "digit_classifier", "latent_evaluation"]
BETTER = {"epochs": 12, "seed": 1}  # clearly better than 2 epochs (test_promotion.py relies on the same margin)
UNTRAINED = {"learning_rate": 1e-7, "seed": 2}  # one epoch at this rate leaves the initial weights: clearly worse


def _materialize(data_dir: Path, source_dir: Path, selection: list[str], training: dict | None = None) -> dg.ExecuteInProcessResult:
    uri = f"sqlite:///{data_dir / 'mlflow.db'}"
    resources = default_resources(str(data_dir), tracking_uri=uri)
    resources["mlflow_tracking"] = MlflowTracking(storage=resources["storage"], tracking_uri=uri, dagster_ui_url=DAGSTER_UI)
    ops = {
        "mnist_raw": {"config": {"source_dir": str(source_dir), "verify_md5": False, "allow_download": False}},
        "mnist_tensors": {"config": {"val_size": 200}},
        "vae_model": {"config": {**TINY_TRAINING, **(training or {})}},
        "champion_comparison": {"config": TINY_GATES},
    }
    if "latent_evaluation" in selection:
        ops |= {"latent_evaluation": {"config": TINY_EVALUATION}, "digit_classifier": {"config": TINY_JUDGE}}
    return dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, run_config={"ops": ops},
                          resources=resources, instance=add_variants(dg.DagsterInstance.ephemeral(), TINY_VARIANT),
                          partition_key=TINY_VARIANT, raise_on_error=False)


@pytest.fixture(scope="module")
def registry(mnist_slice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    data_dir = tmp_path_factory.mktemp("registry")
    first = _materialize(data_dir, mnist_slice_dir, PROMOTION)
    evaluated = _materialize(data_dir, mnist_slice_dir, EVALUATION)
    better = _materialize(data_dir, mnist_slice_dir, PROMOTION, BETTER)
    worse = _materialize(data_dir, mnist_slice_dir, PROMOTION, UNTRAINED)
    assert first.success and evaluated.success and better.success
    assert not worse.success  # its NLL gate failed: the run fails, the registry still says why
    assert evaluated.asset_materializations_for_node("vae_model")[0].metadata["reused"].value is True
    uri = f"sqlite:///{data_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{NAME}'")}
    assert sorted(versions) == [1, 2, 3]
    return SimpleNamespace(uri=uri, client=client, versions=versions, runs={1: first, 2: better, 3: worse},
                           mlflow_runs={n: client.get_run(v.run_id) for n, v in versions.items()})


class TestVersionTags:
    def test_a_version_says_what_it_is_and_which_dagster_run_made_it(self, registry) -> None:
        for n, config in ((1, "mlp 64 z4 beta1 bernoulli, 2 epochs, batch_size 100"),
                          (2, "mlp 64 z4 beta1 bernoulli, 12 epochs, batch_size 100, seed 1"),
                          (3, "mlp 64 z4 beta1 bernoulli, 2 epochs, batch_size 100, learning_rate 1e-07, seed 2")):
            tags, run = registry.versions[n].tags, registry.mlflow_runs[n]
            assert tags["config"] == config
            assert tags["variant"] == TINY_VARIANT  # the partition key the version was trained for
            assert run.data.tags["variant"] == run.data.params["variant"] == TINY_VARIANT
            assert tags["dataset"] == "mnist"
            assert re.fullmatch(r"[0-9a-f]{64}", tags["data_version"]) and tags["data_version"] == run.data.tags["data_version"]
            assert tags["fingerprint"] == run.data.tags["fingerprint"]
            # v1 was reused by the evaluation run: the run that trained it stays the one named
            dagster_run = registry.runs[n].run_id
            assert tags["dagster_run_id"] == dagster_run
            assert tags["dagster_run_url"] == f"http://dagster.test:3000/runs/{dagster_run}"

    def test_figures_are_the_metrics_logged_on_the_run_with_their_protocol(self, registry) -> None:
        tags, run = registry.versions[1].tags, registry.mlflow_runs[1]
        for key in ("gate_iwae_nll", "gate_iwae_nll_se", "gate_probe_accuracy", "eval_iwae_nll", "eval_probe_accuracy",
                    "eval_prior_fd", "eval_ae_prior_fd", "eval_midpoint_fd", "eval_ae_midpoint_fd"):
            assert tags[key] == f"{run.data.metrics[key]:.4f}", key
        assert tags["gate_active_units"] == str(int(run.data.metrics["gate_active_units"]))
        assert tags["gate_protocol"] == run.data.tags["gate_protocol"]
        gate_protocol = json.loads(tags["gate_protocol"])
        assert (gate_protocol["split"], gate_protocol["iwae_k"], gate_protocol["iwae_examples"]) == ("val", 20, 100)
        eval_protocol = json.loads(tags["eval_protocol"])
        assert (eval_protocol["split"], eval_protocol["iwae_k"], eval_protocol["iwae_examples"]) == ("test", 20, 50)
        assert eval_protocol["data_version"] == tags["data_version"]
        assert tags["eval_regular"] == ("true" if run.data.metrics["eval_regular"] == 1.0 else "false")
        assert "eval_iwae_nll" not in registry.versions[2].tags  # v2 was never evaluated: nothing is made up

    def test_gate_outcomes_per_gate_and_overall(self, registry) -> None:
        v1, v2, v3 = (registry.versions[n].tags for n in (1, 2, 3))
        assert v1["gates"] == "passed" and v2["gates"] == "passed"
        assert re.fullmatch(r"passed: iwae_nll \S+ nats is not worse than champion v1's .*val split.*", v2["gate.nll"])
        assert re.fullmatch(r"passed: [1-4] of 4 latent units active on the val split \(need 1\)", v2["gate.collapse"])
        assert v3["gates"].startswith("failed: nll")
        assert re.fullmatch(r"failed: iwae_nll \S+ nats is worse than champion v2's .*", v3["gate.nll"])


class TestDescription:
    def test_the_description_is_rendered_from_the_tags(self, registry) -> None:
        for version in registry.versions.values():
            assert version.description == render_description(version.tags)

    def test_it_reads_as_what_the_version_is_how_it_measured_and_whether_it_passed(self, registry) -> None:
        v2, run_id = registry.versions[2], registry.runs[2].run_id
        text = v2.description
        assert text.startswith(f"Variant `{TINY_VARIANT}`: **{v2.tags['config']}** on mnist, "
                               f"data version `{v2.tags['data_version'][:12]}`")
        assert f"[{run_id[:8]}](http://dagster.test:3000/runs/{run_id})" in text
        assert f"IWAE NLL {v2.tags['gate_iwae_nll']} ± {v2.tags['gate_iwae_nll_se']} nats" in text
        assert "Promotion gates: **passed**\n- nll: passed: " in text
        assert "Champion since " in text
        v1 = registry.versions[1].description
        assert "Test evaluation (judge `" in v1 and f"IWAE NLL {registry.versions[1].tags['eval_iwae_nll']} nats (k=20, 50 images)" in v1
        assert "Replaced as champion by v2 on " in v1
        assert "Promotion gates: **failed: nll" in registry.versions[3].description


class TestChampionMessage:
    def test_the_new_champion_says_why_it_replaced_the_old(self, registry) -> None:
        v1, v2 = registry.versions[1].tags, registry.versions[2].tags
        found = re.fullmatch(
            r"champion since \d{4}-\d\d-\d\d \d\d:\d\d UTC: val IWAE NLL (\S+) vs v1's (\S+) nats, probe accuracy (\S+) vs (\S+) "
            r"\(same protocol: val split, IWAE k=20 on 100 images \(binarized, seed 0\), probe on 600 training rows, data \w{12}; "
            r"v1's figures recorded\); replaces v1",
            v2["promotion"],
        )
        assert found, v2["promotion"]
        nll = {n: registry.mlflow_runs[n].data.metrics["gate_iwae_nll"] for n in (1, 2)}  # v1's: as recorded, not re-measured
        assert found.groups() == (f"{nll[2]:.2f}", f"{nll[1]:.2f}", v2["gate_probe_accuracy"], v1["gate_probe_accuracy"])
        assert float(found[1]) < float(found[2])
        assert re.fullmatch(r"champion since \S+ \S+ UTC: val IWAE NLL \S+ nats, probe accuracy \S+ \(val split, .*\); first champion",
                            v1["promotion"]), v1["promotion"]
        assert re.fullmatch(r"replaced as champion by v2 on \d{4}-\d\d-\d\d \d\d:\d\d UTC", v1["replaced"])
        assert "promotion" not in registry.versions[3].tags and "replaced" not in v2

    def test_the_registered_model_keeps_each_move_once(self, registry) -> None:
        model = registry.client.get_registered_model(NAME)
        assert model.aliases["champion"] == 2
        # v1 was champion again in the evaluation run (the alias did not move): no second line for it
        assert model.tags[CHAMPION_HISTORY].splitlines() == [
            f"v2 {registry.versions[2].tags['promotion']}", f"v1 {registry.versions[1].tags['promotion']}"]


class TestLoggedModels:
    def test_search_logged_models_sorts_versions_by_linked_nll(self, registry, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)  # set_tracking_uri exports it; put it back afterwards
        mlflow.set_tracking_uri(registry.uri)
        experiment = mlflow.get_experiment_by_name("vae-pipeline")
        models = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list",
                                             order_by=[{"field_name": "metrics.gate_iwae_nll", "ascending": True}])
        by_source = {v.source: n for n, v in registry.versions.items()}
        assert [by_source[f"models:/{m.model_id}"] for m in models] == [2, 1, 3]  # 12 epochs, 2 epochs, untrained

        v1 = next(m for m in models if by_source[f"models:/{m.model_id}"] == 1)
        run = registry.mlflow_runs[1]
        linked: dict[str, list] = {}
        for metric in v1.metrics:
            linked.setdefault(metric.key, []).append(metric)
        assert {"gate_iwae_nll", "gate_probe_accuracy", "eval_iwae_nll", "eval_prior_fd", "val_neg_elbo"} <= set(linked)
        assert linked["eval_iwae_nll"][-1].value == run.data.metrics["eval_iwae_nll"]
        # Each value the run logged is linked once, however often it was linked (v1 went through two runs; the
        # second reused the gate figures measured under the same protocol, so there is one value to link).
        history = registry.client.get_metric_history(run.info.run_id, "gate_iwae_nll")
        assert len(history) == 1 and len(linked["gate_iwae_nll"]) == 1
        assert len(linked["val_neg_elbo"]) == 1
        assert len(registry.client.get_metric_history(run.info.run_id, "val_neg_elbo")) == TINY_TRAINING["epochs"]
        dataset = run.inputs.dataset_inputs[0].dataset
        assert {(m.dataset_name, m.dataset_digest) for ms in linked.values() for m in ms} == {("mnist", dataset.digest)}
        assert v1.tags["registered_as"] == "vae-mnist v1" and v1.tags["config"] == registry.versions[1].tags["config"]


class TestTagsOfThePreviousRelease:
    def test_a_description_renders_from_protocol_tags_as_the_previous_release_wrote_them(self) -> None:
        """Descriptions are re-rendered whenever a tag changes (a champion replaced): old versions' tags must still read."""
        gate = {"dataset": "mnist", "data_version": "a" * 64, "split": "val", "likelihood": "bernoulli",
                "scoring": "binarized, seed 0", "iwae_k": 20, "iwae_examples": 100, "probe_rows": 600, "seed": 0,
                "held_out_from": "", "held_out_images": 0}
        evaluation = {"split": "test", "judge": "judge123abc", "data_version": "a" * 64, "seed": 0, "iwae_k": 20,
                      "iwae_examples": 50, "probe_max_train": 600, "tsne_points": 300, "regularity_samples": 200}
        tags = {"gates": "passed", "gate_protocol": json.dumps(gate), "gate_iwae_nll": "99.1", "gate_iwae_nll_se": "0.3",
                "gate_probe_accuracy": "0.5", "gate_active_units": "4", "eval_protocol": json.dumps(evaluation),
                "eval_regular": "true", **{key: "1.0" for key in ("eval_iwae_nll", "eval_probe_accuracy", "eval_prior_fd",
                                                                   "eval_ae_prior_fd", "eval_ae_fitted_prior_fd",
                                                                   "eval_midpoint_fd", "eval_ae_midpoint_fd")}}
        text = render_description(tags)
        assert ("Validation (val split, IWAE k=20 on 100 images (binarized, seed 0), probe on 600 training rows, "
                "data aaaaaaaaaaaa): IWAE NLL 99.1") in text
        assert "Test evaluation (judge `judge123`, seed 0): IWAE NLL 1.0 nats (k=20, 50 images), probe accuracy 1.0 (600 " in text
