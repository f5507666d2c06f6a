"""The sweep table: one row per variant, only like measured with like, and the rate-distortion picture."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from vae_pipeline.core.selection.protocol import MeasurementProtocol
from vae_pipeline.core.selection.sweep_comparison import VariantRow, rate_distortion_png, sweep_table, table_markdown

PROTOCOL = MeasurementProtocol(
    dataset="mnist", data_version="d" * 64, split="test", likelihood="bernoulli", seed=0, iwae_k=1000, iwae_examples=2000,
    probe_rows=10_000, judge="j1", training={"epochs": 30, "architecture": "mlp", "hidden_dims": [400],
                                             "learning_rate": 0.001, "binarization": "dynamic"},
)


def _row(variant: str, latent_dim: int, beta: float, **changes: object) -> VariantRow:
    """A row measured under PROTOCOL, but for `changes` of its protocol's fields."""
    return VariantRow(
        variant=variant, latent_dim=latent_dim, beta=beta, model_version=1, protocol=dataclasses.replace(PROTOCOL, **changes),
        test_iwae_nll=100.0 - latent_dim, test_rate=5.0 + latent_dim / beta,
        test_distortion=92.0 - 2 * latent_dim / beta, test_recon_nll_at_mu=90.0 - 2 * latent_dim / beta,
        test_kl_of_grey_input=4.5 + latent_dim / beta, probe_accuracy=0.8, knn_accuracy=0.85, active_units=latent_dim, prior_fd=200.0,
        midpoint_fd=210.0, prior_holes_share=0.1, prior_mmd2=0.01, regular=True,
    )


SWEEP = [_row("z10-b1-bern", 10, 1.0), _row("z2-b4-bern", 2, 4.0), _row("z2-b0.5-bern", 2, 0.5)]


class TestSweepTable:
    def test_rows_sorted_by_latent_size_then_beta_all_comparable(self) -> None:
        table = sweep_table(SWEEP)
        assert list(table["variant"]) == ["z2-b0.5-bern", "z2-b4-bern", "z10-b1-bern"]
        assert table["comparable"].all() and (table["note"] == "").all()
        assert {"variant", "latent_dim", "beta", "likelihood", "test_iwae_nll", "test_rate", "test_distortion",
                "test_recon_nll_at_mu", "test_kl_of_grey_input", "probe_accuracy", "knn_accuracy", "prior_fd", "midpoint_fd", "prior_holes_share"} <= set(table.columns)

    def test_other_evaluation_settings_are_kept_but_not_comparable(self) -> None:
        table = sweep_table([*SWEEP, _row("z20-b1-bern", 20, 1.0, iwae_k=20)], reference="z10-b1-bern")
        row = table.set_index("variant").loc["z20-b1-bern"]
        assert not row["comparable"]
        assert row["note"] == ("not comparable with z10-b1-bern: evaluated with other settings (iwae_k: 20 vs 1000); "
                               "re-materialize its evaluation")
        assert table.drop(index=table.index[table["variant"] == "z20-b1-bern"])["comparable"].all()

    def test_other_data_and_other_likelihood_are_named(self) -> None:
        table = sweep_table([*SWEEP, _row("z2-b1-gauss", 2, 1.0, likelihood="gaussian"),
                             _row("z2-b1-bern", 2, 1.0, data_version="e" * 64)])
        notes = table.set_index("variant")["note"]
        assert "its NLLs are in other units (likelihood: gaussian vs bernoulli (a Bernoulli NLL" in notes["z2-b1-gauss"]
        assert notes["z2-b1-bern"] == ("not comparable with z10-b1-bern: trained and measured on other data "
                                       "(data_version: eeeeeeeeeeee vs dddddddddddd); retrain it on this data")
        assert table.set_index("variant").loc["z2-b1-gauss", "likelihood"] == "gaussian"

    def test_a_variant_trained_differently_is_marked_with_what_differs_and_left_out_of_the_picture(self, tmp_path: Path) -> None:
        """Fails if rows measured alike but trained differently (2 epochs beside 30) count as comparable."""
        short = {**PROTOCOL.training, "epochs": 2, "learning_rate": 0.01}
        table = sweep_table([*SWEEP, _row("z20-b1-bern", 20, 1.0, training=short)], reference="z10-b1-bern")
        row = table.set_index("variant").loc["z20-b1-bern"]
        assert not row["comparable"]
        assert "trained differently (training.epochs: 2 vs 30; training.learning_rate: 0.01 vs 0.001)" in row["note"]
        assert json.loads(row["training"]) == short and json.loads(row["protocol"])["training"] == short
        assert "retrain it with z10-b1-bern's training config" in row["note"]
        drawn = table[table["comparable"]]
        assert list(drawn["variant"]) == ["z2-b0.5-bern", "z2-b4-bern", "z10-b1-bern"]

    def test_the_reference_decides_when_it_is_the_odd_one(self) -> None:
        table = sweep_table([*SWEEP, _row("z20-b1-bern", 20, 1.0, judge="j2")], reference="z20-b1-bern")
        assert table.set_index("variant")["comparable"].to_dict() == {
            "z2-b0.5-bern": False, "z2-b4-bern": False, "z10-b1-bern": False, "z20-b1-bern": True}

    def test_an_unknown_reference_and_no_rows_are_refused(self) -> None:
        with pytest.raises(ValueError, match="reference variant 'z3-b1-bern'"):
            sweep_table(SWEEP, reference="z3-b1-bern")
        with pytest.raises(ValueError, match="at least one evaluated variant"):
            sweep_table([])

    def test_markdown_shows_every_variant(self) -> None:
        text = table_markdown(sweep_table(SWEEP))
        assert all(row.variant in text for row in SWEEP) and "protocol" not in text


class TestRateDistortionPicture:
    def test_one_png_of_the_comparable_variants(self, tmp_path: Path) -> None:
        path = rate_distortion_png(sweep_table(SWEEP), tmp_path / "rd.png")
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 600

    def test_lines_of_equal_elbo_span_the_points_on_round_values(self) -> None:
        from vae_pipeline.core.selection.sweep_comparison import _elbo_levels

        table = sweep_table(SWEEP)
        totals = table["test_rate"] + table["test_distortion"]
        levels = _elbo_levels(totals)
        assert levels.min() <= totals.min() and levels.max() >= totals.max()
        assert all(float(level) == round(float(level), 2) for level in levels) and 3 <= len(levels) <= 12

    def test_nothing_comparable_is_refused(self, tmp_path: Path) -> None:
        table = sweep_table(SWEEP)
        table["comparable"] = False
        with pytest.raises(ValueError, match="no comparable variant"):
            rate_distortion_png(table, tmp_path / "rd.png")
