"""Latent-space evaluation (VAE beside the auto-encoder baseline) and promotion to champion."""

import math
import time
from typing import Any

import dagster as dg
import torch

from vae_pipeline.core import data, evaluation, plots
from vae_pipeline.core.device import resolve_device
from vae_pipeline.core.inference import active_units, decoded_mean, encode_mean, iwae_nll, kl_per_dimension
from vae_pipeline.core.model import VAE
from vae_pipeline.core.reports import scoring_targets
from vae_pipeline.core.train import load_model
from vae_pipeline.defs.assets.outputs import png_markdown, version_folder
from vae_pipeline.defs.resources import PipelineStorage, write_json_atomic
from vae_pipeline.defs.tracking import CHAMPION, MlflowTracking, version_by_alias

GROUP = "evaluation"


class LatentEvaluationConfig(dg.Config):
    """How much evaluation to buy: the defaults keep the whole pipeline near 3 minutes on 2 CPU cores."""

    seed: int = 0
    tsne_points: int = 5000  # test images mapped by t-SNE (openTSNE); ~25 s each for VAE and AE on 2 cores
    trustworthiness_neighbors: int = 10
    probe_max_train: int = 10_000  # training rows for the probes, the same rows for latents and pixels
    knn_k: int = 5
    iwae_k: int = 1000  # importance samples; 5000 is the literature's protocol (~3 min on all 10,000 on 2 cores)
    iwae_examples: int = 2000  # test images for the IWAE NLL; 10000 for the full test set
    smoothness_pairs: int = 100  # latent interpolations between test digits of different classes
    smoothness_steps: int = 10


def _latent_figures(
    name: str,
    model: VAE,
    store: data.TensorStore,
    config: LatentEvaluationConfig,
    device: torch.device,
    folder: Any,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The figures shared by the VAE and the auto-encoder: probes, kNN, t-SNE, trustworthiness, smoothness."""
    train, test = store["train"], store["test"]
    mu_train, _ = encode_mean(model, train.float_images(), device=device)  # (n_train, d)
    mu_test, logvar_test = encode_mean(model, test.float_images(), device=device)  # (n_test, d)
    figures: dict[str, float] = {}
    probe = evaluation.linear_probe(mu_train, train.labels, mu_test, test.labels, seed=config.seed, max_train=config.probe_max_train)
    knn = evaluation.knn_accuracy(mu_train, train.labels, mu_test, test.labels, k=config.knn_k, max_train=config.probe_max_train, seed=config.seed)
    figures["probe_accuracy"] = probe.accuracy
    figures["knn_accuracy"] = knn.accuracy
    figures["active_units"] = float(active_units(mu_test))

    idx = evaluation.subsample_indices(len(test), config.tsne_points, config.seed)
    t0 = time.perf_counter()
    embedding = evaluation.tsne_embedding(mu_test[idx], seed=config.seed)
    figures["tsne_seconds"] = time.perf_counter() - t0
    figures["trustworthiness"] = evaluation.trustworthiness_score(
        mu_test[idx], embedding, n_neighbors=config.trustworthiness_neighbors, seed=config.seed
    )
    tsne_png = plots.tsne_scatter_png(
        embedding, test.labels[idx], folder / f"tsne_{name}.png",
        title=f"{name}: t-SNE of {len(idx)} test latents (trustworthiness {figures['trustworthiness']:.3f})",
    )

    a, b = evaluation.pick_interpolation_pairs(test.labels.numpy(), config.smoothness_pairs, config.seed)
    with torch.no_grad():
        stats = evaluation.interpolation_smoothness(
            lambda z: decoded_mean(model, model.decode(z.to(device))).cpu(),
            mu_test[a], mu_test[b], steps=config.smoothness_steps,
        )
    smooth, verdict = evaluation.smoothness_verdict(stats)
    summary = stats.summary()
    figures["smoothness_max_step_ratio"] = float(summary["max_step_ratio_median"])
    figures["smoothness_path_ratio"] = float(summary["path_ratio_median"])
    figures["smooth"] = float(smooth)
    extras = {"tsne_png": tsne_png, "verdict": verdict, "smooth": smooth, "probe": probe, "knn": knn,
              "mu_test": mu_test, "logvar_test": logvar_test}
    return figures, extras


@dg.asset(group_name=GROUP, kinds={"scikitlearn", "mlflow"})
def latent_evaluation(
    context: dg.AssetExecutionContext,
    config: LatentEvaluationConfig,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: dict,
    vae_model: dict,
    autoencoder_baseline: dict,
) -> dg.Output:
    """Is the latent space smooth and useful? t-SNE, probes, kNN, smoothness, active units, IWAE NLL; VAE vs AE."""
    device = resolve_device("auto")
    store = data.load_tensor_store(mnist_tensors["path"])
    folder = version_folder(storage, "evaluation", vae_model)
    vae = load_model(vae_model["checkpoint"], device)
    ae = load_model(autoencoder_baseline["checkpoint"], device)

    vae_figures, vae_extras = _latent_figures("vae", vae, store, config, device, folder)
    ae_figures, ae_extras = _latent_figures("autoencoder", ae, store, config, device, folder)

    train, test = store["train"], store["test"]
    pixels = evaluation.linear_probe(train.float_images(), train.labels, test.float_images(), test.labels, seed=config.seed, max_train=config.probe_max_train)
    pixels_knn = evaluation.knn_accuracy(train.float_images(), train.labels, test.float_images(), test.labels, k=config.knn_k, max_train=config.probe_max_train, seed=config.seed)

    idx = torch.as_tensor(evaluation.subsample_indices(len(test), config.iwae_examples, config.seed))
    generator = torch.Generator().manual_seed(config.seed)
    x = scoring_targets(vae, test.float_images()[idx], generator)
    t0 = time.perf_counter()
    nll = iwae_nll(vae, x, k=config.iwae_k, device=device, generator=torch.Generator(device=device).manual_seed(config.seed))
    iwae_seconds = time.perf_counter() - t0
    kl_dims = kl_per_dimension(vae_extras["mu_test"], vae_extras["logvar_test"])

    metrics = {
        **{f"eval_{k}": v for k, v in vae_figures.items()},
        **{f"eval_ae_{k}": v for k, v in ae_figures.items()},
        "eval_probe_accuracy_pixels": pixels.accuracy,
        "eval_knn_accuracy_pixels": pixels_knn.accuracy,
        "eval_iwae_nll": float(nll.mean()),
        "eval_iwae_k": float(config.iwae_k),
        "eval_iwae_examples": float(len(idx)),
        "eval_iwae_seconds": iwae_seconds,
        "eval_kl_total": float(kl_dims.sum()),
    }
    report = {
        "metrics": metrics,
        "kl_per_dimension": kl_dims.tolist(),
        "latent_dim": vae.cfg.latent_dim,
        "verdict": vae_extras["verdict"],
        "smooth": vae_extras["smooth"],
        "autoencoder_verdict": ae_extras["verdict"],
        "config": config.model_dump(),
        "model_name": vae_model["model_name"],
        "model_version": vae_model["model_version"],
        "mlflow_run_id": vae_model["mlflow_run_id"],
    }
    metrics_path = folder / "metrics.json"
    write_json_atomic(metrics_path, report)
    client = mlflow_tracking.activate()
    run_id = vae_model["mlflow_run_id"]
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    for path in (metrics_path, vae_extras["tsne_png"], ae_extras["tsne_png"]):
        client.log_artifact(run_id, str(path), artifact_path="evaluation")

    table = "\n".join(
        [
            "| figure | VAE | auto-encoder | raw pixels |",
            "| --- | --- | --- | --- |",
            f"| linear probe accuracy | {vae_figures['probe_accuracy']:.4f} | {ae_figures['probe_accuracy']:.4f} | {pixels.accuracy:.4f} |",
            f"| {config.knn_k}-NN accuracy | {vae_figures['knn_accuracy']:.4f} | {ae_figures['knn_accuracy']:.4f} | {pixels_knn.accuracy:.4f} |",
            f"| t-SNE trustworthiness | {vae_figures['trustworthiness']:.4f} | {ae_figures['trustworthiness']:.4f} | |",
            f"| interpolation max/mean step (median) | {vae_figures['smoothness_max_step_ratio']:.3f} | {ae_figures['smoothness_max_step_ratio']:.3f} | |",
            f"| interpolation path ratio (median) | {vae_figures['smoothness_path_ratio']:.3f} | {ae_figures['smoothness_path_ratio']:.3f} | |",
            f"| active units | {int(vae_figures['active_units'])} / {vae.cfg.latent_dim} | {int(ae_figures['active_units'])} / {ae.cfg.latent_dim} | |",
            f"| IWAE NLL, k={config.iwae_k}, {len(idx)} test images (nats) | {metrics['eval_iwae_nll']:.2f} | | |",
        ]
    )
    context.log.info(f"VAE latent space: {vae_extras['verdict']}")
    return dg.Output(
        report,
        metadata={
            "smooth": vae_extras["smooth"],
            "verdict": vae_extras["verdict"],
            "autoencoder_verdict": ae_extras["verdict"],
            "comparison": dg.MetadataValue.md(table),
            "iwae_nll": round(metrics["eval_iwae_nll"], 3),
            "probe_accuracy": round(vae_figures["probe_accuracy"], 4),
            "probe_accuracy_pixels": round(pixels.accuracy, 4),
            "trustworthiness": round(vae_figures["trustworthiness"], 4),
            "active_units": int(vae_figures["active_units"]),
            "tsne_vae": png_markdown(vae_extras["tsne_png"], "t-SNE of VAE latents"),
            "tsne_autoencoder": png_markdown(ae_extras["tsne_png"], "t-SNE of auto-encoder codes"),
            "metrics_json": dg.MetadataValue.path(str(metrics_path)),
            "model_version": vae_model["model_version"],
        },
    )


# --- quality gates: blocking checks against the current champion -------------------------------

NLL_TOLERANCE_NATS = 1.0  # IWAE estimates on 2,000 images wobble by a few tenths of a nat between seeds
PROBE_TOLERANCE = 0.005  # half a point of accuracy: probe noise on 10,000 test images is ~0.3 points
MIN_ACTIVE_FRACTION = 0.1  # fewer active units than this share of the latent dims is posterior collapse


def _champion_metrics(mlflow_tracking: MlflowTracking, vae_model: dict) -> tuple[int | None, dict[str, float]]:
    client = mlflow_tracking.activate()
    champion = version_by_alias(client, vae_model["model_name"], CHAMPION)
    if champion is None:
        return None, {}
    return int(champion.version), client.get_run(champion.run_id).data.metrics


def _gate(
    name: str, value: float, champion_version: int | None, champion_value: float | None, ok: bool, unit: str
) -> dg.AssetCheckResult:
    if champion_version is None:
        description = f"no champion yet: {name} {value:.4f}{unit} accepted"
    else:
        description = f"{name} {value:.4f}{unit} against champion v{champion_version}'s {champion_value:.4f}{unit}"
    return dg.AssetCheckResult(
        passed=ok,
        description=description,
        metadata={name: value, "champion_version": champion_version or 0, f"champion_{name}": champion_value or math.nan},
    )


@dg.asset_check(asset=latent_evaluation, blocking=True, additional_ins={"vae_model": dg.AssetIn("vae_model")},
                description=f"IWAE NLL is not worse than the champion's by more than {NLL_TOLERANCE_NATS} nats.")
def nll_not_worse_than_champion(latent_evaluation: dict, vae_model: dict, mlflow_tracking: MlflowTracking) -> dg.AssetCheckResult:
    version, metrics = _champion_metrics(mlflow_tracking, vae_model)
    value, before = latent_evaluation["metrics"]["eval_iwae_nll"], metrics.get("eval_iwae_nll")
    ok = before is None or value <= before + NLL_TOLERANCE_NATS
    return _gate("iwae_nll", value, version, before, ok, " nats")


@dg.asset_check(asset=latent_evaluation, blocking=True, additional_ins={"vae_model": dg.AssetIn("vae_model")},
                description=f"Linear-probe accuracy is not worse than the champion's by more than {PROBE_TOLERANCE}.")
def probe_not_worse_than_champion(latent_evaluation: dict, vae_model: dict, mlflow_tracking: MlflowTracking) -> dg.AssetCheckResult:
    version, metrics = _champion_metrics(mlflow_tracking, vae_model)
    value, before = latent_evaluation["metrics"]["eval_probe_accuracy"], metrics.get("eval_probe_accuracy")
    ok = before is None or value >= before - PROBE_TOLERANCE
    return _gate("probe_accuracy", value, version, before, ok, "")


@dg.asset_check(asset=latent_evaluation, blocking=True,
                description=f"At least {MIN_ACTIVE_FRACTION:.0%} of the latent dimensions are active (no posterior collapse).")
def no_posterior_collapse(latent_evaluation: dict) -> dg.AssetCheckResult:
    active = int(latent_evaluation["metrics"]["eval_active_units"])
    needed = max(1, math.ceil(MIN_ACTIVE_FRACTION * latent_evaluation["latent_dim"]))
    return dg.AssetCheckResult(
        passed=active >= needed,
        description=f"{active} of {latent_evaluation['latent_dim']} latent units active (need {needed})",
        metadata={"active_units": active, "needed": needed,
                  "kl_per_dimension": dg.MetadataValue.json([round(v, 4) for v in latent_evaluation["kl_per_dimension"]])},
    )


@dg.asset(group_name=GROUP, kinds={"mlflow"})
def champion_model(
    context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking, vae_model: dict, latent_evaluation: dict
) -> dg.Output:
    """The registered version serving as champion: promoted only after the evaluation's gates passed."""
    client = mlflow_tracking.activate()
    name, version = vae_model["model_name"], vae_model["model_version"]
    previous = version_by_alias(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    context.log.info(f"{name} v{version} is champion (was {previous.version if previous else 'none'})")
    return dg.Output(
        {"model_name": name, "model_version": version, "previous_version": int(previous.version) if previous else None,
         "model_uri": f"models:/{name}@{CHAMPION}"},
        metadata={"model_name": name, "model_version": version,
                  "previous_champion": int(previous.version) if previous else 0,
                  "iwae_nll": latent_evaluation["metrics"]["eval_iwae_nll"],
                  "probe_accuracy": latent_evaluation["metrics"]["eval_probe_accuracy"]},
    )


GATES = [nll_not_worse_than_champion, probe_not_worse_than_champion, no_posterior_collapse]
