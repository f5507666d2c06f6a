"""Model variants of a sweep: a key per variant (z20-b1-bern) and the sweep file that lists them.

A variant fixes what a sweep varies (latent size, beta, likelihood); everything else comes from
the base training config. The key is readable, sortable by eye and a valid Dagster partition key,
and it round-trips: `Variant.from_key(v.key) == v`. A sweep file (YAML) lists variants explicitly,
as a grid, or both; every variant is validated by the configs it will be trained with, so a bad
value fails when the file is read, naming the variant.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vae_pipeline.core.model.config import ConfigError, ModelConfig, TrainConfig

# What a variant varies; every other training field comes from the base config.
VARIANT_FIELDS = ("latent_dim", "beta", "likelihood")
LIKELIHOOD_CODES = {"bernoulli": "bern", "gaussian": "gauss"}
# The most variants one sweep file may name; a 100 x 100 grid would add 10,000 partitions at once.
MAX_VARIANTS = 100
_KEY = re.compile(r"z(?P<latent_dim>[1-9]\d*)-b(?P<beta>\d+(?:\.\d+)?)-(?P<likelihood>[a-z]+)")


def _beta_text(beta: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5": the shortest exact decimal, so keys stay readable and unique."""
    return f"{beta:g}" if float(f"{beta:g}") == beta else repr(beta)


@dataclass(frozen=True)
class Variant:
    """What one model of a sweep varies; the rest of its config is the base config."""

    latent_dim: int
    beta: float
    likelihood: str

    def __post_init__(self) -> None:
        # The configs the variant is trained with check the values (and name the fix).
        ModelConfig(latent_dim=self.latent_dim, likelihood=self.likelihood)
        TrainConfig(beta=self.beta)
        if "e" in _beta_text(self.beta):
            raise ConfigError(f"beta={self.beta} has no short decimal form for a variant key; use e.g. 0.001 or 4.")

    @property
    def key(self) -> str:
        return f"z{self.latent_dim}-b{_beta_text(self.beta)}-{LIKELIHOOD_CODES[self.likelihood]}"

    @classmethod
    def from_key(cls, key: str) -> Variant:
        match = _KEY.fullmatch(key)
        codes = {code: name for name, code in LIKELIHOOD_CODES.items()}
        if match is None or match["likelihood"] not in codes:
            raise ConfigError(
                f"variant key {key!r} is not of the form z<latent_dim>-b<beta>-<{'|'.join(codes)}>, e.g. z20-b1-bern."
            )
        variant = cls(int(match["latent_dim"]), float(match["beta"]), codes[match["likelihood"]])
        if variant.key != key:  # z4-b1.50-bern would train z4-b1.5-bern's model under a second name
            raise ConfigError(f"variant key {key!r} is not in its canonical form; use {variant.key!r}.")
        return variant

    def model_overrides(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "likelihood": self.likelihood}

    def train_overrides(self) -> dict[str, Any]:
        return {"beta": self.beta}


def _variant(entry: Any, where: str) -> Variant:
    if not isinstance(entry, dict) or set(entry) - set(VARIANT_FIELDS):
        raise ConfigError(f"{where}: {entry!r} must be a mapping of latent_dim, beta and likelihood.")
    # Values are taken as written: a YAML `2.7` or `true` is refused by the configs, not truncated to z2 or z1.
    beta = entry.get("beta", TrainConfig.beta)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise ConfigError(f"{where}: beta={beta!r} must be a number, e.g. 1 or 0.5.")
    likelihood = entry.get("likelihood", ModelConfig.likelihood)
    if not isinstance(likelihood, str):
        raise ConfigError(f"{where}: likelihood={likelihood!r} must be one of {', '.join(LIKELIHOOD_CODES)}.")
    try:
        return Variant(latent_dim=entry.get("latent_dim", ModelConfig.latent_dim), beta=float(beta), likelihood=likelihood)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def parse_sweep(document: Any, source: str = "the sweep") -> list[Variant]:
    """The variants a sweep document names (`variants:` a list, `grid:` lists per field), in order, without repeats."""
    if not isinstance(document, dict) or not set(document) & {"variants", "grid"} or set(document) - {"variants", "grid"}:
        raise ConfigError(f"{source} must be a mapping with `variants:` (a list) and/or `grid:` (lists per field).")
    found: list[Variant] = [_variant(e, f"{source}, variants[{i}]") for i, e in enumerate(document.get("variants") or [])]
    grid = document.get("grid") or {}
    if grid:
        if not isinstance(grid, dict) or set(grid) - set(VARIANT_FIELDS):
            raise ConfigError(f"{source}, grid: {grid!r} must map latent_dim, beta and/or likelihood to lists.")
        fields = [f for f in VARIANT_FIELDS if f in grid]  # the key's order: z, then b
        values = [grid[f] if isinstance(grid[f], list) else [grid[f]] for f in fields]
        _check_size(len(found) + math.prod(len(v) for v in values), source)  # before building a 10,000-variant product
        found += [_variant(dict(zip(fields, combo)), f"{source}, grid {dict(zip(fields, combo))}") for combo in itertools.product(*values)]
    keys = [v.key for v in found]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ConfigError(f"{source} names {', '.join(repeated)} more than once; list each variant once.")
    if not found:
        raise ConfigError(f"{source} names no variant.")
    _check_size(len(found), source)
    return found


def _check_size(n_variants: int, source: str) -> None:
    if n_variants > MAX_VARIANTS:
        raise ConfigError(
            f"{source} names {n_variants} variants, above the bound of {MAX_VARIANTS}: each variant is a partition that "
            f"trains a VAE and an auto-encoder and evaluates both (minutes each on a CPU); split the sweep into files of "
            f"at most {MAX_VARIANTS}."
        )


def load_sweep(path: Path | str) -> list[Variant]:
    """The variants of a sweep file (YAML), checked."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist; create it (see sweeps/default.yaml).") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep file {path} is not valid YAML: {exc}") from exc
    return parse_sweep(document, source=f"sweep file {path}")

