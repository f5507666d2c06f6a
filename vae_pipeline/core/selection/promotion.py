"""Promotion figures: what a challenger and its champion are compared on, measured the same way.

A gated figure is meaningful only with its protocol (`core.selection.protocol`): the data it was
measured on (dataset, data version, split), what the likelihood scores, the estimator's settings
(IWAE k, examples, seed) and the probe's training rows. Two figures are compared only when
`comparable` finds their protocols alike; when the champion was measured another way it is measured
again under the challenger's protocol; when no measurement can make them alike (another dataset,
another likelihood) no comparison is made and the champion is kept. Gates use the validation
split: test is for reporting only.

A champion trained on another data version (a new drop, another val_size or split seed) may have
trained on some of the challenger's validation images: scored on them it would look better than
it is. Such a pair is measured only on the challenger's validation images that are in neither
model's training split (`held_out_protocol`): identified by their pixels, which name an image
whatever file, drop or position it came in; the protocol records that set's size, and below
`GateConfig.min_held_out` images the comparison is refused.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from vae_pipeline.core.data.tensor_store import Split, TensorStore
from vae_pipeline.core.evaluation.arrays import subsample_indices
from vae_pipeline.core.evaluation.probes import linear_probe
from vae_pipeline.core.evaluation.reports import scoring_targets
from vae_pipeline.core.model.config import GateConfig
from vae_pipeline.core.model.inference import active_units, encode_mean, iwae_nll
from vae_pipeline.core.model.vae import VAE
from vae_pipeline.core.selection.protocol import MeasurementProtocol

GATE_SPLIT = "val"  # selection happens on validation data; the test split is never used to pick a model


def protocol_for(store: TensorStore, likelihood: str, cfg: GateConfig) -> MeasurementProtocol:
    """The protocol a model of `likelihood` is gated under on `store` with `cfg`."""
    n = len(store[GATE_SPLIT])
    return MeasurementProtocol(
        dataset=store.dataset,
        data_version=store.content_sha256,
        split=GATE_SPLIT,
        likelihood=likelihood,
        iwae_k=cfg.iwae_k,
        iwae_examples=min(cfg.iwae_examples, n),
        probe_rows=min(cfg.probe_max_train, len(store["train"])),
        seed=cfg.seed,
    )


def _image_keys(split: Split) -> np.ndarray:
    """One 16-byte digest of each image's pixels: an image's identity whatever file, drop or index it came in."""
    pixels = split.images.reshape(len(split), -1).numpy()  # (n, 784) uint8
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in pixels])


def held_out_rows(split: Split, seen: Split) -> np.ndarray:
    """Sorted positions of the rows of `split` whose image is none of the images in `seen` (e.g. another model's training split)."""
    return np.flatnonzero(~np.isin(_image_keys(split), _image_keys(seen)))


def held_out_protocol(protocol: MeasurementProtocol, store: TensorStore, other_train: Split, other_version: str,
                      min_images: int) -> tuple[MeasurementProtocol, np.ndarray] | str:
    """`protocol` restricted to the split's images that the other model (trained on `other_version`) never trained on.

    Returns the restricted protocol and the rows of the split it measures, or why no fair
    comparison exists (fewer than `min_images` such images).
    """
    rows = held_out_rows(store[protocol.split], other_train)
    if len(rows) < min_images:
        return (
            f"only {len(rows)} of the {len(store[protocol.split])} {protocol.split} images were not in the training split "
            f"of data version {other_version[:12]}, the champion's (need {min_images} for a fair comparison): the two "
            "were split differently. Retrain the champion's variant on this data version and promote that, lower "
            "min_held_out, or move the champion alias by hand"
        )
    restricted = replace(protocol, held_out_from=other_version, held_out_images=len(rows),
                         iwae_examples=min(protocol.iwae_examples, len(rows)))
    return restricted, rows


def gate_figures(model: VAE, store: TensorStore, protocol: MeasurementProtocol, device: torch.device | str,
                 rows: np.ndarray | None = None) -> dict[str, float]:
    """The gated figures of `model` under `protocol`: IWAE NLL (nats, with its standard error), probe accuracy, active units.

    `store` must hold the protocol's data version; the model's likelihood must be the protocol's.
    A held-out protocol measures only the split's `rows` that `held_out_protocol` returned with it.
    """
    if store.content_sha256 != protocol.data_version:
        raise ValueError(f"the protocol is for data version {protocol.data_version[:12]}, the store holds {store.content_sha256[:12]}.")
    if model.cfg.likelihood != protocol.likelihood:
        raise ValueError(f"the protocol scores a {protocol.likelihood} likelihood; this model's is {model.cfg.likelihood}.")
    if (rows is not None) != bool(protocol.held_out_from) or (rows is not None and len(rows) != protocol.held_out_images):
        raise ValueError("a held-out protocol is measured on exactly the rows held_out_protocol returned with it, and only then.")
    train, split = store["train"], store[protocol.split]
    if rows is not None:
        kept = torch.as_tensor(rows)
        split = Split(images=split.images[kept], labels=split.labels[kept], index=split.index[kept])
    idx = torch.as_tensor(subsample_indices(len(split), protocol.iwae_examples, protocol.seed))
    x = scoring_targets(model, split.float_images()[idx], torch.Generator().manual_seed(protocol.seed))  # (n, 1, 28, 28)
    generator = torch.Generator(device=device).manual_seed(protocol.seed)
    nll = iwae_nll(model, x, k=protocol.iwae_k, device=device, generator=generator)  # (n,)
    mu_train, _ = encode_mean(model, train.float_images(), device=device)  # (n_train, d)
    mu_split, _ = encode_mean(model, split.float_images(), device=device)  # (n_split, d)
    probe = linear_probe(mu_train, train.labels, mu_split, split.labels, seed=protocol.seed, max_train=protocol.probe_rows)
    return {
        "iwae_nll": float(nll.mean()),
        "iwae_nll_se": float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else math.nan,
        "probe_accuracy": float(probe.accuracy),
        "active_units": float(active_units(mu_split)),
    }


@dataclass(frozen=True)
class Comparison:
    """The challenger's gated figures beside the champion's, under one protocol (or why there is none)."""

    protocol: MeasurementProtocol
    challenger: dict[str, float]
    champion_version: int | None = None
    champion: dict[str, float] | None = None
    champion_source: str | None = None  # "recorded" (same protocol) or "re-measured" (another protocol before)
    incomparable: str | None = None  # why no comparison was made; the champion is kept

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["protocol"] = self.protocol.to_dict()
        return out


def nll_gate(comparison: Comparison, tolerance_nats: float) -> tuple[bool, str]:
    """Pass when the challenger's NLL is not worse than the champion's by more than the tolerance."""
    return _gate(comparison, "iwae_nll", lambda new, old: new <= old + tolerance_nats, " nats", f"tolerance {tolerance_nats} nats")


def probe_gate(comparison: Comparison, tolerance: float) -> tuple[bool, str]:
    """Pass when the challenger's probe accuracy is not worse than the champion's by more than the tolerance."""
    return _gate(comparison, "probe_accuracy", lambda new, old: new >= old - tolerance, "", f"tolerance {tolerance}")


def active_units_needed(latent_dim: int, min_fraction: float) -> int:
    """The fewest active latent units that are not posterior collapse: `min_fraction` of the dims, at least one."""
    return max(1, math.ceil(min_fraction * latent_dim))


def collapse_gate(active_units: float, latent_dim: int, min_fraction: float) -> tuple[bool, str]:
    """Pass when at least `min_fraction` of the latent dimensions are active (no posterior collapse); needs no champion."""
    active, needed = int(active_units), active_units_needed(latent_dim, min_fraction)
    return active >= needed, f"{active} of {latent_dim} latent units active on the {GATE_SPLIT} split (need {needed})"


def _gate(comparison: Comparison, name: str, ok, unit: str, rule: str) -> tuple[bool, str]:
    value = comparison.challenger[name]
    p = comparison.protocol
    where = f"{p.split} split, {p.iwae_examples} examples, k={p.iwae_k}" if name == "iwae_nll" else f"{p.split} split, {p.probe_rows} probe rows"
    if p.held_out_from:
        where = f"{where}; only the {p.held_out_images} {p.split} images neither model trained on"
    if comparison.incomparable is not None:
        return False, f"not compared: {comparison.incomparable}; champion v{comparison.champion_version} kept"
    if comparison.champion is None:
        return True, f"no champion yet: {name} {value:.4f}{unit} ({where}) accepted"
    before = comparison.champion[name]
    passed = bool(ok(value, before))
    verdict = "not worse than" if passed else "worse than"
    return passed, (
        f"{name} {value:.4f}{unit} is {verdict} champion v{comparison.champion_version}'s {before:.4f}{unit} "
        f"({where}; champion {comparison.champion_source}; {rule})"
    )
