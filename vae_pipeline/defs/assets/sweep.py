"""Every evaluated variant of the sweep in one table (parquet) and one rate-distortion picture, also in MLflow."""

from dataclasses import replace
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from vae_pipeline.core.evaluation import latents
from vae_pipeline.core.model.config import to_dict
from vae_pipeline.core.selection.protocol import MeasurementProtocol
from vae_pipeline.core.selection.sweep import Variant
from vae_pipeline.core.selection.sweep_comparison import VariantRow, rate_distortion_png, sweep_table, table_markdown
from vae_pipeline.defs.assets.outputs import png_markdown
from vae_pipeline.defs.automation import on_new_data
from vae_pipeline.defs.manifests import LatentEmbeddings, LatentEvaluation, SweepComparison, TrainedModel
from vae_pipeline.defs.reuse import code_version, stored_result
from vae_pipeline.defs.storage.folder import PipelineStorage
from vae_pipeline.defs.storage.io_manager import ALL_PARTITIONS
from vae_pipeline.defs.tracking.failures import mlflow_writes
from vae_pipeline.defs.tracking.resource import MlflowTracking

GROUP = "sweeps"
CODE_VERSION = code_version(__name__)  # derived from this file and the core code it imports (defs/reuse.py)
EVERY_VARIANT = dg.AssetIn(metadata={ALL_PARTITIONS: True})


def _training_setup(model: TrainedModel) -> dict:
    """How a variant was trained, but for what the sweep varies (and the seed): equal for rows trained alike."""
    varied = {*Variant.__dataclass_fields__, "seed"}
    setup = {**to_dict(model.model_config), **to_dict(model.train_config)}
    return {k: v for k, v in setup.items() if k not in varied}


def _protocol(variant: str, model: TrainedModel, evaluation: LatentEvaluation) -> MeasurementProtocol:
    """How a variant's row was measured (its evaluation) and its model trained."""
    stored = evaluation.protocol
    if "seed" not in stored:  # an earlier release stored split, judge and data version here, the settings in `config`
        stored = {**evaluation.config, **stored, "iwae_examples": int(evaluation.metrics["eval_iwae_examples"])}
    measured = MeasurementProtocol.from_dict(stored, f"latent_evaluation[{variant}]", dataset=model.dataset,
                                             likelihood=Variant.from_key(variant).likelihood)
    return replace(measured, training=_training_setup(model))


def _row(storage: PipelineStorage, variant: str, model: TrainedModel, embeddings: LatentEmbeddings,
         evaluation: LatentEvaluation) -> VariantRow:
    """One variant's figures: reconstruction and KL from its latents table, the rest from its test evaluation."""
    m, key = evaluation.metrics, Variant.from_key(variant)
    table = pd.read_parquet(storage.resolve(embeddings.path), columns=["split", "recon_nll_at_mu", "kl"])
    test = table[table["split"] == "test"]
    return VariantRow(
        variant=variant, latent_dim=key.latent_dim, beta=key.beta, model_version=int(model.model_version),
        protocol=_protocol(variant, model, evaluation),
        test_iwae_nll=m["eval_iwae_nll"], test_rate=m["eval_rate"], test_distortion=m["eval_distortion"],
        test_recon_nll_at_mu=float(test["recon_nll_at_mu"].mean()), test_kl_of_grey_input=float(test["kl"].mean()),
        probe_accuracy=m["eval_probe_accuracy"], knn_accuracy=m["eval_knn_accuracy"], active_units=int(m["eval_active_units"]),
        prior_fd=m["eval_prior_fd"], midpoint_fd=m["eval_midpoint_fd"], prior_holes_share=m["eval_prior_fit_holes_share"],
        prior_mmd2=m["eval_prior_fit_mmd2"], regular=bool(evaluation.regular),
    )


def _evaluated_variants(
    log: Any, vae_model: dict[str, TrainedModel], latent_embeddings: dict[str, LatentEmbeddings],
    latent_evaluation: dict[str, LatentEvaluation],
) -> dict[str, tuple[TrainedModel, LatentEmbeddings, LatentEvaluation]]:
    """The variants whose latest model, latents and evaluation are of one version; the log names the others."""
    ready = {}
    for variant, model in vae_model.items():
        embeddings, evaluation = latent_embeddings.get(variant), latent_evaluation.get(variant)
        version = model.model_version
        if embeddings is None or evaluation is None:
            log.info(f"{variant}: v{version} has no {'latents' if embeddings is None else 'evaluation'} yet; not in the table")
        elif embeddings.model_version != version or evaluation.model_version != version:
            log.info(f"{variant}: its latest latents (v{embeddings.model_version}) or evaluation "
                     f"(v{evaluation.model_version}) are not of its latest model v{version}; not in the table")
        else:
            ready[variant] = (model, embeddings, evaluation)
    return ready


@dg.asset(group_name=GROUP, code_version=CODE_VERSION, automation_condition=on_new_data(), kinds={"parquet", "mlflow"},
          ins={"vae_model": EVERY_VARIANT, "latent_embeddings": EVERY_VARIANT, "latent_evaluation": EVERY_VARIANT})
def sweep_comparison(
    context: dg.AssetExecutionContext,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    vae_model: dict[str, TrainedModel],  # every variant's: {partition: manifest}
    latent_embeddings: dict[str, LatentEmbeddings],
    latent_evaluation: dict[str, LatentEvaluation],
) -> dg.MaterializeResult:
    """The evaluated variants side by side (NLL, reconstruction, KL, probe, kNN, regularity) and their rate-distortion picture."""
    ready = _evaluated_variants(context.log, vae_model, latent_embeddings, latent_evaluation)
    if not ready:
        raise ValueError("no variant has a model, latents and an evaluation of the same version yet; materialize "
                         "vae_model, latent_embeddings and latent_evaluation for at least one variant first.")
    rows = [_row(storage, variant, *parts) for variant, parts in ready.items()]
    this_run = context.run.tags.get("dagster/partition")
    reference = this_run if this_run in ready else None  # the variant this run evaluated sets the measurement
    table = sweep_table(rows, reference)
    name = next(iter(ready.values()))[0].model_name if reference is None else ready[reference][0].model_name
    folder = storage.folder("sweeps", name)
    parquet_path, png_path = folder / "comparison.parquet", folder / "rate_distortion.png"
    result = stored_result(
        # What the reference decided (which rows compare, and why not), not which run asked: a variant's run and the
        # automation's unpartitioned run that judge the rows alike share one table and one MLflow run.
        context, storage, record=name, judged=table[["variant", "comparable", "note"]].to_dict("records"),
        rows={v: [model.mlflow_run_id, embeddings.path, evaluation.metrics]
              for v, (model, embeddings, evaluation) in sorted(ready.items())},
    )
    if (reused := result.materialization(context.log, f"the {len(ready)} evaluated variants are the ones compared before "
                                                      f"({parquet_path})")) is not None:
        return reused
    latents.write_parquet(pa.Table.from_pandas(table, preserve_index=False), parquet_path)
    rate_distortion_png(table, png_path)
    client = mlflow_tracking.activate()
    with mlflow_writes(mlflow_tracking, f"the sweep comparison of {name}") as writes:
        run = client.create_run(mlflow_tracking.experiment_id(client), run_name=f"sweep-comparison-{name}",
                                tags={"role": "sweep_comparison", "dagster.run_id": context.run.run_id, "model_name": name,
                                      "variants": ", ".join(table["variant"])})  # not a manifest: the sweep table
        writes.owns(run.info.run_id)
        for path in (parquet_path, png_path):
            client.log_artifact(run.info.run_id, str(path), artifact_path="sweep")
        client.set_terminated(run.info.run_id)
    comparable = table[table["comparable"]]  # not a manifest: the sweep table
    context.log.info(f"{len(table)} variants, {len(comparable)} comparable:\n{table_markdown(table)}")
    variants, comparable_variants = list(table["variant"]), list(comparable["variant"])  # not a manifest: the sweep table
    manifest = SweepComparison(path=storage.relative(parquet_path), picture=storage.relative(png_path), model_name=name,
                               variants=variants, comparable=comparable_variants, mlflow_run_id=run.info.run_id)
    metadata = {
        "variants": len(table),
        "comparable_variants": len(comparable),
        "table": dg.MetadataValue.md(table_markdown(table)),
        "rate_distortion": png_markdown(png_path, "rate-distortion: KL against reconstruction NLL, one point per variant"),
        "parquet": dg.MetadataValue.path(storage.url(parquet_path)),
        "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(mlflow_tracking.experiment_id(client), run.info.run_id)),
        "dagster/row_count": len(table),
    }
    result.save(manifest, metadata, [parquet_path, png_path])
    return dg.MaterializeResult(value=manifest, metadata=metadata)
