"""The code location loads, and shows every asset with a description and a group."""

from __future__ import annotations

import dagster as dg

from vae_pipeline.definitions import defs


def test_definitions_load_and_describe_every_asset() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"mnist_raw", "mnist_tensors"} <= keys
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        assert node.group_name != "default", f"{key} has no group"
