"""How a figure was measured, and whether two figures were measured alike.

A figure means something only beside its protocol: the data it was measured on (dataset, data
version, split), what the likelihood scores (a Bernoulli NLL of binarized pixels and a Gaussian
density of grey values are different quantities), the estimators' settings (IWAE k and images,
probe rows, seed, the judge behind Fréchet distances), the images left out because a model trained
on them, for figures that compare trainings, how the model was trained, and the version of the
code that measured it. The promotion gates,
version comparison, latent evaluation and the sweep table each build a `MeasurementProtocol` and
ask `comparable` before setting two figures side by side: one definition of "measured alike", so a
rule added here (the data version, say) holds everywhere.

Protocols are stored as JSON (manifests, MLflow tags, reuse records). `from_dict` also reads the
shapes an earlier release stored (a gate protocol with its `scoring` string, an evaluation's
`probe_max_train`), taking facts the record lacks from its caller, and otherwise says which asset
to re-materialize.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

# What a model is rather than how it was measured: no second measurement removes a difference here.
MODEL_FIELDS = ("dataset", "likelihood")
_HASHES = ("data_version", "held_out_from")  # shown by their first 12 hex digits
_WHY = {
    "dataset": "likelihoods of different datasets are not comparable",
    "likelihood": "a Bernoulli NLL of binarized pixels and a Gaussian density of grey values are different quantities",
    "judge": "Fréchet distances in different judges' feature spaces are not comparable",
    "code": "measured by another version of the code that measures it",
}
# An earlier release's evaluation settings -> this type's fields (used when the record lacks the latter).
_ALIASES = {"probe_max_train": "probe_rows", "regularity_samples": "prior_samples"}
_DERIVED = ("scoring",)  # stored for readers, rebuilt from the other fields on reading


class ProtocolError(ValueError):
    """A stored protocol cannot be read; the message names the asset to re-materialize."""


def scoring(likelihood: str, seed: int) -> str:
    """What a likelihood's NLL scores: one seeded binarization of the grey images (Bernoulli), or the grey values (Gaussian)."""
    if likelihood == "bernoulli":
        return f"binarized, seed {seed}"
    if likelihood == "gaussian":
        return "grey values"
    return ""  # a protocol shared by models of several likelihoods: each scores its own


@dataclass(frozen=True)
class MeasurementProtocol:
    """How a figure was measured; figures are compared only when `comparable` finds their protocols alike."""

    dataset: str
    data_version: str  # content hash of the tensor store measured on
    split: str  # "val" for selection, "test" for reports
    likelihood: str  # what the NLLs score; "" when shared by models of any likelihood, each scored its own way
    seed: int  # subsample, binarization, IWAE noise, probe rows and prior draws all draw from it
    iwae_k: int = 0  # importance samples per image (0: no IWAE figure)
    iwae_examples: int = 0  # images the IWAE NLL averages over
    probe_rows: int = 0  # training rows of the linear probe
    judge: str = ""  # the digit classifier's fingerprint ("" when no figure uses a judge)
    prior_samples: int = 0  # decoded N(0, I) draws judged (0: none)
    held_out_from: str = ""  # a data version whose training images were left out of the split ("" when none had to be)
    held_out_images: int = 0  # images of the split measured on, when some were left out
    settings: Mapping[str, Any] = field(default_factory=dict)  # the other estimators' settings (t-SNE points, kNN k, ...)
    training: Mapping[str, Any] = field(default_factory=dict)  # when trainings are compared: budget and setup (epochs, widths...)
    # The version of the code that measured it (the measuring asset's derived code version, defs/reuse.py):
    # a figure measured by other code is not measured alike, so a recorded one is measured again.
    code: str = ""

    def __post_init__(self) -> None:
        # As JSON holds them (tuples as lists, keys sorted), so that a protocol read back equals the one written.
        for name in ("settings", "training"):
            object.__setattr__(self, name, json.loads(json.dumps(dict(getattr(self, name)), sort_keys=True)))

    @property
    def scoring(self) -> str:
        return scoring(self.likelihood, self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scoring": self.scoring}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], source: str = "the asset that recorded it",
                  **known: Any) -> MeasurementProtocol:
        """A protocol from its stored dict, this release's or an earlier one's.

        `known` fills fields the record lacks (an earlier evaluation stored no dataset or likelihood;
        its caller knows them); it never overrides what the record says. Keys this type does not
        know are kept in `settings`. `source` names what to re-materialize when a field is missing.
        """
        names = {f.name for f in fields(cls)}
        values = {**known, **{k: v for k, v in record.items() if k not in _DERIVED}}
        for old, new in _ALIASES.items():
            if old in values:
                renamed = values.pop(old)
                values.setdefault(new, renamed)
        extra = {k: values.pop(k) for k in list(values) if k not in names}
        values["settings"] = {**extra, **values.get("settings", {})}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise ProtocolError(
                f"the protocol stored by {source} lacks {', '.join(missing)} (recorded by an earlier release); "
                f"re-materialize {source} to record how its figures were measured."
            )
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, source: str = "the asset that recorded it", **known: Any) -> MeasurementProtocol:
        return cls.from_dict(json.loads(text), source, **known)

    def describe(self) -> str:
        """The protocol in a few words, e.g. for a gate's verdict or a registry description."""
        parts = [f"{self.split} split"]
        if self.iwae_k:
            scored = f" ({self.scoring})" if self.scoring else ""
            parts.append(f"IWAE k={self.iwae_k} on {self.iwae_examples} images{scored}")
        if self.probe_rows:
            parts.append(f"probe on {self.probe_rows} training rows")
        if self.judge:
            parts.append(f"judge {self.judge[:8]}")
        parts.append(f"data {self.data_version[:12]}")
        if self.held_out_from:
            parts.append(f"only the {self.held_out_images} images not in data {self.held_out_from[:12]}'s training split")
        return ", ".join(parts)

    def for_likelihood(self, likelihood: str) -> MeasurementProtocol:
        """This protocol for a model of `likelihood` (a protocol shared by several likelihoods, made one model's)."""
        return replace(self, likelihood=likelihood)


@dataclass(frozen=True)
class Difference:
    """One field in which two protocols differ, with both values."""

    field: str  # "iwae_k", or "training.epochs" / "settings.knn_k" for an entry of those mappings
    a: Any
    b: Any

    def __str__(self) -> str:
        why = _WHY.get(self.field)
        return f"{self.field}: {_shown(self.field, self.a)} vs {_shown(self.field, self.b)}" + (f" ({why})" if why else "")


@dataclass(frozen=True)
class Verdict:
    """Whether figures of two protocols may be set side by side, and if not, each field that differs."""

    differences: tuple[Difference, ...] = ()

    @property
    def comparable(self) -> bool:
        return not self.differences

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(d.field for d in self.differences)

    @property
    def remeasurable(self) -> bool:
        """Whether measuring again (under one of the two protocols) can make the figures comparable."""
        return not any(d.field in MODEL_FIELDS for d in self.differences)

    def __str__(self) -> str:
        return "; ".join(map(str, self.differences)) if self.differences else "measured alike"


def comparable(a: MeasurementProtocol, b: MeasurementProtocol) -> Verdict:
    """Whether figures measured under `a` and under `b` are comparable: equal in every field, each difference named."""
    differences = []
    for f in fields(MeasurementProtocol):
        mine, theirs = getattr(a, f.name), getattr(b, f.name)
        if isinstance(mine, Mapping):
            differences += [Difference(f"{f.name}.{k}", mine.get(k), theirs.get(k))
                            for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        elif mine != theirs:
            differences.append(Difference(f.name, mine, theirs))
    return Verdict(tuple(differences))


def _shown(name: str, value: Any) -> str:
    if value is None or value == "":
        return "(none)"
    if name in _HASHES:
        return str(value)[:12]
    return str(value)
