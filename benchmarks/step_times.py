"""Print the wall time of each step of the latest Dagster run in $DAGSTER_HOME.

Usage: DAGSTER_HOME=... python benchmarks/step_times.py
"""

from __future__ import annotations

import dagster as dg


def main() -> None:
    instance = dg.DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]
    starts: dict[str, float] = {}
    total = 0.0
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
            seconds = entry.timestamp - starts[event.step_key]
            total += seconds
            print(f"{event.step_key:55s} {event.event_type_value:12s} {seconds:7.1f} s")
    stats = instance.get_run_stats(run.run_id)
    print(f"run {run.run_id} {run.status.value}: {stats.end_time - stats.start_time:.1f} s from start to end, {total:.1f} s in steps")


if __name__ == "__main__":
    main()
