"""How many pytest-xdist workers run the suite, and how they share it: tests that share built state stay together.

pytest-xdist's own grouping (`--dist loadgroup`) does not hold under pytest 9 (it rewrites a node id
attribute pytest no longer reads), so the suite brings its own scheduler, chosen by
`pytest_xdist_make_scheduler` in conftest.py. A work unit ("scope") is:

- `e2e/test_team.py`: the team deployment (PostgreSQL, Redis, Celery workers, MLflow, Dagster);
- every other end-to-end file together: they share one `mlflow server` and one `dagster dev` (but for
  the files in OWN_SERVERS, which start their own);
- the files that read the session's tiny graph together, so it is built once;
- any other file on its own.

The longest units go first, one to each worker, and the short files fill in around them; the
suite's session fixtures are per worker, so grouping is what keeps each server started once.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

TESTS = "vae_pipeline_tests/"
# In the order they are handed out: the longest first (measured with --durations on two cores).
GROUPS: dict[str, tuple[str, ...]] = {
    "team deployment": ("e2e/test_team.py",),
    "one dagster dev": ("e2e/",),
    "tiny graph": ("defs/test_graph.py", "defs/test_state.py", "defs/test_promotion.py"),
}


# End-to-end files that start servers of their own (not the shared ones): a work unit each, like any other file.
OWN_SERVERS = ("e2e/test_tracking_server_death.py",)


# More workers than this only start more servers and interpreters: the suite has three long units.
MAX_WORKERS = 4


def worker_count(cores: int, markexpr: str) -> int:
    """The workers for `-n auto` (scripts/test.sh): one per core, and one more when the slow tests run.

    The slow tests wait a lot (a backfill daemon's 30 s ticks, run workers starting, a lost Celery
    task's redelivery), and a third worker fills those waits: the whole suite took 593-617 s of pytest
    with three workers on two cores, 634 s with two. The fast tier only computes, so it gets one worker
    a core: 50-57 s with two workers, 69 s with three (docs/testing.md, "Workers").
    """
    fast_tier_only = "not slow" in markexpr
    return max(1, min(cores if fast_tier_only else cores + 1, MAX_WORKERS))


def group_of(nodeid: str) -> tuple[int, str]:
    """(rank, scope) of a test: the rank orders the work units, the scope names the one it belongs to."""
    path = nodeid.split("::", 1)[0]
    relative = path.removeprefix(TESTS)
    if relative.startswith(OWN_SERVERS):
        return len(GROUPS), path
    for rank, (scope, prefixes) in enumerate(GROUPS.items()):
        if relative.startswith(prefixes):
            return rank, scope
    return len(GROUPS), path


class GroupedScheduling(LoadScopeScheduling):
    """LoadScopeScheduling with the scopes above, handed out in the order the workers collected them."""

    def __init__(self, config, log=None) -> None:  # noqa: ANN001 - pytest.Config, xdist's Producer
        super().__init__(config, log)
        config.option.loadscopereorder = False  # our order, not "most tests first"

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid)[1]



def in_hand_out_order(nodeids: list[str]) -> list[int]:
    """Positions of `nodeids` in the order the units are handed out (stable: collection order within a rank).
    Workers sort their items so (conftest.py): xdist addresses tests by their index in each worker's collection."""
    return sorted(range(len(nodeids)), key=lambda i: group_of(nodeids[i])[0])
