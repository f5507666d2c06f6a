"""The model registry explains itself: what each version is, how it measured, whether it passed, why it is champion.

A version's facts are its tags, one key per fact, set again (never appended) whenever the fact is
measured again: a re-run or a reused training overwrites, it does not duplicate. Its description
is rendered from those tags after every change, so the two cannot disagree and the version page of
the MLflow UI reads as a few sentences. The champion's moves are also kept on the registered model
(tag `champion_history`, newest first).

The figures are linked, as metrics, to the MLflow 3 logged model the version was registered from,
so `mlflow.search_logged_models(order_by=[{"field_name": "metrics.gate_iwae_nll", ...}])` sorts
versions by them. A link re-logs the run's latest value of a metric with its own timestamp and
step plus the model id (and the run's training dataset): MLflow drops the identical run-metric row,
so the run's history gains no second point, and writes the model's row once however often this runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from mlflow.entities import Metric, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from vae_pipeline.core.model.config import ModelConfig, TrainConfig, to_dict
from vae_pipeline.core.selection.protocol import MeasurementProtocol
from vae_pipeline.defs.manifests import ChampionComparison, LatentEvaluation, TrainedModel
from vae_pipeline.defs.tracking.resource import TrackingError

CHAMPION_HISTORY = "champion_history"  # registered-model tag: one line per move of the champion alias, newest first
HISTORY_LENGTH = 20  # moves kept there; each version keeps its own `promotion` tag for good
GATES = ("nll", "probe", "collapse")  # champion_comparison's gates (ChampionComparison.gates keys), in the order shown
GATE_FIGURES = ("iwae_nll", "iwae_nll_se", "probe_accuracy", "active_units")  # logged on the run as gate_<name>
EVAL_HEADLINE = ("eval_iwae_nll", "eval_probe_accuracy", "eval_prior_fd", "eval_ae_prior_fd", "eval_ae_fitted_prior_fd",
                 "eval_midpoint_fd", "eval_ae_midpoint_fd")  # the figures tagged; every eval_* metric is linked


def config_summary(model_config: ModelConfig, train_config: TrainConfig) -> str:
    """A version's variant in a few words, e.g. "mlp 400 z20 beta1 bernoulli, 30 epochs", then training knobs off their defaults."""
    widths = model_config.conv_channels if model_config.architecture == "conv" else model_config.hidden_dims
    likelihood = model_config.likelihood
    if likelihood == "gaussian":
        sigma = model_config.gaussian_sigma
        likelihood += " learned sigma" if sigma is None else f" sigma {sigma:g}"
    headline = (f"{model_config.architecture} {'-'.join(map(str, widths))} z{model_config.latent_dim} "
                f"beta{train_config.beta:g} {likelihood}, {train_config.epochs} epochs")
    defaults, train = to_dict(TrainConfig()), to_dict(train_config)
    knobs = [f"{key} {train[key]}" for key, default in defaults.items()
             if key not in ("beta", "epochs") and train[key] != default]
    return ", ".join([headline, *knobs])


def describe_version(client: MlflowClient, vae_model: TrainedModel, dagster_run_url: Callable[[str], str]) -> None:
    """Tag a registered version with what it is (variant, data, the Dagster run that made it); link its training metrics.

    Also called when training was reused: the tags are the same, so nothing changes, and a version
    registered before versions described themselves gets its description.
    """
    name, version = vae_model.model_name, vae_model.model_version
    if version is None:  # not registered (the auto-encoder baseline): no registry page to describe
        return
    run = client.get_run(vae_model.mlflow_run_id)
    dagster_run = run.data.tags["dagster.run_id"]  # the run that trained (or registered) it, not one that reused it
    facts = {
        "variant": vae_model.variant,
        "config": config_summary(vae_model.model_config, vae_model.train_config),
        "dataset": vae_model.dataset,
        "data_version": vae_model.data_version,
        "fingerprint": vae_model.fingerprint,
        "dagster_run_id": dagster_run,
        "dagster_run_url": dagster_run_url(dagster_run),
    }
    model_id = _logged_model_id(client, _update(client, name, version, facts), run)
    client.set_logged_model_tags(model_id, {**facts, "registered_as": f"{name} v{version}"})
    _link_metrics(client, run, model_id, [key for key in vae_model.final_metrics if key != "epoch"])


def record_gates(client: MlflowClient, comparison: ChampionComparison) -> None:
    """Tag the challenger with its validation figures, their protocol and each gate's outcome; link the figures."""
    name, version = comparison.model_name, comparison.model_version
    figures, outcomes = comparison.challenger, {gate: comparison.gates[gate] for gate in GATES}
    failed = [gate for gate, (passed, _) in outcomes.items() if not passed]
    tags = {
        "gate_protocol": MeasurementProtocol.from_dict(comparison.protocol).to_json(),  # as the run's gate_protocol tag
        **{f"gate_{key}": _number(figures[key]) for key in GATE_FIGURES if key != "active_units"},
        "gate_active_units": str(int(figures["active_units"])),
        **{f"gate.{gate}": f"{'passed' if passed else 'failed'}: {text}" for gate, (passed, text) in outcomes.items()},
        "gates": f"failed: {', '.join(failed)}" if failed else "passed",
    }
    current = _update(client, name, version, tags)
    run = client.get_run(current.run_id)
    _link_metrics(client, run, _logged_model_id(client, current, run), [f"gate_{key}" for key in GATE_FIGURES])


def record_evaluation(client: MlflowClient, report: LatentEvaluation) -> None:
    """Tag the evaluated version with the headline test-split figures and how they were measured; link every eval figure."""
    name, version = report.model_name, report.model_version
    if version is None:
        return
    metrics = report.metrics
    tags = {
        "eval_protocol": MeasurementProtocol.from_dict(report.protocol).to_json(),
        **{key: _number(metrics[key]) for key in EVAL_HEADLINE},
        "eval_regular": "true" if report.regular else "false",
    }
    current = _update(client, name, version, tags)
    run = client.get_run(current.run_id)
    _link_metrics(client, run, _logged_model_id(client, current, run), list(metrics))


def record_promotion(client: MlflowClient, name: str, version: int, previous: int | None, comparison: ChampionComparison,
                     now: datetime | None = None) -> str:
    """Say why `version` now holds the champion alias: its `promotion` tag, the one it replaced, the model's history.

    `previous` is the version that held the alias before it moved. When the alias did not move
    (a re-run), what was said stays as it was. Returns the reason.
    """
    current = client.get_model_version(name, str(version))
    if previous == version and "promotion" in current.tags:
        return current.tags["promotion"]
    when = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    why = f"champion since {when}: {_promotion_reason(version, previous, comparison)}"
    _update(client, name, version, {"promotion": why}, remove=("replaced",))
    if previous is not None and previous != version:
        _update(client, name, previous, {"replaced": f"replaced as champion by v{version} on {when}"})
    history = client.get_registered_model(name).tags.get(CHAMPION_HISTORY, "")
    client.set_registered_model_tag(name, CHAMPION_HISTORY, "\n".join([f"v{version} {why}", *history.splitlines()][:HISTORY_LENGTH]))
    return why


def render_description(tags: dict[str, str]) -> str:
    """A version's description, in markdown, from its tags (sections whose tags are missing are left out)."""
    parts = []
    if "config" in tags:
        variant = f"Variant `{tags['variant']}`: " if "variant" in tags else ""
        parts.append(f"{variant}**{tags['config']}** on {tags['dataset']}, data version `{tags['data_version'][:12]}`; "
                     f"trained by Dagster run [{tags['dagster_run_id'][:8]}]({tags['dagster_run_url']}).")
    parts += [_capitalized(tags[key]) + "." for key in ("promotion", "replaced") if key in tags]
    if "gates" in tags:
        gated = MeasurementProtocol.from_json(tags["gate_protocol"], "champion_comparison of this version")
        parts.append(f"Validation ({gated.describe()}): IWAE NLL {tags['gate_iwae_nll']} "
                     f"± {tags['gate_iwae_nll_se']} nats, probe accuracy {tags['gate_probe_accuracy']}, "
                     f"{tags['gate_active_units']} active units.")
        parts.append("\n".join([f"Promotion gates: **{tags['gates']}**",
                                *(f"- {gate}: {tags[f'gate.{gate}']}" for gate in GATES if f"gate.{gate}" in tags)]))
    if "eval_protocol" in tags:
        # An earlier release recorded no dataset or likelihood with the test figures; the text shows neither.
        p = MeasurementProtocol.from_json(tags["eval_protocol"], "latent_evaluation of this version",
                                          dataset=tags.get("dataset", ""), likelihood="")
        parts.append(
            f"Test evaluation (judge `{p.judge[:8]}`, seed {p.seed}): IWAE NLL {tags['eval_iwae_nll']} nats "
            f"(k={p.iwae_k}, {p.iwae_examples} images), probe accuracy {tags['eval_probe_accuracy']} ("
            f"{p.probe_rows} training rows); judge FD to test digits of decoded prior draws {tags['eval_prior_fd']} "
            f"(AE {tags['eval_ae_prior_fd']}, AE fitted Gaussian {tags['eval_ae_fitted_prior_fd']}), of midpoints "
            f"{tags['eval_midpoint_fd']} (AE {tags['eval_ae_midpoint_fd']}); latent space more regular than the AE's: "
            f"{'yes' if tags['eval_regular'] == 'true' else 'no'}."
        )
    return "\n\n".join(parts)


def _update(client: MlflowClient, name: str, version: int, tags: dict[str, str], remove: Iterable[str] = ()) -> ModelVersion:
    """Set the tags whose values changed, drop `remove`, then render the description from all the version's tags."""
    current = client.get_model_version(name, str(version))
    for key, value in tags.items():
        if current.tags.get(key) != value:
            client.set_model_version_tag(name, str(version), key, value)
    for key in remove:
        if key in current.tags:
            client.delete_model_version_tag(name, str(version), key)
    # Read back rather than merge locally: another step of the same run may have tagged it meanwhile.
    updated = client.get_model_version(name, str(version))
    description = render_description(updated.tags)
    if updated.description != description:
        client.update_model_version(name, str(version), description=description)
    return updated


def _logged_model_id(client: MlflowClient, version: ModelVersion, run: Run) -> str:
    """The MLflow 3 logged model a version was registered from (its source is models:/<model id>)."""
    if version.model_id:
        return version.model_id
    for model in client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                             filter_string=f"source_run_id = '{run.info.run_id}'"):
        if version.source == f"models:/{model.model_id}":
            return model.model_id
    raise TrackingError(
        f"{version.name} v{version.version} was registered from {version.source}, not from a logged model of MLflow run "
        f"{run.info.run_id}; its figures cannot be linked to it. Register that run's logged model (models:/<model id>) instead."
    )


def _link_metrics(client: MlflowClient, run: Run, model_id: str, keys: Iterable[str]) -> None:
    """Link the run's latest value of each metric to the logged model, on the run's training dataset."""
    inputs = run.inputs.dataset_inputs if run.inputs else []
    if not inputs:
        raise TrackingError(f"MLflow run {run.info.run_id} records no input dataset; re-materialize vae_model to log it.")
    dataset = inputs[0].dataset
    # A value linked before is not linked again: the store refuses a second link of the same point.
    already = {(m.key, m.timestamp, m.step) for m in client.get_logged_model(model_id).metrics or []}
    linked = []
    for key in keys:
        history = client.get_metric_history(run.info.run_id, key)
        if not history:
            raise TrackingError(f"MLflow run {run.info.run_id} has no metric {key!r} to link to logged model {model_id}; "
                                "re-materialize the asset that logs it.")
        last = max(history, key=lambda m: (m.step, m.timestamp))
        if (key, last.timestamp, last.step) in already:
            continue
        linked.append(Metric(key, last.value, last.timestamp, last.step, model_id=model_id,
                             dataset_name=dataset.name, dataset_digest=dataset.digest))
    if linked:
        client.log_batch(run.info.run_id, metrics=linked)


def _promotion_reason(version: int, previous: int | None, comparison: ChampionComparison) -> str:
    mine, theirs, other = comparison.challenger, comparison.champion, comparison.champion_version
    where = MeasurementProtocol.from_dict(comparison.protocol).describe()
    if previous == version:
        return (f"v{version} already held the alias (set by hand, or before promotions were recorded); val IWAE NLL "
                f"{mine['iwae_nll']:.2f} nats, probe accuracy {mine['probe_accuracy']:.4f} ({where})")
    if theirs is None:
        reason = f"val IWAE NLL {mine['iwae_nll']:.2f} nats, probe accuracy {mine['probe_accuracy']:.4f} ({where})"
        if previous is None:
            return f"{reason}; first champion"
        return f"{reason}; v{previous} took the alias after the comparison and was not compared; replaces v{previous}"
    reason = (f"val IWAE NLL {mine['iwae_nll']:.2f} vs v{other}'s {theirs['iwae_nll']:.2f} nats, probe accuracy "
              f"{mine['probe_accuracy']:.4f} vs {theirs['probe_accuracy']:.4f} (same protocol: {where}; v{other}'s "
              f"figures {comparison.champion_source})")
    return reason + (f"; replaces v{previous}" if previous is not None else "")


def _number(value: float) -> str:
    return f"{value:.4f}"  # tags are read by people; four decimals are below every figure's noise


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]
