"""Latent-space evaluation: what the VAE's latent space has learned, beside the auto-encoder baseline (reporting, on test)."""

import time
from typing import Any

import dagster as dg
import torch

from vae_pipeline.core import plots, probes, smoothness, tensor_store, tsne
from vae_pipeline.core.arrays import subsample_indices
from vae_pipeline.core.config import EvaluationConfig, to_dict
from vae_pipeline.core.device import resolve_device
from vae_pipeline.core.inference import (
    active_units,
    decoded_mean,
    encode_mean,
    iwae_nll,
    mean_kl_per_dimension,
)
from vae_pipeline.core.model import VAE
from vae_pipeline.core.reports import scoring_targets
from vae_pipeline.defs.assets.outputs import png_markdown, version_folder
from vae_pipeline.defs.config_classes import dagster_config, to_core
from vae_pipeline.defs.lineage import (
    check_same_data,
    load_model_store,
    load_trained_model,
)
from vae_pipeline.defs.resources import PipelineStorage, write_json_atomic
from vae_pipeline.defs.tracking import MlflowTracking

GROUP = "evaluation"


LatentEvaluationConfig = dagster_config("LatentEvaluationConfig", EvaluationConfig.__doc__, EvaluationConfig, module=__name__)


def _latent_figures(
    name: str,
    model: VAE,
    store: tensor_store.TensorStore,
    config: EvaluationConfig,
    device: torch.device,
    folder: Any,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The figures shared by the VAE and the auto-encoder: probes, kNN, t-SNE, trustworthiness, smoothness."""
    train, test = store["train"], store["test"]
    mu_train, _ = encode_mean(model, train.float_images(), device=device)  # (n_train, d)
    mu_test, logvar_test = encode_mean(model, test.float_images(), device=device)  # (n_test, d)
    figures: dict[str, float] = {}
    probe = probes.linear_probe(mu_train, train.labels, mu_test, test.labels, seed=config.seed, max_train=config.probe_max_train)
    knn = probes.knn_accuracy(mu_train, train.labels, mu_test, test.labels, k=config.knn_k, max_train=config.probe_max_train, seed=config.seed)
    figures["probe_accuracy"] = probe.accuracy
    figures["knn_accuracy"] = knn.accuracy
    figures["active_units"] = float(active_units(mu_test))

    idx = subsample_indices(len(test), config.tsne_points, config.seed)
    t0 = time.perf_counter()
    embedding = tsne.tsne_embedding(mu_test[idx], seed=config.seed)
    figures["tsne_seconds"] = time.perf_counter() - t0
    figures["trustworthiness"] = tsne.trustworthiness_score(
        mu_test[idx], embedding, n_neighbors=config.trustworthiness_neighbors, seed=config.seed
    )
    tsne_png = plots.tsne_scatter_png(
        embedding, test.labels[idx], folder / f"tsne_{name}.png",
        title=f"{name}: t-SNE of {len(idx)} test latents (trustworthiness {figures['trustworthiness']:.3f})",
    )

    a, b = smoothness.pick_interpolation_pairs(test.labels.numpy(), config.smoothness_pairs, config.seed)
    with torch.no_grad():
        stats = smoothness.interpolation_smoothness(
            lambda z: decoded_mean(model, model.decode(z.to(device))).cpu(),
            mu_test[a], mu_test[b], steps=config.smoothness_steps,
        )
    smooth, verdict = smoothness.smoothness_verdict(stats)
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
    config = to_core(config, EvaluationConfig)
    device = resolve_device("auto")
    check_same_data(vae_model, mnist_tensors)
    store = load_model_store(storage, vae_model)
    folder = version_folder(storage, "evaluation", vae_model)
    vae = load_trained_model(storage, vae_model, device)
    ae = load_trained_model(storage, autoencoder_baseline, device)

    vae_figures, vae_extras = _latent_figures("vae", vae, store, config, device, folder)
    ae_figures, ae_extras = _latent_figures("autoencoder", ae, store, config, device, folder)

    train, test = store["train"], store["test"]
    pixels = probes.linear_probe(train.float_images(), train.labels, test.float_images(), test.labels, seed=config.seed, max_train=config.probe_max_train)
    pixels_knn = probes.knn_accuracy(train.float_images(), train.labels, test.float_images(), test.labels, k=config.knn_k, max_train=config.probe_max_train, seed=config.seed)

    idx = torch.as_tensor(subsample_indices(len(test), config.iwae_examples, config.seed))
    generator = torch.Generator().manual_seed(config.seed)
    x = scoring_targets(vae, test.float_images()[idx], generator)
    t0 = time.perf_counter()
    nll = iwae_nll(vae, x, k=config.iwae_k, device=device, generator=torch.Generator(device=device).manual_seed(config.seed))
    iwae_seconds = time.perf_counter() - t0
    kl_dims = mean_kl_per_dimension(vae_extras["mu_test"], vae_extras["logvar_test"])

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
        "config": to_dict(config),
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
