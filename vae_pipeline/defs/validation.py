"""The run's whole config, checked before any step runs, so a bad value fails before ingest writes anything.

Dagster checks run config against the schema (types, unknown fields) when a run is launched, but
not the values: `epochs: -1` is a valid int. Each asset validates its own config when it starts,
which in a whole-graph run is after ingest has already written the tensor store. So the code
location's executor checks every asset's config first: the in-process executor, wrapped so that
a run (launched from the UI, GraphQL, the CLI or the schedule) fails with the field and the fix
before its first step starts. The checks are the core configs' own validation; nothing new here.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from pydantic import ValidationError

from vae_pipeline.core.config import ConfigError, DataConfig
from vae_pipeline.core.device import resolve_device
from vae_pipeline.defs.assets.ingest import MnistRawConfig, MnistTensorsConfig
from vae_pipeline.defs.assets.training import VaeTrainingConfig


def _asset_config(run_config: Mapping[str, Any], asset: str, cls: type[dg.Config]) -> Any:
    values = ((run_config.get("ops") or {}).get(asset) or {}).get("config") or {}
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
    checks = []
    raw = _asset_config(run_config, "mnist_raw", MnistRawConfig)
    tensors = _asset_config(run_config, "mnist_tensors", MnistTensorsConfig)
    vae = _asset_config(run_config, "vae_model", VaeTrainingConfig)
    checks.append(("mnist_raw", lambda: DataConfig(dataset=raw.dataset)))
    checks.append(
        ("mnist_tensors", lambda: DataConfig(dataset=raw.dataset, val_size=tensors.val_size, split_seed=tensors.split_seed))
    )
    checks.append(("vae_model", vae.to_model_config))
    checks.append(("vae_model", vae.to_train_config))
    checks.append(("vae_model", lambda: resolve_device(vae.device)))
    for asset, check in checks:
        try:
            check()
        except ConfigError as exc:
            raise ConfigError(f"ops.{asset}.config: {exc}") from exc
    limit = DataConfig(dataset=raw.dataset, val_size=tensors.val_size).max_train_images
    if vae.batch_size > limit:
        raise ConfigError(
            f"ops.vae_model.config: batch_size={vae.batch_size} is larger than the at most {limit} training images "
            f"left by val_size={tensors.val_size}; use a smaller batch_size."
        )


class _CheckedInProcessExecutor(dg.Executor):
    """The in-process executor, after `check_run_config` passed."""

    def __init__(self, inner: dg.Executor) -> None:
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        check_run_config(plan_context.run_config)  # raising here fails the run before its first step
        yield from self._inner.execute(plan_context, execution_plan)


def _create(init_context: dg.InitExecutorContext) -> dg.Executor:
    return _CheckedInProcessExecutor(dg.in_process_executor.executor_creation_fn(init_context))


# Same name and config as Dagster's in-process executor, so run configs and the UI are unchanged.
checked_in_process_executor = dg.ExecutorDefinition(
    name="in_process",
    config_schema=dg.in_process_executor.config_schema,
    requirements=dg.in_process_executor.get_requirements,
    executor_creation_fn=_create,
    description="Checks every asset's config, then executes all steps in one process.",
)
