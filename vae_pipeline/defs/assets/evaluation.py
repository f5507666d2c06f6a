"""Latent-space evaluation (reporting, on test): is the VAE's latent space more regular than an auto-encoder's?

The verdict comes from an independent judge (the digit_classifier asset): decoded prior draws,
draws from a Gaussian fitted to the auto-encoder's codes, and midpoints between codes, each
scored by their Fréchet distance to real test digits in the judge's feature space. Probes,
t-SNE, interpolation smoothness and the IWAE NLL are supporting figures.
"""

import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pydantic
import torch

from vae_pipeline.core.data.tensor_store import TensorStore
from vae_pipeline.core.evaluation import plots, probes, regularity, smoothness, tsne
from vae_pipeline.core.evaluation.arrays import subsample_indices
from vae_pipeline.core.evaluation.judge import Judge, judge_outputs, load_judge
from vae_pipeline.core.evaluation.reports import scoring_targets
from vae_pipeline.core.model.config import EvaluationConfig, to_dict
from vae_pipeline.core.model.device import resolve_device
from vae_pipeline.core.model.inference import (
    active_units,
    decode_latents,
    encode_mean,
    iwae_nll,
    mean_kl_per_dimension,
    rate_distortion,
)
from vae_pipeline.core.model.vae import VAE
from vae_pipeline.core.selection.protocol import MeasurementProtocol, comparable
from vae_pipeline.core.stopwatch import Stopwatch
from vae_pipeline.core.streams import stream
from vae_pipeline.defs.assets.outputs import png_markdown, version_folder
from vae_pipeline.defs.automation import on_new_data
from vae_pipeline.defs.config_classes import dagster_config, to_core
from vae_pipeline.defs.identity import versions
from vae_pipeline.defs.identity.lineage import (
    LineageError,
    check_judge_data,
    check_same_data,
    load_model_store,
    load_trained_model,
)
from vae_pipeline.defs.identity.versions import JUST_TRAINED
from vae_pipeline.defs.manifests import DigitClassifier, LatentEvaluation, MnistTensors, TrainedModel, write_manifest
from vae_pipeline.defs.reuse import code_version, stored_result
from vae_pipeline.defs.storage.folder import PipelineStorage, write_json_atomic
from vae_pipeline.defs.tracking.failures import mlflow_writes
from vae_pipeline.defs.tracking.registry import record_evaluation
from vae_pipeline.defs.tracking.resource import MlflowTracking
from vae_pipeline.defs.variants import VARIANTS

GROUP = "evaluation"
CODE_VERSION = code_version(__name__)  # derived from this file and the core code it imports (defs/reuse.py)
SHOWN_SAMPLES = 64  # decoded draws per panel of the side-by-side picture (an 8x8 mosaic)
MANIFOLD_SIDE = 20  # the 2-D manifold picture decodes a 20 x 20 grid of Gaussian quantiles

LatentEvaluationConfig = dagster_config(
    "LatentEvaluationConfig", EvaluationConfig.__doc__, EvaluationConfig, module=__name__,
    extra={"model_version": (str, pydantic.Field(JUST_TRAINED, description=(
        "Which VAE to evaluate: empty for the version this run trained, a registered version number (7) "
        "or an alias (champion, challenger) of the dataset's registered model.")))},
)


def evaluation_protocol(mnist_tensors: MnistTensors, config: EvaluationConfig, likelihood: str, judge: str) -> MeasurementProtocol:
    """How latent_evaluation measures a model of `likelihood` on this run's test split, judged by `judge`."""
    counts = mnist_tensors.counts
    named = ("seed", "iwae_k", "iwae_examples", "probe_max_train", "regularity_samples")  # fields of the protocol itself
    return MeasurementProtocol(
        dataset=mnist_tensors.dataset, data_version=mnist_tensors.content_sha256, split="test",
        likelihood=likelihood, seed=config.seed, iwae_k=config.iwae_k, iwae_examples=min(config.iwae_examples, counts["test"]),
        probe_rows=min(config.probe_max_train, counts["train"]), judge=judge, prior_samples=config.regularity_samples,
        settings={k: v for k, v in to_dict(config).items() if k not in named}, code=CODE_VERSION,
    )


def check_measured_on_its_data(evaluated: TrainedModel | versions.RegisteredVersion, label: str, protocol: MeasurementProtocol) -> None:
    """Fail, naming each difference, when `protocol` is for other data than the evaluated version was trained on.

    The judge, the auto-encoder it is set beside and the test split are this run's; a version
    trained on another data version would be measured unlike them.
    """
    own = replace(protocol, dataset=evaluated.dataset, data_version=evaluated.data_version)
    verdict = comparable(own, protocol)
    if not verdict.comparable:
        trained = evaluated.data_version[:12]
        raise LineageError(
            f"{evaluated.model_name} {label} was trained on other data than this run's mnist_tensors, judge and "
            f"auto-encoder (its data vs this run's: {verdict}). Materialize mnist_tensors with the config that produced "
            f"{trained} (same raw files, val_size and split_seed; the store is content-addressed, so it is reused if still "
            "present) together with this asset, or evaluate a version trained on this data."
        )


def _encode(model: VAE, store: TensorStore, device: torch.device) -> dict[str, Any]:
    mu_train, logvar_train = encode_mean(model, store["train"].float_images(), device=device)  # (n_train, d)
    mu_test, logvar_test = encode_mean(model, store["test"].float_images(), device=device)  # (n_test, d)
    return {"mu_train": mu_train, "logvar_train": logvar_train, "mu_test": mu_test, "logvar_test": logvar_test}


def _descriptive(name: str, model: VAE, codes: dict, store: TensorStore, config: EvaluationConfig,
                 device: torch.device, folder: Path, watch: Stopwatch) -> tuple[dict[str, float], dict[str, Any]]:
    """Supporting figures of one model: probes, kNN, active units, t-SNE and trustworthiness, interpolation smoothness.

    `watch` times each stage as `<stage>` for the VAE and `ae_<stage>` for the auto-encoder."""
    train, test = store["train"], store["test"]
    mu_train, mu_test = codes["mu_train"], codes["mu_test"]
    stage = "" if name == "vae" else f"{name}_"
    with watch(f"{stage}probe"):
        probe = probes.linear_probe(mu_train, train.labels, mu_test, test.labels, seed=config.seed, max_train=config.probe_max_train)
    with watch(f"{stage}knn"):
        knn = probes.knn_accuracy(mu_train, train.labels, mu_test, test.labels, k=config.knn_k, max_train=config.probe_max_train, seed=config.seed)
    figures = {"probe_accuracy": probe.accuracy, "knn_accuracy": knn.accuracy, "active_units": float(active_units(mu_test))}
    idx = subsample_indices(len(test), config.tsne_points, config.seed)
    with watch(f"{stage}tsne"):
        embedding = tsne.tsne_embedding(mu_test[idx], seed=config.seed)
    with watch(f"{stage}trustworthiness"):
        figures["trustworthiness"] = tsne.trustworthiness_score(
            mu_test[idx], embedding, n_neighbors=config.trustworthiness_neighbors, seed=config.seed
        )
    with watch("pictures"):
        tsne_png = plots.tsne_scatter_png(
            embedding, test.labels[idx], folder / f"tsne_{name}.png",
            title=f"{name}: t-SNE of {len(idx)} test latents (trustworthiness {figures['trustworthiness']:.3f})",
        )
    with watch(f"{stage}smoothness"):
        a, b = smoothness.pick_interpolation_pairs(test.labels.numpy(), config.smoothness_pairs, config.seed)
        stats = smoothness.interpolation_smoothness(partial(decode_latents, model, device=device), mu_test[a], mu_test[b],
                                                    steps=config.smoothness_steps)
    summary = stats.summary()
    figures["smoothness_max_step_ratio"] = float(summary["max_step_ratio_median"])
    figures["smoothness_path_ratio"] = float(summary["path_ratio_median"])
    return figures, {"tsne_png": tsne_png}


def _regularity(judge: Judge, model: VAE, codes: dict, store: TensorStore, reference: np.ndarray,
                config: EvaluationConfig, device: torch.device) -> regularity.RegularityFigures:
    return regularity.regularity_figures(
        judge, partial(decode_latents, model, device=device), codes["mu_train"], codes["logvar_train"], codes["mu_test"],
        store["test"].labels, reference, device, seed=config.seed, n_samples=config.regularity_samples,
        n_pairs=config.regularity_pairs,
    )


def _sample_panels(vae: VAE, ae: VAE, ae_codes: dict, figures: dict, seed: int, device: torch.device, path: Path) -> Path:
    """VAE and AE prior samples side by side (and the AE's fitted-Gaussian samples), titled with their FD."""
    # The streams the figures draw from (core.streams): the VAE and AE panels decode the same N(0, I) draws.
    z = regularity.sample_standard_normal(SHOWN_SAMPLES, vae.latent_dim, stream(seed, "prior"))  # (64, d)
    fitted = regularity.fit_gaussian(ae_codes["mu_train"])
    panels = [
        (f"VAE, z ~ N(0, I): FD {figures['vae'].prior.fd:.1f}", decode_latents(vae, z, device=device)),
        (f"AE, z ~ N(0, I): FD {figures['ae'].prior.fd:.1f}", decode_latents(ae, z, device=device)),
        (f"AE, fitted Gaussian: FD {figures['ae'].fitted.fd:.1f}",
         decode_latents(ae, regularity.sample_gaussian(fitted, SHOWN_SAMPLES, stream(seed, "fitted")), device=device)),
    ]
    return plots.image_panels_png(panels, path, nrow=8)


def _two_d_pictures(vae: VAE, ae: VAE, codes: dict, store: TensorStore, device: torch.device, folder: Path) -> dict[str, Path]:
    """For 2-D latents, the classic pictures: decoded manifolds over Gaussian quantiles, codes coloured by label."""
    grid = torch.as_tensor(plots.gaussian_quantile_grid(MANIFOLD_SIDE), dtype=torch.float32)  # (400, 2)
    manifold = plots.image_panels_png(
        [("VAE decoder over N(0, I) quantiles", decode_latents(vae, grid, device=device)),
         ("AE decoder over N(0, I) quantiles", decode_latents(ae, grid, device=device))],
        folder / "manifold_2d.png", nrow=MANIFOLD_SIDE,
    )
    labels = store["test"].labels
    scatter = plots.latent_scatter_panels_png(
        [("VAE: test codes (mu)", codes["vae"]["mu_test"], labels), ("AE: test codes", codes["ae"]["mu_test"], labels)],
        folder / "codes_2d.png",
    )
    return {"manifold_2d": manifold, "codes_2d": scatter}


@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=CODE_VERSION, automation_condition=on_new_data(),
          kinds={"pytorch", "scikitlearn", "mlflow"})
def latent_evaluation(
    context: dg.AssetExecutionContext,
    config: LatentEvaluationConfig,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: MnistTensors,
    vae_model: TrainedModel,
    autoencoder_baseline: TrainedModel,
    digit_classifier: DigitClassifier,
) -> dg.MaterializeResult:
    """Is the VAE's latent space more regular than the AE's (judged by an independent classifier)? Plus probes, t-SNE, IWAE NLL."""
    config_ref, config = config.model_version, to_core(config, EvaluationConfig)
    for model in (vae_model, autoencoder_baseline):
        check_same_data(model, mnist_tensors)
    check_judge_data(digit_classifier, mnist_tensors)
    device = resolve_device("auto")
    client = mlflow_tracking.activate()
    target = versions.resolve(client, storage, vae_model, config_ref, device)
    if target is None:
        raise versions.VersionError(f"no version of {vae_model.model_name} holds alias {config_ref!r}; evaluate a "
                                    "version number or an alias that is set, or leave model_version empty.")
    evaluated = target.record
    protocol = evaluation_protocol(mnist_tensors, config, target.model.cfg.likelihood, digit_classifier.fingerprint)
    check_measured_on_its_data(evaluated, target.label, protocol)
    if evaluated is not vae_model:
        context.log.info(f"evaluating {evaluated.model_name} {target.label} (model_version={config_ref!r}), "
                         f"not the version this run trained (v{vae_model.model_version})")
    ae = autoencoder_baseline
    result = stored_result(
        context, storage, model=evaluated, config=to_dict(config),
        autoencoder={"fingerprint": ae.fingerprint, "checkpoint_sha256": ae.checkpoint_sha256, "mlflow_run_id": ae.mlflow_run_id},
        judge=digit_classifier.fingerprint,
    )
    unchanged = f"{target.label}'s evaluation: models, judge, config and code unchanged"
    if (reused := result.materialization(context.log, unchanged)) is not None:
        return reused
    watch = Stopwatch()  # each stage's seconds, recorded as eval_<stage>_seconds beside its figures
    with watch("load"):
        store = load_model_store(storage, vae_model)
        folder = version_folder(storage, "evaluation", evaluated)
        models = {"vae": target.model, "ae": load_trained_model(storage, autoencoder_baseline, device)}
        judge, record = load_judge(storage.resolve(digit_classifier.checkpoint), device)
    train, test = store["train"], store["test"]
    with watch("encode"):
        codes = {name: _encode(model, store, device) for name, model in models.items()}

    context.log.info(f"regularity: judging {config.regularity_samples} decoded prior and fitted-Gaussian draws and "
                     f"{config.regularity_pairs} midpoints per model")
    with watch("regularity"):
        reference, _ = judge_outputs(judge, test.float_images(), device)  # (n_test, feature_dim)
        figures = {name: _regularity(judge, models[name], codes[name], store, reference, config, device) for name in models}
        regular, verdict = regularity.regularity_verdict(figures["vae"], figures["ae"], figures["ae"].fitted)
    with watch("pictures"):
        samples_png = _sample_panels(models["vae"], models["ae"], codes["ae"], figures, config.seed, device, folder / "prior_samples_vae_vs_ae.png")
        pictures = _two_d_pictures(models["vae"], models["ae"], codes, store, device, folder) if models["vae"].latent_dim == 2 else {}

    context.log.info(f"probes, kNN and t-SNE of {min(config.tsne_points, len(test))} test codes, for the VAE and the AE")
    descriptive = {name: _descriptive(name, models[name], codes[name], store, config, device, folder, watch) for name in models}
    with watch("pixel_probe"):
        pixels = probes.linear_probe(train.float_images(), train.labels, test.float_images(), test.labels, seed=config.seed,
                                     max_train=config.probe_max_train)
    with watch("pixel_knn"):
        pixels_knn = probes.knn_accuracy(train.float_images(), train.labels, test.float_images(), test.labels, k=config.knn_k,
                                         max_train=config.probe_max_train, seed=config.seed)
    with watch("pca"):
        pca = probes.pca_baseline(train.float_images(), train.labels, test.float_images(), test.labels,
                                  n_components=models["vae"].latent_dim, seed=config.seed, k=config.knn_k, max_train=config.probe_max_train)

    idx = torch.as_tensor(subsample_indices(len(test), config.iwae_examples, config.seed))
    context.log.info(f"IWAE NLL: k={config.iwae_k} importance samples on {len(idx)} test images")
    with watch("iwae"):
        x = scoring_targets(models["vae"], test.float_images()[idx], torch.Generator().manual_seed(config.seed))
        nll = iwae_nll(models["vae"], x, k=config.iwae_k, device=device, generator=torch.Generator(device=device).manual_seed(config.seed))
    with watch("rate_distortion"):  # the ELBO's two terms on the same images, as trained: IWAE NLL <= R + D
        rd = rate_distortion(models["vae"], x, device=device, generator=stream(config.seed, "rate_distortion", device))
    kl_dims = mean_kl_per_dimension(codes["vae"]["mu_test"], codes["vae"]["logvar_test"])

    vae_fig, ae_fig = figures["vae"], figures["ae"]
    metrics = {
        "eval_judge_test_accuracy": record.test_accuracy,
        "eval_prior_fd": vae_fig.prior.fd,
        "eval_ae_prior_fd": ae_fig.prior.fd,
        "eval_ae_fitted_prior_fd": ae_fig.fitted.fd,
        "eval_midpoint_fd": vae_fig.midpoints.fd,
        "eval_ae_midpoint_fd": ae_fig.midpoints.fd,
        "eval_regular": float(regular),
        **{f"eval_{k}": v for k, v in vae_fig.flat().items()},
        **{f"eval_ae_{k}": v for k, v in ae_fig.flat().items()},
        **{f"eval_{k}": v for k, v in descriptive["vae"][0].items()},
        **{f"eval_ae_{k}": v for k, v in descriptive["ae"][0].items()},
        "eval_probe_accuracy_pixels": pixels.accuracy,
        "eval_knn_accuracy_pixels": pixels_knn.accuracy,
        "eval_probe_accuracy_pca": pca.probe.accuracy,
        "eval_knn_accuracy_pca": pca.knn.accuracy,
        "eval_iwae_nll": float(nll.mean()),
        "eval_iwae_k": float(config.iwae_k),
        "eval_iwae_examples": float(len(idx)),
        "eval_rate": float(rd.rate.mean()),
        "eval_distortion": float(rd.distortion.mean()),
        "eval_neg_elbo": float((rd.rate + rd.distortion).mean()),
        "eval_kl_total": float(kl_dims.sum()),
        **{f"eval_{stage}_seconds": seconds for stage, seconds in watch.seconds.items()},
        "eval_seconds": watch.total(),  # the stages above; the step adds MLflow logging and the stored copies
    }
    report = LatentEvaluation(
        metrics=metrics,
        verdict=verdict,
        regular=regular,
        regularity={name: fig.as_dict() for name, fig in figures.items()},
        kl_per_dimension=kl_dims.tolist(),
        latent_dim=models["vae"].latent_dim,
        config=to_dict(config),
        protocol=protocol.to_dict(),
        model_name=evaluated.model_name,
        model_version=evaluated.model_version,
        mlflow_run_id=evaluated.mlflow_run_id,
    )
    metrics_path = folder / "metrics.json"
    write_json_atomic(metrics_path, write_manifest(report))
    run_id = evaluated.mlflow_run_id
    pngs = [metrics_path, samples_png, *(extras["tsne_png"] for _, extras in descriptive.values()), *pictures.values()]
    with mlflow_writes(mlflow_tracking, f"evaluation of {evaluated.model_name} {target.label}", run_id=run_id):
        client.log_batch(run_id, metrics=[_metric(k, v) for k, v in metrics.items()])
        record_evaluation(client, report)  # headline figures and their protocol on the registered version
        for path in pngs:
            client.log_artifact(run_id, str(path), artifact_path="evaluation")

    table = _comparison_table(vae_fig, ae_fig, descriptive, pixels, pixels_knn, pca, metrics, config, models["vae"], len(idx))
    context.log.info(f"VAE latent space: {verdict}")
    metadata = {
        "verdict": verdict,
        "regular": regular,
        "comparison": dg.MetadataValue.md(table),
        "prior_samples_vae_vs_ae": png_markdown(samples_png, "prior samples: VAE beside AE"),
        "judge_test_accuracy": round(record.test_accuracy, 4),
        "prior_fd": round(vae_fig.prior.fd, 2),
        "ae_prior_fd": round(ae_fig.prior.fd, 2),
        "ae_fitted_prior_fd": round(ae_fig.fitted.fd, 2),
        "midpoint_fd": round(vae_fig.midpoints.fd, 2),
        "ae_midpoint_fd": round(ae_fig.midpoints.fd, 2),
        "iwae_nll": round(metrics["eval_iwae_nll"], 3),
        "tsne_vae": png_markdown(descriptive["vae"][1]["tsne_png"], "t-SNE of VAE latents"),
        "tsne_autoencoder": png_markdown(descriptive["ae"][1]["tsne_png"], "t-SNE of auto-encoder codes"),
        **{name: png_markdown(path, name) for name, path in pictures.items()},
        "metrics_json": dg.MetadataValue.path(storage.url(metrics_path)),
        "model_version": evaluated.model_version,
    }
    result.save(report, metadata, pngs)
    return dg.MaterializeResult(value=report, metadata={**metadata, "reused": False})


def _metric(key: str, value: float):  # noqa: ANN202 - mlflow.entities.Metric
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), 0)


def _comparison_table(vae_fig, ae_fig, descriptive, pixels, pixels_knn, pca, metrics, config, vae, n_iwae) -> str:  # noqa: ANN001
    """The figures as a markdown table: regularity first (the verdict's inputs), then the supporting ones."""
    v, a = descriptive["vae"][0], descriptive["ae"][0]
    rows = [
        "| figure | VAE | auto-encoder | PCA | raw pixels |",
        "| --- | --- | --- | --- | --- |",
        f"| FD of decoded N(0, I) draws (lower is better) | {vae_fig.prior.fd:.2f} | {ae_fig.prior.fd:.2f} | | |",
        f"| FD of decoded fitted-Gaussian draws | {vae_fig.fitted.fd:.2f} | {ae_fig.fitted.fd:.2f} | | |",
        f"| FD of decoded midpoints | {vae_fig.midpoints.fd:.2f} | {ae_fig.midpoints.fd:.2f} | | |",
        f"| FD of reconstructions | {vae_fig.reconstructions.fd:.2f} | {ae_fig.reconstructions.fd:.2f} | | |",
        f"| confident share of prior samples | {vae_fig.prior.confident_share:.3f} | {ae_fig.prior.confident_share:.3f} | | |",
        f"| class coverage of prior samples | {vae_fig.prior.class_coverage:.3f} | {ae_fig.prior.class_coverage:.3f} | | |",
        f"| MMD² of training codes to N(0, I) | {vae_fig.prior_fit.mmd2:.4f} | {ae_fig.prior_fit.mmd2:.4f} | | |",
        f"| prior draws in holes | {vae_fig.prior_fit.holes_share:.1%} | {ae_fig.prior_fit.holes_share:.1%} | | |",
        f"| linear probe accuracy | {v['probe_accuracy']:.4f} | {a['probe_accuracy']:.4f} | {pca.probe.accuracy:.4f} | {pixels.accuracy:.4f} |",
        f"| {config.knn_k}-NN accuracy | {v['knn_accuracy']:.4f} | {a['knn_accuracy']:.4f} | {pca.knn.accuracy:.4f} | {pixels_knn.accuracy:.4f} |",
        f"| t-SNE trustworthiness | {v['trustworthiness']:.4f} | {a['trustworthiness']:.4f} | | |",
        f"| interpolation max/mean step (median) | {v['smoothness_max_step_ratio']:.3f} | {a['smoothness_max_step_ratio']:.3f} | | |",
        f"| active units | {int(v['active_units'])} / {vae.latent_dim} | {int(a['active_units'])} / {vae.latent_dim} | | |",
        f"| IWAE NLL, k={config.iwae_k}, {n_iwae} test images (nats) | {metrics['eval_iwae_nll']:.2f} | | | |",
    ]
    return "\n".join(rows)
