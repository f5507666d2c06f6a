"""Two registered versions side by side (by default the champion and the version just trained), measured the same way."""

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
from vae_pipeline.defs.reuse import StoredResult, result_key
from vae_pipeline.defs.storage.folder import PipelineStorage, write_json_atomic
from vae_pipeline.defs.tracking.failures import mlflow_writes
from vae_pipeline.defs.tracking.resource import CHAMPION, MlflowTracking
from vae_pipeline.defs.variants import VARIANTS

GROUP = "promotion"
COMPARISON_CODE_VERSION = "1"
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
        value={"compared": False, "reason": reason, "candidate_version": candidate.record["model_version"]},
        metadata={"compared": False, "reason": reason, "candidate_version": candidate.record["model_version"]},
    )


def _prior_panels(baseline: versions.Evaluated, candidate: versions.Evaluated, report: dict, seed: int,
                  device: torch.device, path: Path) -> Path:
    """Decoded prior draws of both versions side by side: the same draws when the latent sizes match."""
    panels = []
    for side, evaluated in (("baseline", baseline), ("candidate", candidate)):
        z = sample_standard_normal(SHOWN_SAMPLES, evaluated.model.latent_dim, torch.Generator().manual_seed(seed))  # (64, d)
        fd = report[side]["prior"]["fd"]
        panels.append((f"{evaluated.label} ({side}), z ~ N(0, I): FD {fd:.1f}", decode_latents(evaluated.model, z, device=device)))
    return plots.image_panels_png(panels, path, nrow=8)


@dg.asset(group_name=GROUP, partitions_def=VARIANTS, code_version=COMPARISON_CODE_VERSION, automation_condition=on_new_data(), kinds={"pytorch", "mlflow"})
def version_comparison(
    context: dg.AssetExecutionContext,
    config: VersionComparisonConfig,
    storage: PipelineStorage,
    mlflow_tracking: MlflowTracking,
    mnist_tensors: dict,
    vae_model: dict,
    digit_classifier: dict,
) -> dg.MaterializeResult:
    """Two versions side by side on the test split: NLL, reconstruction per class, probe, prior samples, one protocol."""
    cfg = to_core(config, ComparisonConfig)
    check_same_data(vae_model, mnist_tensors)
    check_judge_data(digit_classifier, mnist_tensors)
    device = resolve_device("auto")
    client = mlflow_tracking.activate()
    name = vae_model["model_name"]
    candidate = versions.resolve(client, storage, vae_model, config.candidate, device)
    if candidate is None:
        raise versions.VersionError(f"no version of {name} holds alias {config.candidate!r}: the candidate must exist.")
    baseline = versions.resolve(client, storage, vae_model, config.baseline, device)
    if baseline is None:
        return _not_compared(f"no version of {name} holds alias {config.baseline!r} yet: nothing to compare with", candidate)
    if baseline.record["model_version"] == candidate.record["model_version"]:
        return _not_compared(f"{candidate.label} is both baseline ({config.baseline!r}) and candidate", candidate)

    store = load_model_store(storage, vae_model)  # this run's data: both versions are measured on it
    protocol = comparison_protocol(store, cfg, digit_classifier["fingerprint"])
    folder = storage.folder("comparisons", name, f"{baseline.label}-vs-{candidate.label}")
    report_path, samples_png = folder / "comparison.json", folder / "prior_samples.png"
    result = StoredResult(
        storage, storage.path("results", "version_comparison", name, f"{baseline.label}-vs-{candidate.label}.json"),
        result_key(asset="version_comparison", code=COMPARISON_CODE_VERSION, protocol=protocol.to_json(),
                   runs=[baseline.record["mlflow_run_id"], candidate.record["mlflow_run_id"]]),
    )
    if (reused := result.load(context.log)) is not None:
        context.log.info(f"{baseline.label} vs {candidate.label}: measured before under the same protocol; reusing {report_path}")
        return dg.MaterializeResult(value=reused.manifest, metadata={**reused.metadata, "reused": True})
    judge, _ = load_judge(storage.resolve(digit_classifier["checkpoint"]), device)
    reference, _ = judge_outputs(judge, store[REPORT_SPLIT].float_images(), device)  # (n_test, feature_dim)
    figures = {}
    for side, evaluated in (("baseline", baseline), ("candidate", candidate)):
        context.log.info(f"measuring {evaluated.label} ({side}): IWAE k={protocol.iwae_k} on {protocol.iwae_examples} "
                         f"{REPORT_SPLIT} images, reconstruction per class, probe, {protocol.prior_samples} prior draws")
        figures[side] = version_figures(evaluated.model, store, protocol, judge, reference, device)
    note = incomparable_note(figures["baseline"], figures["candidate"])
    deltas = per_class_deltas(figures["baseline"], figures["candidate"])
    report = {
        "compared": True,
        "protocol": protocol.to_dict(),
        "config": to_dict(cfg),
        "baseline_version": baseline.record["model_version"],
        "candidate_version": candidate.record["model_version"],
        "trained_on": {side: e.record["data_version"] for side, e in (("baseline", baseline), ("candidate", candidate))},
        "baseline": figures["baseline"].as_dict(),
        "candidate": figures["candidate"].as_dict(),
        "likelihood_incomparable": note,
        "per_class_recon": deltas.reset_index().to_dict(orient="records"),
        "table_md": comparison_markdown(baseline.label, figures["baseline"], candidate.label, figures["candidate"], protocol),
        "per_class_md": per_class_markdown(deltas, note),
    }
    _prior_panels(baseline, candidate, report, protocol.seed, device, samples_png)
    write_json_atomic(report_path, report)
    run_id = candidate.record["mlflow_run_id"]
    with mlflow_writes(mlflow_tracking, f"the comparison of {baseline.label} and {candidate.label}", run_id=run_id):
        for path in (report_path, samples_png):
            client.log_artifact(run_id, str(path), artifact_path=f"comparisons/{baseline.label}")
    context.log.info(f"{baseline.label} vs {candidate.label}:\n{report['table_md']}")
    manifest = {k: v for k, v in report.items() if not k.endswith("_md")}
    metadata = {
        "compared": True,
        "baseline_version": report["baseline_version"],
        "candidate_version": report["candidate_version"],
        "comparison": dg.MetadataValue.md(report["table_md"]),
        "per_class_reconstruction": dg.MetadataValue.md(report["per_class_md"]),
        "prior_samples": png_markdown(samples_png, f"prior samples: {baseline.label} beside {candidate.label}"),
        "protocol": dg.MetadataValue.json(report["protocol"]),
        "report": dg.MetadataValue.path(storage.url(report_path)),
    }
    result.save(manifest, metadata, [report_path, samples_png])  # last: its presence means "finished"
    return dg.MaterializeResult(value=manifest, metadata={**metadata, "reused": False})
