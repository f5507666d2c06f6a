"""Print the wall time of each step of the latest Dagster run in $DAGSTER_HOME.

Usage: DAGSTER_HOME=... python benchmarks/step_times.py
"""

from __future__ import annotations

import dagster as dg


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[str, float]]:
    """Each finished step of a run: (STEP_SUCCESS or STEP_FAILURE, wall seconds from its STEP_START)."""
    starts: dict[str, float] = {}
    steps: dict[str, tuple[str, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            steps[event.step_key] = (event.event_type_value, entry.timestamp - starts[event.step_key])
    return steps


def main() -> None:
    instance = dg.DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]
    steps = step_seconds(instance, run.run_id)
    for step, (outcome, seconds) in steps.items():
        print(f"{step:55s} {outcome:12s} {seconds:7.1f} s")
    total = sum(seconds for _, seconds in steps.values())
    stats = instance.get_run_stats(run.run_id)
    print(f"run {run.run_id} {run.status.value}: {stats.end_time - stats.start_time:.1f} s from start to end, {total:.1f} s in steps")


if __name__ == "__main__":
    main()
