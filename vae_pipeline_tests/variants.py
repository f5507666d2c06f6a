"""Model variants in tests: the tiny variant the slice tests train, and adding partitions to an instance."""

from __future__ import annotations

import dagster as dg

from vae_pipeline.defs.variants import VARIANTS

# Latent size 4, beta 1, Bernoulli: what the tiny whole-graph config trains (helpers.py).
TINY_VARIANT = "z4-b1-bern"


def add_variants(instance: dg.DagsterInstance, *keys: str) -> dg.DagsterInstance:
    """Make `keys` partitions of `instance` (those it lacks), as the sweep sensor or the UI would; returns the instance."""
    known = set(instance.get_dynamic_partitions(VARIANTS.name))
    new = [key for key in keys if key not in known]
    if new:
        instance.add_dynamic_partitions(VARIANTS.name, new)
    return instance
