"""Model variants as partitions: one partition per variant key (z20-b1-bern), added from a sweep file or the UI.

The training asset and everything downstream of one model (its auto-encoder baseline, latents,
samples, report, evaluation, comparisons and promotion) are partitioned by variant, so each
variant has its own checkpoint, MLflow run, registered version and history in the UI; the data
assets and the judge are shared. The partitions are dynamic: the variants of the sweep file
($VAE_PIPELINE_SWEEP, else sweeps/default.yaml) are added by the `sweep_variants` sensor, or at
once with `python -m vae_pipeline.variants_cli add`, and a user may add any other key from the
UI's "Add partition" without touching code. Removing a line from the sweep file deletes nothing:
a variant's history stays until its partition is deleted in the UI.

The key decides latent size, beta and likelihood (core/selection/sweep.py); the rest of the training
config comes from the run config, the same for every variant of a run or backfill.
"""

import os
from pathlib import Path

import dagster as dg

from vae_pipeline.core.model.config import ConfigError, ModelConfig, TrainConfig
from vae_pipeline.core.selection.sweep import VARIANT_FIELDS, Variant, load_sweep
from vae_pipeline.defs.automation import default_sensor_status

SWEEP_ENV = "VAE_PIPELINE_SWEEP"
DEFAULT_SWEEP = Path("sweeps") / "default.yaml"

VARIANTS = dg.DynamicPartitionsDefinition(name="variants")
__all__ = ["DEFAULT_VARIANT", "VARIANTS", "VARIANT_FIELDS", "sweep_variants", "variant_of"]
# The model the single-variant pipeline trains: the core configs' defaults.
DEFAULT_VARIANT = Variant(ModelConfig.latent_dim, TrainConfig.beta, ModelConfig.likelihood)


def sweep_file() -> Path:
    """The sweep file the code location reads: $VAE_PIPELINE_SWEEP, else sweeps/default.yaml."""
    return Path(os.environ.get(SWEEP_ENV) or DEFAULT_SWEEP)


def variant_of(context: dg.AssetExecutionContext) -> Variant:
    """The variant of the partition being materialized; ConfigError names a key that is not one."""
    if not context.has_partition_key:
        raise ConfigError(
            f"{context.asset_key.to_user_string()} is partitioned by model variant; pick a partition "
            f"(e.g. {DEFAULT_VARIANT.key}) in the launchpad, or pass --partition {DEFAULT_VARIANT.key} to dg launch."
        )
    try:
        return Variant.from_key(context.partition_key)
    except ConfigError as exc:
        raise ConfigError(f"partition {context.partition_key!r}: {exc} Delete that partition in the UI and add a valid key.") from None


def missing_variants(instance: dg.DagsterInstance, variants: list[Variant]) -> list[str]:
    """Keys of `variants` that are not partitions yet, in the sweep's order."""
    known = set(instance.get_dynamic_partitions(VARIANTS.name))
    return [v.key for v in variants if v.key not in known]


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=default_sensor_status(),
    description="Adds the variants of the sweep file ($VAE_PIPELINE_SWEEP, else sweeps/default.yaml) as partitions; deletes none.",
)
def sweep_variants(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    path = sweep_file()
    variants = load_sweep(path)  # a bad file fails the tick, naming the file and the variant
    new = missing_variants(context.instance, variants)
    if not new:
        return dg.SkipReason(f"every variant of {path} is a partition already")
    context.log.info(f"adding {', '.join(new)} from {path}")
    return dg.SensorResult(dynamic_partitions_requests=[VARIANTS.build_add_request(new)])
