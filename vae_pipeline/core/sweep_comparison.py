"""The variants of a sweep side by side: one row per variant, and the rate-distortion picture.

Every figure comes from the same places for every variant: reconstruction NLL and KL are the test
split's per-image means from the latents table (at mu, the same binarization for all), NLL, probe,
kNN and the regularity figures from the test evaluation. A row is only comparable with the others
when it was measured on the same data version, by the same judge, under the same evaluation
settings and the same likelihood's units; a row that is not is kept in the table with the reason,
and left out of the picture, rather than drawn beside numbers that mean something else.

Rate-distortion (Alemi et al., 2018, "Fixing a Broken ELBO"): the rate is KL(q(z|x) || p(z)) in
nats, the distortion the reconstruction NLL; beta trades one for the other, latent size bounds
what the rate can buy.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from vae_pipeline.core.plots import DPI, _save_png  # one way to write a figure: atomically, on an Agg canvas



@dataclass(frozen=True)
class VariantRow:
    """One variant's figures and how they were measured."""

    variant: str
    latent_dim: int
    beta: float
    likelihood: str
    model_version: int
    data_version: str
    protocol: str  # JSON of the evaluation protocol and settings: rows are comparable when it is equal
    test_iwae_nll: float
    test_recon_nll: float  # mean over test images of -log p(x | z = mu), nats
    test_kl: float  # mean over test images of KL(q(z|x) || N(0, I)), nats: the rate
    probe_accuracy: float
    knn_accuracy: float
    active_units: int
    prior_fd: float
    midpoint_fd: float
    prior_holes_share: float
    prior_mmd2: float
    regular: bool


def comparable_key(row: VariantRow) -> tuple[str, str, str]:
    """What must be equal for two rows' figures to be compared: data, protocol, likelihood."""
    return row.data_version, row.protocol, row.likelihood


def sweep_table(rows: list[VariantRow], reference: str | None = None) -> pd.DataFrame:
    """The rows as a table sorted by likelihood, latent size and beta, with `comparable` and `note` columns.

    The reference is the variant whose measurement the others are compared under (the one just
    evaluated); by default the measurement most rows share.
    """
    if not rows:
        raise ValueError("a sweep comparison needs at least one evaluated variant.")
    keys = {row.variant: comparable_key(row) for row in rows}
    if reference is not None and reference not in keys:
        raise ValueError(f"reference variant {reference!r} is not among the rows ({', '.join(keys)}).")
    ref_key = keys[reference] if reference else Counter(keys.values()).most_common(1)[0][0]
    ref_name = reference or next(v for v, k in keys.items() if k == ref_key)
    table = pd.DataFrame([asdict(row) for row in rows])
    table["comparable"] = [keys[v] == ref_key for v in table["variant"]]
    table["note"] = [_why_not(keys[v], ref_key, ref_name) for v in table["variant"]]
    return table.sort_values(["likelihood", "latent_dim", "beta"], kind="stable").reset_index(drop=True)


def _why_not(key: tuple[str, str, str], ref: tuple[str, str, str], ref_name: str) -> str:
    if key == ref:
        return ""
    reasons = []
    if key[0] != ref[0]:
        reasons.append(f"trained and measured on data version {key[0][:12]}, not {ref[0][:12]}")
    if key[1] != ref[1]:
        theirs, ours = json.loads(key[1]), json.loads(ref[1])
        changed = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        reasons.append(f"evaluated with other settings ({', '.join(changed)})")
    if key[2] != ref[2]:
        reasons.append(f"{key[2]} likelihood: its NLLs are in other units than {ref[2]}'s")
    return f"not comparable with {ref_name}: " + "; ".join(reasons) + "; re-materialize its evaluation"


def rate_distortion_png(table: pd.DataFrame, path: Path | str) -> Path:
    """KL (rate) against reconstruction NLL (distortion), one labelled point per comparable variant."""
    shown = table[table["comparable"]]
    if shown.empty:
        raise ValueError("no comparable variant to draw.")
    fig = Figure(figsize=(7.2, 5.4), dpi=DPI)
    ax = fig.add_subplot()
    norm = Normalize(vmin=shown["latent_dim"].min(), vmax=shown["latent_dim"].max() + 1e-9)
    for beta, marker in zip(sorted(shown["beta"].unique()), "osD^v<>p*h"):  # beta by shape, latent size by colour
        part = shown[shown["beta"] == beta]
        ax.scatter(part["test_kl"], part["test_recon_nll"], c=part["latent_dim"], cmap="viridis", norm=norm,
                   s=60, marker=marker, edgecolors="black", linewidths=0.5, zorder=3, label=f"beta {beta:g}")
    for row in shown.itertuples():
        ax.annotate(row.variant, (row.test_kl, row.test_recon_nll), textcoords="offset points", xytext=(5, 4), fontsize=8)
    likelihood = shown["likelihood"].iloc[0]
    ax.set_xlabel("rate: KL(q(z|x) || N(0, I)), nats per test image")
    ax.set_ylabel(f"distortion: {likelihood} reconstruction NLL at mu, nats")
    ax.set_title(f"Rate-distortion of {len(shown)} variant{'s' if len(shown) != 1 else ''} (colour: latent size)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="latent size")
    fig.tight_layout()
    return _save_png(fig, path)


def table_markdown(table: pd.DataFrame) -> str:
    """The table as markdown for the Dagster UI (figures rounded; notes kept whole)."""
    shown = table.drop(columns=["protocol", "data_version"]).copy()
    for column in ("test_iwae_nll", "test_recon_nll", "test_kl", "prior_fd", "midpoint_fd"):
        shown[column] = shown[column].round(2)
    for column in ("probe_accuracy", "knn_accuracy", "prior_holes_share", "prior_mmd2"):
        shown[column] = shown[column].round(4)
    return shown.to_markdown(index=False)
