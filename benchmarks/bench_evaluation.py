"""Where latent_evaluation spends its time, against training the VAE in the same run.

Run it after a default run (bash scripts/pipeline.sh), in the same instance and data folder:

    source .venv/bin/activate && source scripts/instance.sh && python benchmarks/bench_evaluation.py

It reads the latest run of $DAGSTER_HOME that evaluated a model (not reused): the step times of
vae_model and latent_evaluation from the run's events, each evaluation stage's seconds from the
evaluation's metrics.json (`eval_<stage>_seconds`, the VAE's stages bare and the auto-encoder's as
`ae_<stage>`), the headline figures, and the ratio latent_evaluation / vae_model (the target:
at most 1.5). A run whose evaluation was reused holds no fresh timings: run the pipeline again with
a new data folder, or change the evaluation config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_times import step_seconds  # noqa: E402 - a sibling script

FIGURES = ("eval_trustworthiness", "eval_ae_trustworthiness", "eval_probe_accuracy", "eval_ae_probe_accuracy",
           "eval_knn_accuracy", "eval_ae_knn_accuracy", "eval_probe_accuracy_pixels", "eval_knn_accuracy_pixels",
           "eval_probe_accuracy_pca", "eval_knn_accuracy_pca", "eval_iwae_nll", "eval_prior_fd", "eval_ae_prior_fd",
           "eval_midpoint_fd", "eval_ae_midpoint_fd", "eval_smoothness_max_step_ratio", "eval_ae_smoothness_max_step_ratio")


def fresh_evaluation(instance: dg.DagsterInstance) -> tuple[str, dg.AssetMaterialization]:
    """The latest materialization of latent_evaluation that computed its figures, and its run."""
    records = instance.fetch_materializations(dg.AssetKey("latent_evaluation"), limit=20).records
    for record in records:
        materialization = record.asset_materialization
        if not materialization.metadata["reused"].value:
            return record.run_id, materialization
    sys.exit("no fresh evaluation in this instance (none, or every one reused): run bash scripts/pipeline.sh "
             "with a new data folder first, in this instance (source scripts/instance.sh).")


def main() -> None:
    instance = dg.DagsterInstance.get()
    run_id, materialization = fresh_evaluation(instance)
    steps = {step: seconds for step, (outcome, seconds) in step_seconds(instance, run_id).items() if outcome == "STEP_SUCCESS"}
    metrics_json = Path(materialization.metadata["metrics_json"].value)
    if not metrics_json.is_file():
        sys.exit(f"{metrics_json} is not a local file: run this benchmark on a local data folder.")
    report = json.loads(metrics_json.read_text())
    metrics = report["metrics"]
    stages = {key.removeprefix("eval_").removesuffix("_seconds"): value for key, value in metrics.items()
              if key.startswith("eval_") and key.endswith("_seconds") and key != "eval_seconds"}
    print(f"run {run_id}, partition {materialization.partition}, model version {report['model_version']}")
    print(f"config: {json.dumps(report['config'])}")
    print("\nevaluation stages (seconds):")
    for stage, seconds in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"  {stage:22s} {seconds:7.1f}")
    print(f"  {'all stages':22s} {metrics['eval_seconds']:7.1f}")
    print("\nfigures:")
    for key in FIGURES:
        print(f"  {key:36s} {metrics[key]:.4f}")
    if "vae_model" not in steps:
        sys.exit(f"run {run_id} evaluated a model it did not train (no vae_model step): no ratio to print.")
    print(f"\nsteps: vae_model {steps['vae_model']:.1f} s, latent_evaluation {steps['latent_evaluation']:.1f} s; "
          f"ratio latent_evaluation / vae_model = {steps['latent_evaluation'] / steps['vae_model']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
