"""Two registered versions side by side (by default the champion and the version just trained), measured the same way."""

from dataclasses import replace
from pathlib import Path

import dagster as dg
import pydantic
import torch

from vae_pipeline.core.evaluation import plots
from vae_pipeline.core.evaluation.judge import judge_outputs, load_judge
from vae_pipeline.core.evaluation.regularity import sample_standard_normal
from vae_pipeline.core.model.config import ComparisonConfig, to_dict
from vae_pipeline.core.model.device import resolve_device
from vae_pipeline.core.model.inference import decode_latents
from vae_pipeline.core.selection.version_comparison import (
    REPORT_SPLIT,
    VersionFigures,
    comparison_markdown,
    comparison_protocol,
    incomparable_note,
    per_class_deltas,
    per_class_markdown,
    version_figures,
)
from vae_pipeline.defs.assets.outputs import png_markdown
from vae_pipeline.defs.automation import on_new_data
from vae_pipeline.defs.config_classes import dagster_config, to_core
from vae_pipeline.defs.identity import versions
from vae_pipeline.defs.identity.lineage import check_judge_data, check_same_data, load_model_store
from vae_pipeline.defs.manifests import DigitClassifier, MnistTensors, TrainedModel, VersionComparison, write_manifest
from vae_pipeline.defs.reuse import code_version, stored_result
from vae_pipeline.defs.storage.folder import PipelineStorage, write_json_atomic
from vae_pipeline.defs.tracking.failures import mlflow_writes
from vae_pipeline.defs.tracking.resource import CHAMPION, MlflowTracking
from vae_pipeline.defs.variants import VARIANTS

GROUP = "promotion"
CODE_VERSION = code_version(__name__)  # derived from this file and the core code it imports (defs/reuse.py)
SHOWN_SAMPLES = 64  # prior draws per panel of the picture (an 8x8 mosaic)
_REF_HELP = "a registered version number (7), an alias (champion, challenger), or empty for the version this run trained"

VersionComparisonConfig = dagster_config(
    "VersionComparisonConfig", ComparisonConfig.__doc__, ComparisonConfig, module=__name__,
    extra={
        "baseline": (str, pydantic.Field(CHAMPION, description=f"The version compared against: {_REF_HELP}.")),
        "candidate": (str, pydantic.Field(versions.JUST_TRAINED, description=f"The version under review: {_REF_HELP}.")),
    },
)


def _not_compared(reason: str, candidate: versions.Evaluated) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        value=VersionComparison(compared=False, reason=reason, candidate_version=candidate.record.model_version),
        metadata={"compared": False, "reason": reason, "candidate_version": candidate.record.model_version},
    )


def _prior_panels(baseline: tuple[versions.Evaluated, VersionFigures], candidate: tuple[versions.Evaluated, VersionFigures],
                  seed: int, device: torch.device, path: Path) -> Path:
    """Decoded prior draws of both versions side by side: the same draws when the latent sizes match."""
    panels = []
    for side, (evaluated, figures) in (("baseline", baseline), ("candidate", candidate)):
        z = sample_standard_normal(SHOWN_SAMPLES, evaluated.model.latent_dim, torch.Generator().manual_seed(seed))  # (64, d)
        fd = figures.prior.fd
        panels.append((f"{evaluated.label} ({side}), z ~ N(0, I): FD {fd:.1f}", decode_latents(evaluated.model, z, device=device)))
    return plots.image_panels_png(panels, path, nrow=8)


@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=CODE_VERSION, automation_condition=on_new_data(), kinds={"pytorch", "mlflow"})
def version_comparison(
    context: dg.AssetExecutionContext,
    config: VersionComparisonConfig,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: MnistTensors,
    vae_model: TrainedModel,
    digit_classifier: DigitClassifier,
) -> dg.MaterializeResult:
    """Two versions side by side on the test split: NLL, reconstruction per class, probe, prior samples, one protocol."""
    cfg = to_core(config, ComparisonConfig)
    check_same_data(vae_model, mnist_tensors)
    check_judge_data(digit_classifier, mnist_tensors)
    device = resolve_device("auto")
    client = mlflow_tracking.activate()
    name = vae_model.model_name
    candidate = versions.resolve(client, storage, vae_model, config.candidate, device)
    if candidate is None:
        raise versions.VersionError(f"no version of {name} holds alias {config.candidate!r}: the candidate must exist.")
    baseline = versions.resolve(client, storage, vae_model, config.baseline, device)
    if baseline is None:
        return _not_compared(f"no version of {name} holds alias {config.baseline!r} yet: nothing to compare with", candidate)
    if baseline.record.model_version == candidate.record.model_version:
        return _not_compared(f"{candidate.label} is both baseline ({config.baseline!r}) and candidate", candidate)

    store = load_model_store(storage, vae_model)  # this run's data: both versions are measured on it
    protocol = replace(comparison_protocol(store, cfg, digit_classifier.fingerprint), code=CODE_VERSION)
    folder = storage.folder("comparisons", name, f"{baseline.label}-vs-{candidate.label}")
    report_path, samples_png = folder / "comparison.json", folder / "prior_samples.png"
    result = stored_result(context, storage, record=f"{name}/{baseline.label}-vs-{candidate.label}", protocol=protocol.to_json(),
                           runs=[baseline.record.mlflow_run_id, candidate.record.mlflow_run_id])
    if (reused := result.materialization(context.log, f"{baseline.label} vs {candidate.label}: measured before under the same "
                                                      f"protocol ({report_path})")) is not None:
        return reused
    judge, _ = load_judge(storage.resolve(digit_classifier.checkpoint), device)
    reference, _ = judge_outputs(judge, store[REPORT_SPLIT].float_images(), device)  # (n_test, feature_dim)
    measured = []
    for side, evaluated in (("baseline", baseline), ("candidate", candidate)):
        context.log.info(f"measuring {evaluated.label} ({side}): IWAE k={protocol.iwae_k} on {protocol.iwae_examples} "
                         f"{REPORT_SPLIT} images, reconstruction per class, probe, {protocol.prior_samples} prior draws")
        measured.append(version_figures(evaluated.model, store, protocol, judge, reference, device))
    before, after = measured  # the baseline's figures, the candidate's
    note = incomparable_note(before, after)
    deltas = per_class_deltas(before, after)
    manifest = VersionComparison(
        compared=True,
        protocol=protocol.to_dict(),
        config=to_dict(cfg),
        baseline_version=baseline.record.model_version,
        candidate_version=candidate.record.model_version,
        trained_on={side: e.record.data_version for side, e in (("baseline", baseline), ("candidate", candidate))},
        baseline=before.as_dict(),
        candidate=after.as_dict(),
        likelihood_incomparable=note,
        per_class_recon=deltas.reset_index().to_dict(orient="records"),
    )
    table_md = comparison_markdown(baseline.label, before, candidate.label, after, protocol)
    per_class_md = per_class_markdown(deltas, note)
    _prior_panels((baseline, before), (candidate, after), protocol.seed, device, samples_png)
    # The report file is the manifest and its two tables in markdown.
    write_json_atomic(report_path, {**write_manifest(manifest), "table_md": table_md, "per_class_md": per_class_md})
    run_id = candidate.record.mlflow_run_id
    with mlflow_writes(mlflow_tracking, f"the comparison of {baseline.label} and {candidate.label}", run_id=run_id):
        for path in (report_path, samples_png):
            client.log_artifact(run_id, str(path), artifact_path=f"comparisons/{baseline.label}")
    context.log.info(f"{baseline.label} vs {candidate.label}:\n{table_md}")
    metadata = {
        "compared": True,
        "baseline_version": manifest.baseline_version,
        "candidate_version": manifest.candidate_version,
        "comparison": dg.MetadataValue.md(table_md),
        "per_class_reconstruction": dg.MetadataValue.md(per_class_md),
        "prior_samples": png_markdown(samples_png, f"prior samples: {baseline.label} beside {candidate.label}"),
        "protocol": dg.MetadataValue.json(manifest.protocol),
        "report": dg.MetadataValue.path(storage.url(report_path)),
    }
    result.save(manifest, metadata, [report_path, samples_png])  # last: its presence means "finished"
    return dg.MaterializeResult(value=manifest, metadata={**metadata, "reused": False})
