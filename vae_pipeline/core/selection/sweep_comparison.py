"""The variants of a sweep side by side: one row per variant, and the rate-distortion picture.

Every figure comes from the same places for every variant: rate, distortion, IWAE NLL, probe, kNN
and the regularity figures from the test evaluation; the at-mu figures (`test_recon_nll_at_mu`,
`test_kl_of_grey_input`) are the test split's per-image means from the latents table. A row is
comparable with the others only when `core.selection.protocol.comparable` finds its protocol like
theirs: trained alike (the protocol's `training`: epochs, architecture, widths, optimiser,
binarization, everything but what the sweep varies) and measured alike (the same data version,
judge, evaluation settings and likelihood's units); a row that is not is kept in the table with
what differs, and left out of the picture, rather than drawn beside numbers that mean something else.

Rate-distortion (Alemi et al., 2018, "Fixing a Broken ELBO"): the rate R = E[KL(q(z|x) || p(z))]
and the distortion D = E over q of -log p(x|z), on the test images as the model was trained on them
(binarized for Bernoulli), so R + D is the negative ELBO and lines of equal ELBO are diagonals of
slope -1. beta trades one for the other; latent size bounds what the rate can buy.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from vae_pipeline.core.evaluation.plots import DPI, _save_png  # one way to write a figure: atomically, on an Agg canvas
from vae_pipeline.core.selection.protocol import MODEL_FIELDS, MeasurementProtocol, Verdict, comparable


@dataclass(frozen=True)
class VariantRow:
    """One variant's figures and how they were measured."""

    variant: str
    latent_dim: int
    beta: float
    model_version: int
    protocol: MeasurementProtocol  # the test evaluation's, with `training`: budget and setup but for what the sweep varies
    test_iwae_nll: float
    test_rate: float  # mean over test images of KL(q(z|x) || N(0, I)), x as trained (binarized for Bernoulli), nats
    test_distortion: float  # mean over test images of E_q[-log p(x|z)], nats; rate + distortion = negative ELBO
    test_recon_nll_at_mu: float  # mean of -log p(binarized x | z = mu(grey x)), nats (the latents table's figure)
    test_kl_of_grey_input: float  # mean of KL(q(z | grey x) || N(0, I)), nats (the latents table's figure)
    probe_accuracy: float
    knn_accuracy: float
    active_units: int
    prior_fd: float
    midpoint_fd: float
    prior_holes_share: float
    prior_mmd2: float
    regular: bool

    def record(self) -> dict[str, object]:
        """The row as the table holds it: the protocol as JSON, its likelihood, data version and training beside it."""
        p = self.protocol
        described = ("variant", "latent_dim", "beta", "model_version", "protocol")
        figures = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in described}
        return {"variant": self.variant, "latent_dim": self.latent_dim, "beta": self.beta, "likelihood": p.likelihood,
                "model_version": self.model_version, "data_version": p.data_version, "protocol": p.to_json(),
                "training": json.dumps(p.training, sort_keys=True), **figures}


def sweep_table(rows: list[VariantRow], reference: str | None = None) -> pd.DataFrame:
    """The rows as a table sorted by likelihood, latent size and beta, with `comparable` and `note` columns.

    The reference is the variant whose measurement the others are compared under (the one just
    evaluated); by default the measurement most rows share.
    """
    if not rows:
        raise ValueError("a sweep comparison needs at least one evaluated variant.")
    by_name = {row.variant: row for row in rows}
    if reference is not None and reference not in by_name:
        raise ValueError(f"reference variant {reference!r} is not among the rows ({', '.join(by_name)}).")
    if reference is None:
        shared = Counter(row.protocol.to_json() for row in rows).most_common(1)[0][0]
        reference = next(row.variant for row in rows if row.protocol.to_json() == shared)
    verdicts = {row.variant: comparable(row.protocol, by_name[reference].protocol) for row in rows}
    table = pd.DataFrame([row.record() for row in rows])
    table["comparable"] = [verdicts[v].comparable for v in table["variant"]]
    table["note"] = [_why_not(verdicts[v], reference) for v in table["variant"]]
    return table.sort_values(["likelihood", "latent_dim", "beta"], kind="stable").reset_index(drop=True)


def _why_not(verdict: Verdict, ref_name: str) -> str:
    """Each difference from the reference's protocol, grouped by what it means, and the fixes."""
    if verdict.comparable:
        return ""
    groups: dict[str, list[str]] = {}
    for d in verdict.differences:
        group = ("data" if d.field == "data_version" else "training" if d.field.startswith("training.")
                 else "units" if d.field in MODEL_FIELDS else "settings")
        groups.setdefault(group, []).append(str(d))
    said = {"data": "trained and measured on other data", "training": "trained differently",
            "settings": "evaluated with other settings", "units": "its NLLs are in other units"}
    fixes = {"data": "retrain it on this data", "training": f"retrain it with {ref_name}'s training config",
             "settings": "re-materialize its evaluation"}
    reasons = [f"{said[g]} ({'; '.join(groups[g])})" for g in said if g in groups]
    todo = [fixes[g] for g in fixes if g in groups]
    return f"not comparable with {ref_name}: " + "; ".join(reasons) + (f"; {', then '.join(todo)}" if todo else "")


def _elbo_levels(total: pd.Series, n: int = 5) -> np.ndarray:
    """Round negative-ELBO values for the lines of equal ELBO: n steps spanning the points, on a 1-2-5 grid."""
    low, high = float(total.min()), float(total.max())
    span = max(high - low, 1.0)
    step = next(m * 10**e for e in range(-2, 6) for m in (1, 2, 5) if m * 10**e >= span / n)
    return np.arange(math.floor(low / step) * step, high + 2 * step, step)


def rate_distortion_png(table: pd.DataFrame, path: Path | str) -> Path:
    """Rate against distortion, one labelled point per comparable variant with its IWAE NLL, over lines of equal ELBO."""
    shown = table[table["comparable"]]
    if shown.empty:
        raise ValueError("no comparable variant to draw.")
    fig = Figure(figsize=(7.2, 5.4), dpi=DPI)
    ax = fig.add_subplot()
    norm = Normalize(vmin=shown["latent_dim"].min(), vmax=shown["latent_dim"].max() + 1e-9)
    for beta, marker in zip(sorted(shown["beta"].unique()), "osD^v<>p*h"):  # beta by shape, latent size by colour
        part = shown[shown["beta"] == beta]
        ax.scatter(part["test_rate"], part["test_distortion"], c=part["latent_dim"], cmap="viridis", norm=norm,
                   s=60, marker=marker, edgecolors="black", linewidths=0.5, zorder=3, label=f"beta {beta:g}")
    # Labels take turns above, below and higher above their points (ordered by rate), so that
    # variants close on the plane (a 2-D latent's betas) stay readable.
    for i, row in enumerate(shown.sort_values("test_rate").itertuples()):
        ax.annotate(f"{row.variant}\nIWAE NLL {row.test_iwae_nll:.1f}", (row.test_rate, row.test_distortion),
                    textcoords="offset points", xytext=(5, (6, -24, 24)[i % 3]), fontsize=7)
    ax.margins(0.15)  # room for the labels of the outermost points
    # Lines of equal ELBO: R + D = c. Drawn across the axes as they stand, so they do not move the view.
    x_lim, y_lim = ax.get_xlim(), ax.get_ylim()
    rates = np.linspace(*x_lim, 2)
    for level in _elbo_levels(shown["test_rate"] + shown["test_distortion"]):
        ax.plot(rates, level - rates, color="grey", linestyle="--", linewidth=0.7, zorder=1)
        ax.annotate(f"-ELBO {level:g}", (rates[0], level - rates[0]), fontsize=6, color="grey", xytext=(2, 2),
                    textcoords="offset points", annotation_clip=True)
    ax.set_xlim(x_lim)
    ax.set_ylim(y_lim)
    likelihood = shown["likelihood"].iloc[0]
    ax.set_xlabel("rate R: KL(q(z|x) || N(0, I)), nats per test image")
    ax.set_ylabel(f"distortion D: E_q[-log p(x|z)], {likelihood}, nats")
    ax.set_title(f"Rate-distortion of {len(shown)} variant{'s' if len(shown) != 1 else ''}\n"
                 "dashed: equal ELBO (R + D = -ELBO); colour: latent size", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="latent size")
    fig.tight_layout()
    return _save_png(fig, path)


def table_markdown(table: pd.DataFrame) -> str:
    """The table as markdown for the Dagster UI (figures rounded; notes kept whole)."""
    shown = table.drop(columns=["protocol", "data_version", "training"]).copy()
    for column in ("test_iwae_nll", "test_rate", "test_distortion", "test_recon_nll_at_mu", "test_kl_of_grey_input",
                   "prior_fd", "midpoint_fd"):
        shown[column] = shown[column].round(2)
    for column in ("probe_accuracy", "knn_accuracy", "prior_holes_share", "prior_mmd2"):
        shown[column] = shown[column].round(4)
    return shown.to_markdown(index=False)
