"""How many workers `-n auto` starts, and which tests stay together on one."""

from __future__ import annotations

from vae_pipeline_tests.scheduling import MAX_WORKERS, group_of, worker_count


def test_the_whole_suite_gets_a_worker_more_than_the_cores_and_the_fast_tier_one_a_core() -> None:
    assert worker_count(2, "") == 3
    assert worker_count(2, "not slow") == 2
    assert worker_count(1, "not slow") == 1
    assert worker_count(64, "") == worker_count(64, "not slow") == MAX_WORKERS


def test_tests_that_share_a_server_or_built_state_share_a_unit() -> None:
    e2e = "vae_pipeline_tests/e2e/"
    assert group_of(e2e + "test_faults.py::TestX::test_y")[1] == group_of(e2e + "test_browser.py::test_z")[1]
    assert group_of(e2e + "test_team.py::test_a")[1] != group_of(e2e + "test_faults.py::TestX::test_y")[1]
    assert group_of("vae_pipeline_tests/defs/test_state.py::test_a")[1] == group_of("vae_pipeline_tests/defs/test_graph.py::test_b")[1]
    # a file with servers of its own is a unit of its own; so is any other file
    assert group_of(e2e + "test_tracking_server_death.py::test_a")[1] == e2e + "test_tracking_server_death.py"
    assert group_of("vae_pipeline_tests/core/test_atomic.py::test_a")[1] == "vae_pipeline_tests/core/test_atomic.py"
    # the long units are handed out first, the team deployment before all
    assert group_of(e2e + "test_team.py::test_a")[0] < group_of(e2e + "test_faults.py::t")[0] < group_of("vae_pipeline_tests/core/test_atomic.py::t")[0]
