"""The run's whole config, checked before any step runs, so a bad value fails before any work starts.

Dagster checks run config against the schema (types, unknown fields) when a run is launched, but
not the values: `iwae_k: 0` is a valid int. Each asset also validates its own config when it
starts, which in a whole-graph run is after ingest and training. So the code location's executor
checks every asset's config first: whichever executor the run uses (in-process, multiprocess or
Celery, chosen in the run config's `execution` section), it is wrapped so that a run launched from
the UI, GraphQL, the CLI or a schedule fails with the field and the fix before its first step (and,
under Celery, before the broker is contacted). The checks are the core configs' own validation;
nothing new here. A run's partition key (the model variant) is checked the same way.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster_celery import celery_executor
from pydantic import ValidationError

from vae_pipeline.core.evaluation.judge import JudgeConfig
from vae_pipeline.core.model.config import (
    OFFICIAL_TRAIN_IMAGES,
    ComparisonConfig,
    ConfigError,
    DataConfig,
    EmbeddingsConfig,
    EvaluationConfig,
    GateConfig,
    ModelConfig,
    ReportConfig,
    SamplesConfig,
    TrainConfig,
)
from vae_pipeline.core.model.device import resolve_device
from vae_pipeline.core.model.memory import check_training_fits
from vae_pipeline.core.selection.sweep import Variant
from vae_pipeline.defs.assets.comparison import VersionComparisonConfig
from vae_pipeline.defs.assets.evaluation import LatentEvaluationConfig
from vae_pipeline.defs.assets.ingest import MnistRawConfig, MnistTensorsConfig
from vae_pipeline.defs.assets.judge import DigitClassifierConfig
from vae_pipeline.defs.assets.outputs import LatentEmbeddingsConfig, PriorSamplesConfig, ReconstructionReportConfig
from vae_pipeline.defs.assets.promotion import ChampionComparisonConfig
from vae_pipeline.defs.assets.training import VaeTrainingConfig, variant_configs
from vae_pipeline.defs.config_classes import to_core
from vae_pipeline.defs.identity.versions import parse_version_ref
from vae_pipeline.defs.stale_runs import start_run_worker

PARTITION_TAG = "dagster/partition"  # the tag Dagster files a run's partition key under
# The tags of a run over a range of partitions (a single-run backfill).
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")

# Every asset that takes config, with the checks its values must pass. A test asserts that no
# configurable asset of the definitions is missing here.
CONFIG_CHECKS: dict[str, tuple[type[dg.Config], Callable[[Any], object]]] = {
    "mnist_raw": (MnistRawConfig, lambda c: DataConfig(dataset=c.dataset)),
    "mnist_tensors": (MnistTensorsConfig, lambda c: DataConfig(val_size=c.val_size, split_seed=c.split_seed)),
    "vae_model": (
        VaeTrainingConfig,
        lambda c: (to_core(c, ModelConfig), to_core(c, TrainConfig), resolve_device(c.device)),
    ),
    "latent_embeddings": (LatentEmbeddingsConfig, lambda c: to_core(c, EmbeddingsConfig)),
    "prior_samples": (PriorSamplesConfig, lambda c: to_core(c, SamplesConfig)),
    "reconstruction_report": (ReconstructionReportConfig, lambda c: to_core(c, ReportConfig)),
    "latent_evaluation": (LatentEvaluationConfig, lambda c: (to_core(c, EvaluationConfig), parse_version_ref(c.model_version))),
    "version_comparison": (
        VersionComparisonConfig,
        lambda c: (to_core(c, ComparisonConfig), parse_version_ref(c.baseline), parse_version_ref(c.candidate)),
    ),
    "champion_comparison": (ChampionComparisonConfig, lambda c: to_core(c, GateConfig)),
    "digit_classifier": (DigitClassifierConfig, lambda c: (to_core(c, JudgeConfig), resolve_device(c.device))),
}


def _asset_config(run_config: Mapping[str, Any], asset: str) -> Any:
    cls = CONFIG_CHECKS[asset][0]
    values = ((run_config.get("ops") or {}).get(asset) or {}).get("config") or {}  # not a manifest: a run config
    try:
        return cls(**values)
    except ValidationError as exc:  # a wrong type; the launch schema usually catches it first
        raise ConfigError(f"ops.{asset}.config: {exc}") from exc


def check_run_config(run_config: Mapping[str, Any]) -> None:
    """Validate the config of every asset of the pipeline; raises ConfigError naming ops.<asset>.config.<field>.

    Assets the run config leaves out are checked with their defaults (which are valid).
    The batch size is checked against the most training images the split can leave; against the
    actual count (a slice has fewer) vae_model checks again before it creates anything.
    """
    configs = {asset: _asset_config(run_config, asset) for asset in CONFIG_CHECKS}
    for asset, (_, check) in CONFIG_CHECKS.items():
        try:
            check(configs[asset])
        except ConfigError as exc:
            raise ConfigError(f"ops.{asset}.config: {exc}") from exc
    tensors, vae = configs["mnist_tensors"], configs["vae_model"]
    limit = DataConfig(dataset=configs["mnist_raw"].dataset, val_size=tensors.val_size).max_train_images
    if vae.batch_size > limit:
        raise ConfigError(
            f"ops.vae_model.config: batch_size={vae.batch_size} is larger than the at most {limit} training images "
            f"left by val_size={tensors.val_size}; use a smaller batch_size."
        )


def check_run_partition(tags: Mapping[str, str], partitioned_assets: Sequence[str] = ()) -> None:
    """A run of one variant must name a valid variant key (a key added in the UI can be any string).

    A run that executes assets partitioned by variant must name one: `dg launch --partition ''`
    launches a run without any (Dagster reads the empty key as "none"), which would train the
    judge and only then fail at the first partitioned asset.
    """
    keys = [tags[tag] for tag in (PARTITION_TAG, *RANGE_TAGS) if tag in tags]
    if not keys and partitioned_assets:
        raise ConfigError(
            f"this run executes {', '.join(partitioned_assets)}, which are partitioned by model variant, but names no "
            "variant (an empty --partition names none); launch it with --partition <variant>, e.g. --partition "
            "z20-b1-bern (`python -m vae_pipeline.variants_cli list` shows this instance's variants)."
        )
    for key in keys:
        try:
            Variant.from_key(key)
        except ConfigError as exc:
            raise ConfigError(f"partition {key!r}: {exc} Launch a valid variant; delete that partition in the UI.") from None


def check_run_memory(run_config: Mapping[str, Any], tags: Mapping[str, str]) -> None:
    """Refuse a run whose training step cannot fit this machine's memory (estimated from the config and the variant).

    The estimate uses the most images a split can hold; the vae_model asset estimates again with
    the actual counts before it trains (a run materialized without this executor, e.g. by tests).
    """
    key = tags.get(PARTITION_TAG)
    if key is None:
        return
    variant = Variant.from_key(key)
    config = _asset_config(run_config, "vae_model")
    model_cfg, train_cfg = variant_configs(config, variant)
    check_training_fits(model_cfg, train_cfg, OFFICIAL_TRAIN_IMAGES, f"ops.vae_model.config: training variant {key}")


def _partitioned_assets(plan_context, execution_plan) -> list[str]:
    """The assets this run executes that are partitioned (by model variant), in execution order."""
    layer = plan_context.job.get_definition().asset_layer
    found = []
    for step in execution_plan.get_steps_to_execute_in_topo_order():
        assets = layer.get_assets_def_for_node(step.node_handle)
        if assets is not None and assets.partitions_def is not None and step.key not in found:
            found.append(step.key)
    return found


class _CheckedExecutor(dg.Executor):
    """Any executor, after `check_run_config` passed."""

    def __init__(self, inner: dg.Executor) -> None:
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def __getattr__(self, name: str) -> Any:
        # The rest of the inner executor's interface: Celery's execution loop reads the broker from
        # `plan_context.executor.app_args()`, and `plan_context.executor` is this wrapper.
        if name == "_inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        start_run_worker(plan_context)  # record this process as the run's worker; fail runs whose worker died
        try:
            check_run_config(plan_context.run_config)  # raising here fails the run before its first step
            check_run_partition(plan_context.dagster_run.tags, _partitioned_assets(plan_context, execution_plan))
            check_run_memory(plan_context.run_config, plan_context.dagster_run.tags)
        except ConfigError:
            # That fails the run, not a step, so run retries would repeat it; the same config fails again.
            plan_context.instance.add_run_tags(plan_context.run_id, {"dagster/max_retries": "0"})
            raise
        yield from self._inner.execute(plan_context, execution_plan)


def checked(executor: dg.ExecutorDefinition, *, name: str | None = None, config_schema: Any = None,
            description: str | None = None) -> dg.ExecutorDefinition:
    """`executor` with the whole run config checked before its first step (same config unless given)."""

    def create(init_context: dg.InitExecutorContext) -> dg.Executor:
        return _CheckedExecutor(executor.executor_creation_fn(init_context))

    return dg.ExecutorDefinition(
        name=name or executor.name,
        config_schema=config_schema if config_schema is not None else executor.config_schema,
        requirements=executor.get_requirements,
        executor_creation_fn=create,
        description=description or f"Checks every asset's config, then runs as {executor.name}.",
    )


def one_of(executors: Mapping[str, dg.ExecutorDefinition], *, name: str, default: str,
           description: str) -> dg.ExecutorDefinition:
    """One of `executors`, chosen by the run config's key: `execution: {config: {<key>: <that executor's config>}}`."""

    def chosen(config: Mapping[str, Any]) -> tuple[dg.ExecutorDefinition, Mapping[str, Any]]:
        ((key, executor_config),) = config.items()  # a Selector: exactly one key
        return executors[key], executor_config or {}

    def requirements(config: Mapping[str, Any]) -> Sequence[dg.ExecutorRequirement]:
        executor, executor_config = chosen(config)
        return executor.get_requirements(executor_config)

    def create(init_context: dg.InitExecutorContext) -> dg.Executor:
        executor, executor_config = chosen(init_context.executor_config)
        return executor.executor_creation_fn(
            dg.InitExecutorContext(
                job=init_context.job, executor_def=executor, executor_config=executor_config, instance=init_context.instance
            )
        )

    return dg.ExecutorDefinition(
        name=name,
        config_schema=dg.Field(
            dg.Selector({key: executor.config_schema.as_field() for key, executor in executors.items()}),
            default_value={default: {}},
        ),
        requirements=requirements,
        executor_creation_fn=create,
        description=description,
    )


# The code location's executor: one process per run by default (on a 2-core machine a process
# per step costs more in imports than it buys); Dagster's multiprocess executor with
# `execution: {config: {multiprocess: {max_concurrent: N}}}`; dagster-celery's executor with
# `execution: {config: {celery: {broker: redis://..., backend: redis://...}}}`, each step a Celery
# task that a worker (`dagster-celery worker start`, on this or another machine) runs. Each key
# takes that executor's own config. Checked whichever it is.
checked_executor = checked(
    one_of(
        {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor, "celery": celery_executor},
        name="in_process_multiprocess_or_celery",
        default="in_process",
        description="Runs all steps in one process (default), one process per step, or as Celery tasks on workers.",
    ),
    description=(
        "Checks every asset's config, then runs all steps in one process (default), one process per step, "
        "or as Celery tasks on workers."
    ),
)
