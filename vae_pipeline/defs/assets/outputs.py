"""Outputs of a trained model: latent embeddings (parquet), prior samples, reconstruction report."""

import base64
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import torch
from safetensors.torch import save_file

from vae_pipeline.core.atomic import atomic_path
from vae_pipeline.core.evaluation import latents, plots, reports, smoothness
from vae_pipeline.core.model.config import EmbeddingsConfig, ReportConfig, SamplesConfig, to_dict
from vae_pipeline.core.model.device import resolve_device
from vae_pipeline.core.model.inference import decode_latents, encode_mean, sample_prior
from vae_pipeline.defs.automation import on_new_data
from vae_pipeline.defs.config_classes import dagster_config, to_core
from vae_pipeline.defs.identity.lineage import check_same_data, load_model_store, load_trained_model
from vae_pipeline.defs.identity.versions import versions_of_variant
from vae_pipeline.defs.manifests import LatentEmbeddings, MnistTensors, PriorSamples, ReconstructionReport, TrainedModel
from vae_pipeline.defs.reuse import code_version, stored_result
from vae_pipeline.defs.storage.folder import PipelineStorage
from vae_pipeline.defs.tracking.failures import mlflow_writes
from vae_pipeline.defs.tracking.resource import MlflowTracking
from vae_pipeline.defs.variants import VARIANTS

GROUP = "outputs"
CODE_VERSION = code_version(__name__)  # derived from this file and the core code it imports (defs/reuse.py)


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """A PNG embedded in markdown, so the Dagster UI shows the picture itself."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


def version_folder(storage: PipelineStorage, kind: str, vae_model: Any) -> Path:
    """<data>/<kind>/<model name>/v<version>/: each model version keeps its own outputs (a TrainedModel or RegisteredVersion)."""
    return storage.folder(kind, vae_model.model_name, f"v{vae_model.model_version:04d}")


def latents_folder(storage: PipelineStorage, vae_model: TrainedModel) -> Path:
    return storage.folder("latents", vae_model.model_name)


def log_artifacts(mlflow_tracking: MlflowTracking, run_id: str, paths: list[Path], artifact_path: str) -> None:
    """Attach files to the model's MLflow run (the same run that trained it)."""
    client = mlflow_tracking.activate()
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


LatentEmbeddingsConfig = dagster_config("LatentEmbeddingsConfig", "How the latents table scores each image.", EmbeddingsConfig, module=__name__)


@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=CODE_VERSION, automation_condition=on_new_data(), kinds={"parquet"})
def latent_embeddings(
    context: dg.AssetExecutionContext,
    config: LatentEmbeddingsConfig,
    storage: PipelineStorage,
    mnist_tensors: MnistTensors,
    vae_model: TrainedModel,
) -> dg.MaterializeResult:
    """One parquet row per image (train, val, test): mu, logvar, reconstruction NLL and KL, model version."""
    config = to_core(config, EmbeddingsConfig)
    check_same_data(vae_model, mnist_tensors)
    result = stored_result(context, storage, model=vae_model, config=to_dict(config))
    unchanged = f"v{vae_model.model_version}'s latents are unchanged since they were written"
    if (reused := result.materialization(context.log, unchanged)) is not None:
        return reused
    device = resolve_device("auto")
    model = load_trained_model(storage, vae_model, device)
    store = load_model_store(storage, vae_model)
    encoded = reports.encode_splits(model, store, device, seed=config.seed)
    footer = {
        "model_name": vae_model.model_name,
        "model_version": str(vae_model.model_version),
        "mlflow_run_id": vae_model.mlflow_run_id,
        "data_version": mnist_tensors.content_sha256,
        "scoring_seed": str(config.seed),
    }
    table = latents.latent_table(encoded, vae_model.model_version, footer)
    folder = latents_folder(storage, vae_model)
    path = latents.write_parquet(table, folder / f"v{vae_model.model_version:04d}.parquet")
    counts = {name: len(split["label"]) for name, split in encoded.items()}
    context.log.info(f"wrote {table.num_rows} rows to {path}")
    manifest = LatentEmbeddings(path=storage.relative(path), folder=storage.relative(folder), model_name=vae_model.model_name,
                                model_version=vae_model.model_version, rows=counts)
    metadata = {
        "path": dg.MetadataValue.path(storage.url(path)),
        "folder": dg.MetadataValue.path(storage.url(folder)),
        "model_version": vae_model.model_version,
        "rows": table.num_rows,
        "rows_per_split": dg.MetadataValue.json(counts),
        "mean_test_recon_nll_at_mu": float(encoded["test"]["recon_nll_at_mu"].mean()),
        "mean_test_kl": float(encoded["test"]["kl"].mean()),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.type)) for f in table.schema]
        ),
        "query": dg.MetadataValue.md(
            f"```python\npd.read_parquet({storage.url(folder)!r}, filters=[('model_version', '==', "
            f"{vae_model.model_version})])\n```"
        ),
    }
    result.save(manifest, metadata, [path])
    return dg.MaterializeResult(value=manifest, metadata={**metadata, "reused": False})


PriorSamplesConfig = dagster_config("PriorSamplesConfig", "What the prior-samples asset draws and decodes.", SamplesConfig, module=__name__)


@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=CODE_VERSION, automation_condition=on_new_data(), kinds={"pytorch"})
def prior_samples(
    context: dg.AssetExecutionContext,
    config: PriorSamplesConfig,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: MnistTensors,
    vae_model: TrainedModel,
) -> dg.MaterializeResult:
    """Images decoded from z ~ N(0, I) (a tensor file and a PNG grid) and interpolations between test digits."""
    config = to_core(config, SamplesConfig)
    check_same_data(vae_model, mnist_tensors)
    result = stored_result(context, storage, model=vae_model, config=to_dict(config))
    unchanged = f"v{vae_model.model_version}'s samples are unchanged since they were drawn"
    if (reused := result.materialization(context.log, unchanged)) is not None:
        return reused
    device = resolve_device("auto")
    model = load_trained_model(storage, vae_model, device)
    folder = version_folder(storage, "samples", vae_model)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    samples = sample_prior(model, config.n_samples, generator, device)  # (n, 1, 28, 28)
    tensor_path = folder / "prior_samples.safetensors"
    with atomic_path(tensor_path) as tmp:
        save_file({"images": samples.contiguous()}, str(tmp), metadata={"seed": str(config.seed)})
    grid = plots.image_grid_png(samples, folder / "prior_samples.png", nrow=8, title=f"z ~ N(0, I), seed {config.seed}")

    test = load_model_store(storage, vae_model)["test"]
    a, b = smoothness.pick_interpolation_pairs(test.labels.numpy(), config.n_interpolations, config.seed)
    x = test.float_images()
    (mu_a, _), (mu_b, _) = (encode_mean(model, x[torch.as_tensor(i)], device=device) for i in (a, b))  # (n_pairs, d) each
    frames = smoothness.decode_interpolations(partial(decode_latents, model, device=device), mu_a, mu_b, config.interpolation_steps)
    strip = plots.interpolation_strip_png(frames, folder / "interpolations.png", title="latent interpolations (mu to mu)")
    log_artifacts(mlflow_tracking, vae_model.mlflow_run_id, [tensor_path, grid, strip], "samples")
    manifest = PriorSamples(tensor_path=storage.relative(tensor_path), grid_png=storage.relative(grid),
                            interpolations_png=storage.relative(strip), model_version=vae_model.model_version)
    metadata = {
        "prior_samples": png_markdown(grid, "prior samples"),
        "interpolations": png_markdown(strip, "interpolations"),
        "tensor_path": dg.MetadataValue.path(storage.url(tensor_path)),
        "model_version": vae_model.model_version,
    }
    result.save(manifest, metadata, [tensor_path, grid, strip])
    return dg.MaterializeResult(value=manifest, metadata={**metadata, "reused": False})


ReconstructionReportConfig = dagster_config("ReconstructionReportConfig", "What the reconstruction report shows.", ReportConfig, module=__name__)


@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=CODE_VERSION, automation_condition=on_new_data(), kinds={"parquet"})
def reconstruction_report(
    context: dg.AssetExecutionContext,
    config: ReconstructionReportConfig,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: MnistTensors,
    vae_model: TrainedModel,
    latent_embeddings: LatentEmbeddings,
) -> dg.MaterializeResult:
    """Per-class test reconstruction error, the worst and best reconstructions, and the change since the variant's last version."""
    config = to_core(config, ReportConfig)
    check_same_data(vae_model, mnist_tensors)
    latents_dir = storage.resolve(latent_embeddings.folder)
    version = vae_model.model_version
    present = pd.read_parquet(latents_dir, columns=["model_version"])
    versions_present = present["model_version"].unique()  # not a manifest: the latents table
    # "The previous version" is the previous model of this variant: another variant's errors are another model's.
    same_variant = set(versions_of_variant(mlflow_tracking.activate(), vae_model.model_name, vae_model.variant))
    earlier = sorted(int(v) for v in versions_present if v < version and int(v) in same_variant)
    result = stored_result(context, storage, model=vae_model, config=to_dict(config), latents=latent_embeddings.path,
                           previous=earlier[-1] if earlier else None)
    if (reused := result.materialization(context.log, f"v{version}'s report is unchanged since it was written")) is not None:
        return reused
    rows = pd.read_parquet(latents_dir, columns=["image_id", "split", "label", "recon_nll_at_mu", "kl", "model_version"])
    current = rows[rows["model_version"] == version]  # not a manifest: the latents table
    test = current[current["split"] == "test"]
    stats = reports.per_class_error_stats(test["recon_nll_at_mu"].to_numpy(), test["label"].to_numpy())
    folder = version_folder(storage, "reports", vae_model)
    errors_path = latents.write_parquet(
        pa.Table.from_pandas(current.reset_index(drop=True), preserve_index=False),
        folder / "reconstruction_errors.parquet",
    )

    device = resolve_device("auto")
    model = load_trained_model(storage, vae_model, device)
    images = load_model_store(storage, vae_model)["test"].float_images()
    worst, best = reports.extreme_indices(test["recon_nll_at_mu"].to_numpy(), config.gallery_size)
    galleries = {}
    for name, idx in (("worst", worst), ("best", best)):
        pairs = reports.reconstruction_pairs(model, images[torch.as_tensor(idx)], device)
        galleries[name] = plots.image_grid_png(
            pairs, folder / f"{name}_reconstructions.png", nrow=8, title=f"{name} test reconstructions (original | reconstruction)"
        )

    metadata = {
        "per_class_recon_nll_at_mu": dg.MetadataValue.md(stats.round(3).to_markdown()),
        "mean_test_recon_nll_at_mu": float(test["recon_nll_at_mu"].mean()),
        "worst": png_markdown(galleries["worst"], "worst reconstructions"),
        "best": png_markdown(galleries["best"], "best reconstructions"),
        "errors_parquet": dg.MetadataValue.path(storage.url(errors_path)),
        "model_version": version,
    }
    change = None
    if earlier:
        before = rows[(rows["model_version"] == earlier[-1]) & (rows["split"] == "test")]  # not a manifest: the latents table
        previous = reports.per_class_error_stats(before["recon_nll_at_mu"].to_numpy(), before["label"].to_numpy())
        change = reports.per_class_change(stats, previous)
        metadata["previous_version"] = int(earlier[-1])
        metadata["change_vs_previous"] = dg.MetadataValue.md(change.round(3).to_markdown())
        metadata["mean_change_vs_previous"] = float(test["recon_nll_at_mu"].mean() - before["recon_nll_at_mu"].mean())
    stats_path = folder / "per_class.csv"
    with atomic_path(stats_path) as tmp:
        stats.to_csv(tmp)
    with mlflow_writes(mlflow_tracking, f"the reconstruction report of v{version}", run_id=vae_model.mlflow_run_id):
        log_artifacts(mlflow_tracking, vae_model.mlflow_run_id, [stats_path, *galleries.values()], "reconstruction_report")
        mlflow_tracking.activate().log_metric(vae_model.mlflow_run_id, "test_recon_nll_at_mu", float(test["recon_nll_at_mu"].mean()))
    manifest = ReconstructionReport(errors_parquet=storage.relative(errors_path), per_class_csv=storage.relative(stats_path),
                                    galleries={k: storage.relative(v) for k, v in galleries.items()}, model_version=version,
                                    previous_version=earlier[-1] if earlier else None)
    result.save(manifest, metadata, [errors_path, stats_path, *galleries.values()])
    return dg.MaterializeResult(value=manifest, metadata={**metadata, "reused": False})
