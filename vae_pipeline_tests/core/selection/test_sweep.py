"""Sweep variants: keys that round-trip, sweep documents that list or grid them, bad values named early."""

from __future__ import annotations

from pathlib import Path

import pytest

from vae_pipeline.core.model.config import ConfigError
from vae_pipeline.core.selection.sweep import MAX_VARIANTS, Variant, load_sweep, parse_sweep


class TestVariantKey:
    @pytest.mark.parametrize(("variant", "key"), [
        (Variant(20, 1.0, "bernoulli"), "z20-b1-bern"),
        (Variant(2, 0.5, "bernoulli"), "z2-b0.5-bern"),
        (Variant(10, 4.0, "gaussian"), "z10-b4-gauss"),
        (Variant(5, 0.001, "bernoulli"), "z5-b0.001-bern"),
    ])
    def test_keys_are_readable_and_round_trip(self, variant: Variant, key: str) -> None:
        assert variant.key == key and Variant.from_key(key) == variant

    @pytest.mark.parametrize("key", ["z20-b1", "z0-b1-bern", "z20-b1-poisson", "Z20-b1-bern", "z20-b-1-bern"])
    def test_a_malformed_key_names_the_form(self, key: str) -> None:
        with pytest.raises(ConfigError, match="z<latent_dim>-b<beta>-<bern|gauss>|latent_dim=0"):
            Variant.from_key(key)

    @pytest.mark.parametrize(("key", "canonical"), [("z4-b1.50-bern", "z4-b1.5-bern"), ("z4-b01-bern", "z4-b1-bern"),
                                                     ("z4-b1.0-bern", "z4-b1-bern")])
    def test_one_variant_has_one_key(self, key: str, canonical: str) -> None:
        with pytest.raises(ConfigError, match=f"not in its canonical form; use '{canonical}'"):
            Variant.from_key(key)

    def test_values_are_checked_by_the_configs_they_train_with(self) -> None:
        with pytest.raises(ConfigError, match="beta=-1"):
            Variant(20, -1.0, "bernoulli")
        with pytest.raises(ConfigError, match="likelihood='poisson'"):
            Variant(20, 1.0, "poisson")


class TestSweepDocument:
    def test_a_grid_and_a_list_in_order(self) -> None:
        variants = parse_sweep({"grid": {"latent_dim": [2, 10], "beta": [0.5, 1]}, "variants": [{"latent_dim": 20}]})
        assert [v.key for v in variants] == ["z20-b1-bern", "z2-b0.5-bern", "z2-b1-bern", "z10-b0.5-bern", "z10-b1-bern"]

    def test_a_repeated_variant_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="names z20-b1-bern more than once"):
            parse_sweep({"grid": {"latent_dim": [20]}, "variants": [{"latent_dim": 20, "beta": 1}]})

    @pytest.mark.parametrize(("document", "words"), [
        ({}, "must be a mapping with `variants:`"),
        ({"variants": [{"latent_dim": 20, "epochs": 3}]}, "variants[0]: {'latent_dim': 20, 'epochs': 3} must be a mapping of latent_dim"),
        ({"grid": {"latent_dim": [0]}}, "grid {'latent_dim': 0}: latent_dim=0 must be at least 1"),
        ({"variants": []}, "names no variant"),
        # YAML's `2.7` and `true` were truncated to z2 and z1: a silently different model.
        ({"variants": [{"latent_dim": 2.7}]}, "variants[0]: latent_dim=2.7 must be a whole number between 1 and 784"),
        ({"grid": {"latent_dim": [True]}}, "latent_dim=True must be a whole number"),
        ({"variants": [{"beta": True}]}, "beta=True must be a number"),
        ({"variants": [{"latent_dim": 1_000_000_000}]}, "latent_dim=1000000000 is above its bound 784"),
    ])
    def test_bad_documents_name_the_entry(self, document: dict, words: str) -> None:
        with pytest.raises(ConfigError) as info:
            parse_sweep(document)
        assert words in str(info.value)

    def test_a_sweep_larger_than_the_bound_is_refused_before_its_variants_are_built(self) -> None:
        grid = {"latent_dim": list(range(1, 101)), "beta": [b / 10 for b in range(1, 101)]}  # 10,000 variants
        with pytest.raises(ConfigError, match=f"names 10000 variants, above the bound of {MAX_VARIANTS}: each variant"):
            parse_sweep({"grid": grid})
        many = [{"latent_dim": d} for d in range(1, MAX_VARIANTS + 2)]
        with pytest.raises(ConfigError, match=f"names {MAX_VARIANTS + 1} variants"):
            parse_sweep({"variants": many})
        assert len(parse_sweep({"variants": many[:MAX_VARIANTS]})) == MAX_VARIANTS

    def test_a_file_that_is_missing_or_not_yaml_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="does not exist"):
            load_sweep(tmp_path / "nope.yaml")
        bad = tmp_path / "bad.yaml"
        bad.write_text("grid: [unclosed")
        with pytest.raises(ConfigError, match="is not valid YAML"):
            load_sweep(bad)
        good = tmp_path / "good.yaml"
        good.write_text("grid:\n  latent_dim: [2, 20]\n  beta: [1, 4]\n")
        assert [v.key for v in load_sweep(good)] == ["z2-b1-bern", "z2-b4-bern", "z20-b1-bern", "z20-b4-bern"]
