"""Two model versions side by side, each measured the same way: NLL, reconstruction per class, probe, prior samples.

A report, so it uses the test split (selection happens on validation, in `core.selection.promotion`). Both
versions see the same images, the same binarization, the same IWAE noise seed, the same probe rows
and the same prior draws; the protocol is recorded with the figures. Each version's figures carry
that protocol in its own likelihood, and a likelihood figure is only compared when
`core.selection.protocol.comparable` finds the two alike: a Bernoulli NLL of binarized pixels and
a Gaussian density of grey values are different numbers, so that row says why it is not compared
instead of showing a difference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd
import torch

from vae_pipeline.core.data.tensor_store import TensorStore
from vae_pipeline.core.evaluation.arrays import ArrayLike
from vae_pipeline.core.evaluation.judge import Judge
from vae_pipeline.core.evaluation.regularity import SampleQuality, sample_quality, sample_standard_normal
from vae_pipeline.core.evaluation.reports import encode_splits, per_class_change, per_class_error_stats
from vae_pipeline.core.model.config import ComparisonConfig
from vae_pipeline.core.model.inference import decode_latents
from vae_pipeline.core.model.vae import VAE
from vae_pipeline.core.selection.promotion import gate_figures
from vae_pipeline.core.selection.protocol import MeasurementProtocol, comparable

REPORT_SPLIT = "test"


def comparison_protocol(store: TensorStore, cfg: ComparisonConfig, judge: str) -> MeasurementProtocol:
    """The protocol both versions are measured under; each is scored in its own likelihood (`for_likelihood`)."""
    n = len(store[REPORT_SPLIT])
    return MeasurementProtocol(
        dataset=store.dataset,
        data_version=store.content_sha256,  # the store both are measured on (not necessarily the one either trained on)
        split=REPORT_SPLIT,
        likelihood="",
        seed=cfg.seed,
        iwae_k=cfg.iwae_k,
        iwae_examples=min(cfg.iwae_examples, n),
        probe_rows=min(cfg.probe_max_train, len(store["train"])),
        judge=judge,  # FDs from different judges are not comparable
        prior_samples=cfg.prior_samples,
    )


@dataclass(frozen=True)
class VersionFigures:
    """One version's figures, with the protocol they were measured under (the shared one, in its likelihood)."""

    protocol: MeasurementProtocol
    latent_dim: int
    iwae_nll: float  # nats per image
    iwae_nll_se: float
    recon_nll_at_mu: float  # mean over the split, nats: the decoder at z = mu (as in the latent parquet)
    kl: float  # mean KL(q(z|x) || N(0, I)) over the split, nats
    probe_accuracy: float
    active_units: float
    prior: SampleQuality  # decoded N(0, I) draws, judged against the split's real images
    per_class_recon: dict[int, float]  # label -> mean recon_nll_at_mu

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "protocol": self.protocol.to_dict()}


def version_figures(
    model: VAE, store: TensorStore, protocol: MeasurementProtocol, judge: Judge, reference_features: ArrayLike,
    device: torch.device | str,
) -> VersionFigures:
    """Measure one version under `protocol`; `reference_features` are the judge's features of the split's images."""
    if store.content_sha256 != protocol.data_version:
        raise ValueError(f"the protocol is for data version {protocol.data_version[:12]}, the store holds {store.content_sha256[:12]}.")
    if not model.cfg.variational:
        raise ValueError("version comparison measures VAEs (IWAE NLL, KL); this model is a plain auto-encoder.")
    measured = protocol.for_likelihood(model.cfg.likelihood)
    gated = gate_figures(model, store, measured, device)
    rows = encode_splits(model, store, device, protocol.seed, splits=(protocol.split,))[protocol.split]
    per_class = per_class_error_stats(rows["recon_nll_at_mu"], rows["label"])["mean"]
    z = sample_standard_normal(protocol.prior_samples, model.latent_dim, torch.Generator().manual_seed(protocol.seed))  # (n, d)
    prior = sample_quality(judge, decode_latents(model, z, device=device), reference_features, device)
    return VersionFigures(
        protocol=measured,
        latent_dim=model.latent_dim,
        iwae_nll=gated["iwae_nll"],
        iwae_nll_se=gated["iwae_nll_se"],
        recon_nll_at_mu=float(rows["recon_nll_at_mu"].mean()),
        kl=float(rows["kl"].mean()),
        probe_accuracy=gated["probe_accuracy"],
        active_units=gated["active_units"],
        prior=prior,
        per_class_recon={int(k): float(v) for k, v in per_class.items()},
    )


def incomparable_note(baseline: VersionFigures, candidate: VersionFigures) -> str | None:
    """Why the two versions' likelihood figures (IWAE NLL, reconstruction NLL) are not compared, or None when they are."""
    verdict = comparable(baseline.protocol, candidate.protocol)
    return None if verdict.comparable else f"measured differently (baseline vs candidate: {verdict})"


def per_class_deltas(baseline: VersionFigures, candidate: VersionFigures) -> pd.DataFrame:
    """Mean reconstruction NLL per class for both, and the change (negative: the candidate reconstructs better)."""
    frame = lambda f: pd.DataFrame({"mean": pd.Series(f.per_class_recon)})  # noqa: E731 - per_class_change's input
    table = per_class_change(frame(candidate), frame(baseline)).rename(
        columns={"mean_now": "candidate", "mean_before": "baseline"}
    )
    table.index.name = "label"
    return table


def _row(name: str, a: float, b: float, fmt: str, lower_is_better: bool | None, note: str | None = None) -> str:
    if note is not None:
        return f"| {name} | {a:{fmt}} | {b:{fmt}} | not compared: {note} |"
    delta = b - a
    if lower_is_better is None or delta == 0:
        return f"| {name} | {a:{fmt}} | {b:{fmt}} | {delta:+{fmt}} |"
    better = (delta < 0) == lower_is_better
    return f"| {name} | {a:{fmt}} | {b:{fmt}} | {delta:+{fmt}} ({'better' if better else 'worse'}) |"


def comparison_markdown(
    baseline_name: str, baseline: VersionFigures, candidate_name: str, candidate: VersionFigures,
    protocol: MeasurementProtocol,
) -> str:
    """The figures of both versions as one markdown table, with the protocol they share above it."""
    note = incomparable_note(baseline, candidate)
    p = protocol
    rows = [
        f"Both measured on the {p.split} split of {p.dataset} (data {p.data_version[:12]}), seed {p.seed}; "
        f"judge {p.judge}.",
        "",
        f"| figure | {baseline_name} (baseline) | {candidate_name} (candidate) | candidate - baseline |",
        "| --- | --- | --- | --- |",
        f"| likelihood | {baseline.protocol.likelihood}, {baseline.protocol.scoring} | "
        f"{candidate.protocol.likelihood}, {candidate.protocol.scoring} | |",
        f"| latent dimensions (active) | {baseline.latent_dim} ({int(baseline.active_units)}) | "
        f"{candidate.latent_dim} ({int(candidate.active_units)}) | |",
        _row(f"IWAE NLL, k={p.iwae_k}, {p.iwae_examples} images (nats)", baseline.iwae_nll, candidate.iwae_nll, ".2f", True, note),
        _row("reconstruction NLL at z = mu (nats)", baseline.recon_nll_at_mu, candidate.recon_nll_at_mu, ".2f", True, note),
        _row("KL to N(0, I) (nats)", baseline.kl, candidate.kl, ".2f", None),
        _row(f"linear probe accuracy ({p.probe_rows} training rows)", baseline.probe_accuracy, candidate.probe_accuracy, ".4f", False),
        _row(f"FD of {p.prior_samples} decoded N(0, I) draws", baseline.prior.fd, candidate.prior.fd, ".2f", True),
        _row("confident share of prior draws", baseline.prior.confident_share, candidate.prior.confident_share, ".3f", False),
        _row("class coverage of prior draws", baseline.prior.class_coverage, candidate.prior.class_coverage, ".3f", False),
    ]
    return "\n".join(rows)


def per_class_markdown(deltas: pd.DataFrame, note: str | None) -> str:
    """The per-class reconstruction table; when the likelihoods differ, the reason instead of deltas."""
    if note is not None:
        return f"Per-class reconstruction NLL not compared: {note}."
    rows = ["| label | baseline (nats) | candidate (nats) | change | change % |", "| --- | --- | --- | --- | --- |"]
    for label, r in deltas.iterrows():
        rows.append(f"| {label} | {r['baseline']:.2f} | {r['candidate']:.2f} | {r['change']:+.2f} | {r['change_pct']:+.1f}% |")
    return "\n".join(rows)
