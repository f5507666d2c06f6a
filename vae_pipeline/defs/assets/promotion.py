"""Promotion: the challenger measured beside the champion under one protocol, the gates, the champion alias."""

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import dagster as dg
from mlflow.tracking import MlflowClient

from vae_pipeline.core.data.tensor_store import TensorStore
from vae_pipeline.core.model.config import GateConfig
from vae_pipeline.core.model.device import resolve_device
from vae_pipeline.core.model.vae import VAE
from vae_pipeline.core.selection.promotion import (
    Comparison,
    active_units_needed,
    collapse_gate,
    gate_figures,
    held_out_protocol,
    nll_gate,
    probe_gate,
    protocol_for,
)
from vae_pipeline.core.selection.protocol import MeasurementProtocol, Verdict, comparable
from vae_pipeline.defs.assets.comparison import version_comparison
from vae_pipeline.defs.automation import on_new_data, on_new_data_after_passed_gates
from vae_pipeline.defs.config_classes import dagster_config, to_core
from vae_pipeline.defs.identity.lineage import check_same_data, load_model_store, load_trained_model, stored_tensors
from vae_pipeline.defs.identity.versions import registered
from vae_pipeline.defs.manifests import ChampionComparison, ChampionModel, MnistTensors, TrainedModel
from vae_pipeline.defs.reuse import code_version
from vae_pipeline.defs.storage.folder import PipelineStorage
from vae_pipeline.defs.tracking.failures import mlflow_writes
from vae_pipeline.defs.tracking.models import version_by_alias
from vae_pipeline.defs.tracking.registry import record_gates, record_promotion
from vae_pipeline.defs.tracking.resource import CHAMPION, MlflowTracking
from vae_pipeline.defs.variants import VARIANTS

GROUP = "promotion"
CODE_VERSION = code_version(__name__)  # derived from this file and the core code it imports (defs/reuse.py)
GATED = ("iwae_nll", "iwae_nll_se", "probe_accuracy", "active_units")  # the figures gate_figures returns
PROTOCOL_TAG = "gate_protocol"  # the run tag holding the protocol its gate_* metrics were measured under
MIN_ACTIVE_FRACTION = 0.1  # fewer active units than this share of the latent dims is posterior collapse

ChampionComparisonConfig = dagster_config("ChampionComparisonConfig", GateConfig.__doc__, GateConfig, module=__name__)


def _champion_side(
    context: dg.AssetExecutionContext,
    client: MlflowClient,
    name: str,
    protocol: MeasurementProtocol,
    store: TensorStore,
    device: Any,
    storage: PipelineStorage,
    cfg: GateConfig,
    challenger: Callable[[], VAE],
) -> dict[str, Any]:
    """The champion's figures under `protocol`: recorded when measured alike, else measured again.

    A champion measured on another data version (the one it trained on) is measured again, with
    the challenger, on the validation images neither trained on (`_held_out_side`): then the
    comparison's protocol and the challenger's figures are those too. When that cannot be done, or
    the two differ in what no measurement changes (dataset, likelihood), no verdict is given.
    """
    champion = version_by_alias(client, name, CHAMPION)
    if champion is None:
        return {}
    version, run = int(champion.version), client.get_run(champion.run_id)
    recorded = run.data.tags.get(PROTOCOL_TAG)
    if recorded is not None:
        before = MeasurementProtocol.from_json(
            recorded, f"champion_comparison of champion v{version} (tag {PROTOCOL_TAG} of MLflow run {champion.run_id})")
    else:  # gated before protocols were recorded: no figures to reuse, but what it is and was trained on still decide
        facts = {"dataset": run.data.tags.get("dataset"), "data_version": run.data.tags.get("data_version"),
                 "likelihood": run.data.params.get("model.likelihood")}
        if None in facts.values():
            unknown = ", ".join(k for k, v in facts.items() if v is None)
            return {"champion_version": version, "incomparable": (
                f"champion v{version}'s MLflow run {champion.run_id} records neither a gate protocol nor its {unknown}, so "
                "how to measure it alike is unknown; move the champion alias by hand to a version this pipeline trained")}
        before = replace(protocol, **facts)
    verdict = comparable(before, protocol)
    if not verdict.remeasurable:
        return {"champion_version": version, "incomparable": (
            f"champion v{version} and the challenger cannot be measured alike (champion vs challenger: {verdict})")}
    if verdict.comparable and (figures := _gate_metrics(run)) is not None:
        return {"champion_version": version, "champion": figures, "champion_source": "recorded"}
    if "data_version" in verdict.fields:
        return _held_out_side(context, client, name, champion, before.data_version, verdict, protocol, store, device,
                              storage, cfg, challenger)
    changed = f"its recorded protocol differed: {verdict}" if recorded is not None else "no protocol was recorded"
    context.log.info(f"champion v{version}: {changed}; measuring it again under the challenger's protocol")
    figures = gate_figures(registered(client, name, champion, device).model, store, protocol, device)
    return {"champion_version": version, "champion": figures, "champion_source": f"re-measured ({changed})"}


def _held_out_side(
    context: dg.AssetExecutionContext, client: MlflowClient, name: str, champion: Any, champion_data: str, verdict: Verdict,
    protocol: MeasurementProtocol, store: TensorStore, device: Any, storage: PipelineStorage, cfg: GateConfig,
    challenger: Callable[[], VAE],
) -> dict[str, Any]:
    """Both models on the challenger's validation images that the champion did not train on, or why that cannot be done."""
    version = int(champion.version)
    differ = f"champion v{version} was measured on other data than the challenger (champion vs challenger: {verdict})"
    champion_store = stored_tensors(storage, protocol.dataset, champion_data)
    if champion_store is None:
        return {"champion_version": version, "incomparable": (
            f"{differ}, and the tensor store it trained on, data version {champion_data[:12]}, is not in the data folder "
            f"{storage.location}, so the images it trained on are unknown and any validation image may be one of them; "
            "re-materialize mnist_tensors with the champion's raw files, val_size and split_seed (the store is "
            "content-addressed), or move the champion alias by hand")}
    held = held_out_protocol(protocol, store, champion_store["train"], champion_data, cfg.min_held_out)
    if isinstance(held, str):
        return {"champion_version": version, "incomparable": f"{differ}, and {held}"}
    shared, rows = held
    context.log.info(f"champion v{version} was trained on data version {champion_data[:12]}: measuring both models on the "
                     f"{len(rows)} of {len(store[protocol.split])} {protocol.split} images it did not train on")
    return {
        "protocol": shared,
        "challenger": gate_figures(challenger(), store, shared, device, rows),
        "champion_version": version,
        "champion": gate_figures(registered(client, name, champion, device).model, store, shared, device, rows),
        "champion_source": f"measured with the challenger on the {len(rows)} {protocol.split} images neither trained on",
    }


class PromotionRefused(RuntimeError):
    """champion_model was asked to move the alias to a version whose gates did not all pass."""


def _gate_metrics(run: Any) -> dict[str, float] | None:
    """The gate figures a run recorded under its protocol tag (set after the metrics), or None when it has none."""
    if PROTOCOL_TAG not in run.data.tags or not all(f"gate_{k}" in run.data.metrics for k in GATED):
        return None
    return {k: run.data.metrics[f"gate_{k}"] for k in GATED}


def _recorded_figures(client: MlflowClient, run_id: str, protocol: MeasurementProtocol) -> dict[str, float] | None:
    """The run's gate figures when they were measured alike `protocol`."""
    run = client.get_run(run_id)
    if (figures := _gate_metrics(run)) is None:
        return None
    before = MeasurementProtocol.from_json(run.data.tags[PROTOCOL_TAG], f"champion_comparison (tag {PROTOCOL_TAG} of MLflow run {run_id})")
    return figures if comparable(before, protocol).comparable else None


@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=CODE_VERSION, automation_condition=on_new_data(), kinds={"pytorch", "mlflow"})
def champion_comparison(
    context: dg.AssetExecutionContext,
    config: ChampionComparisonConfig,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: MnistTensors,
    vae_model: TrainedModel,
) -> dg.MaterializeResult:
    """The challenger's IWAE NLL, probe accuracy and active units on the validation split, beside the champion's."""
    cfg = to_core(config, GateConfig)
    check_same_data(vae_model, mnist_tensors)
    device = resolve_device("auto")
    store = load_model_store(storage, vae_model)
    likelihood, latent_dim = vae_model.model_config.likelihood, vae_model.model_config.latent_dim
    protocol = replace(protocol_for(store, likelihood, cfg), code=CODE_VERSION)  # figures of other code are measured again
    client = mlflow_tracking.activate()
    run_id = vae_model.mlflow_run_id
    figures = _recorded_figures(client, run_id, protocol)
    if figures is not None:
        context.log.info(f"v{vae_model.model_version} was measured under this protocol before (run {run_id}); reusing its figures")
    else:
        context.log.info(f"measuring v{vae_model.model_version} on the {protocol.split} split: IWAE k={protocol.iwae_k} "
                         f"on {protocol.iwae_examples} images, probe on {protocol.probe_rows} training rows")
        figures = gate_figures(load_trained_model(storage, vae_model, device), store, protocol, device)
        with mlflow_writes(mlflow_tracking, f"the gate figures of v{vae_model.model_version}", run_id=run_id):
            for key, value in figures.items():
                client.log_metric(run_id, f"gate_{key}", value)
            client.set_tag(run_id, PROTOCOL_TAG, protocol.to_json())  # last: it vouches for the metrics above
    champion_side = _champion_side(context, client, vae_model.model_name, protocol, store, device, storage, cfg,
                                   lambda: load_trained_model(storage, vae_model, device))
    comparison = Comparison(**{"protocol": protocol, "challenger": figures, **champion_side})
    nll_ok, nll_text = nll_gate(comparison, cfg.nll_tolerance)
    probe_ok, probe_text = probe_gate(comparison, cfg.probe_tolerance)
    manifest = ChampionComparison(
        **comparison.to_dict(),
        model_name=vae_model.model_name,
        model_version=vae_model.model_version,
        latent_dim=latent_dim,
        gates={"nll": [nll_ok, nll_text], "probe": [probe_ok, probe_text],
               "collapse": list(collapse_gate(figures["active_units"], latent_dim, MIN_ACTIVE_FRACTION))},
    )
    with mlflow_writes(mlflow_tracking, f"the gate verdicts of v{vae_model.model_version}"):
        record_gates(client, manifest)  # the registry says how the version measured and whether it passed, failures too
    champion = comparison.champion or {}
    return dg.MaterializeResult(
        value=manifest,
        metadata={
            "model_version": vae_model.model_version,
            "champion_version": comparison.champion_version or 0,
            "val_iwae_nll": round(comparison.challenger["iwae_nll"], 3),
            "val_iwae_nll_se": round(comparison.challenger["iwae_nll_se"], 3),
            "val_probe_accuracy": round(comparison.challenger["probe_accuracy"], 4),
            "champion_val_iwae_nll": round(champion.get("iwae_nll", math.nan), 3),
            "champion_val_probe_accuracy": round(champion.get("probe_accuracy", math.nan), 4),
            "champion_source": comparison.champion_source or "",
            "incomparable": comparison.incomparable or "",
            "protocol": dg.MetadataValue.json(manifest.protocol),
            "nll_gate": nll_text,
            "probe_gate": probe_text,
        },
    )


def _check(passed: bool, description: str, comparison: ChampionComparison) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=passed,
        description=description,
        metadata={"champion_version": comparison.champion_version or 0, "protocol": dg.MetadataValue.json(comparison.protocol)},
    )


@dg.asset_check(asset=champion_comparison, blocking=True,
                description="IWAE NLL on the validation split is not worse than the champion's (same protocol) by more than the tolerance.")
def nll_not_worse_than_champion(champion_comparison: ChampionComparison) -> dg.AssetCheckResult:
    return _check(*champion_comparison.gates["nll"], champion_comparison)


@dg.asset_check(asset=champion_comparison, blocking=True,
                description="Linear-probe accuracy on the validation split is not worse than the champion's by more than the tolerance.")
def probe_not_worse_than_champion(champion_comparison: ChampionComparison) -> dg.AssetCheckResult:
    return _check(*champion_comparison.gates["probe"], champion_comparison)


@dg.asset_check(asset=champion_comparison, blocking=True,
                description=f"At least {MIN_ACTIVE_FRACTION:.0%} of the latent dimensions are active on the validation split.")
def no_posterior_collapse(champion_comparison: ChampionComparison) -> dg.AssetCheckResult:
    active = int(champion_comparison.challenger["active_units"])
    latent_dim = champion_comparison.latent_dim
    passed, description = collapse_gate(active, latent_dim, MIN_ACTIVE_FRACTION)
    return dg.AssetCheckResult(
        passed=passed,
        description=description,
        metadata={"active_units": active, "needed": active_units_needed(latent_dim, MIN_ACTIVE_FRACTION)},
    )


# After version_comparison: its default baseline is the champion before this run moves the alias.
@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=CODE_VERSION, automation_condition=on_new_data_after_passed_gates(),
          kinds={"mlflow"}, deps=[version_comparison])
def champion_model(
    context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking, vae_model: TrainedModel,
    champion_comparison: ChampionComparison,
) -> dg.MaterializeResult:
    """The registered version serving as champion: moved only after the promotion gates passed."""
    name, version = vae_model.model_name, vae_model.model_version
    if champion_comparison.model_version != version:
        raise PromotionRefused(f"champion_comparison measured v{champion_comparison.model_version}, not v{version}; "
                               "materialize champion_comparison with this vae_model first.")
    failed = {gate: text for gate, (passed, text) in champion_comparison.gates.items() if not passed}
    if failed:  # blocking checks stop this step only in their own run; a later run must not promote either
        raise PromotionRefused(f"v{version} did not pass the promotion gates ({'; '.join(f'{g}: {t}' for g, t in failed.items())}); "
                               "the champion alias stays where it is.")
    client = mlflow_tracking.activate()
    previous = version_by_alias(client, name, CHAMPION)
    measured_against = champion_comparison.champion_version
    if (int(previous.version) if previous else None) != measured_against:
        # Variants are promoted one partition at a time: another variant may have become champion since
        # this one was compared. Promote only a version measured against the champion it replaces.
        raise PromotionRefused(
            f"v{version} was compared with champion {f'v{measured_against}' if measured_against else '(none)'}, but the "
            f"champion is now v{previous.version if previous else '(none)'}; re-materialize champion_comparison"
            f"[{context.partition_key}] to measure it against the current champion."
        )
    with mlflow_writes(mlflow_tracking, f"the promotion of {name} v{version}"):
        client.set_registered_model_alias(name, CHAMPION, str(version))
        why = record_promotion(client, name, version, int(previous.version) if previous else None, champion_comparison)
    context.log.info(f"{name} v{version} is champion (was {previous.version if previous else 'none'}): {why}")
    figures = champion_comparison.challenger
    return dg.MaterializeResult(
        value=ChampionModel(model_name=name, model_version=version, previous_version=int(previous.version) if previous else None,
                            model_uri=f"models:/{name}@{CHAMPION}"),
        metadata={"model_name": name, "model_version": version,
                  "previous_champion": int(previous.version) if previous else 0,
                  "val_iwae_nll": figures["iwae_nll"], "val_probe_accuracy": figures["probe_accuracy"], "promotion": why},
    )


GATES = [nll_not_worse_than_champion, probe_not_worse_than_champion, no_posterior_collapse]
