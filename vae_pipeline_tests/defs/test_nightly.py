"""Retraining waits for the nightly window; ingest does not; `VAE_PIPELINE_RETRAINING=eager` retrains at once.

Played on a toy graph with the product's own conditions and Dagster's own evaluation, on a clock:
an external `drop` (reported as the raw-files sensor reports it) feeds `ingested` (as_soon_as_new_data,
like mnist_raw and mnist_tensors), which feeds `trained` and then `evaluated` (on_new_data, like
vae_model and everything below it). Each tick materializes what it requested.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from vae_pipeline.defs.automation import RETRAINING_ENV, as_soon_as_new_data, on_new_data

# Dagster's own test helper (evaluate_automation_conditions) selects with a beta parameter; not our code path.
pytestmark = pytest.mark.filterwarnings("ignore:Parameter `include_sources`:dagster.BetaWarning")
DAY = datetime(2026, 12, 1, tzinfo=timezone.utc)
DROP = dg.AssetSpec("drop")


def _version_of(context, key: str) -> dg.DataVersion:  # noqa: ANN001
    """The data version an asset's latest materialization recorded: the toy's stand-in for reading the input."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(key)).asset_materialization
    return dg.DataVersion(f"{key} {event.tags['dagster/data_version']}")


def _graph() -> list:
    """The toy graph, with conditions built under the current environment (as the definitions are, at load)."""

    @dg.asset(deps=[DROP], automation_condition=as_soon_as_new_data())
    def ingested(context):  # noqa: ANN001, ANN202  (an unannotated context: Dagster reads annotations)
        return dg.MaterializeResult(data_version=_version_of(context, "drop"))

    @dg.asset(deps=[ingested], automation_condition=on_new_data())
    def trained(context):  # noqa: ANN001, ANN202
        return dg.MaterializeResult(data_version=_version_of(context, "ingested"))

    @dg.asset(deps=[trained], automation_condition=on_new_data())
    def evaluated(context):  # noqa: ANN001, ANN202
        return dg.MaterializeResult(data_version=_version_of(context, "trained"))

    return [DROP, ingested, trained, evaluated]


class Clock:
    """One instance and the automation cursor; `at` moves the clock, `tick` evaluates and runs what is requested."""

    def __init__(self, assets: list) -> None:
        self.assets, self.instance, self.cursor, self.now = assets, dg.DagsterInstance.ephemeral(), None, DAY

    def at(self, day: int, hour: int, minute: int = 0) -> Clock:
        self.now = DAY + timedelta(days=day, hours=hour, minutes=minute)
        return self

    def drop(self, version: str) -> None:
        self.instance.report_runless_asset_event(dg.AssetMaterialization(DROP.key, tags={"dagster/data_version": version}))

    def tick(self) -> list[str]:
        result = dg.evaluate_automation_conditions(defs=self.assets, instance=self.instance, cursor=self.cursor,
                                                   evaluation_time=self.now)
        self.cursor = result.cursor
        requested = sorted(r.key.to_user_string() for r in result.results if r.true_subset.size > 0)
        if requested:
            assert dg.materialize([a for a in self.assets if isinstance(a, dg.AssetsDefinition)], selection=requested,
                                  instance=self.instance).success
        self.now += timedelta(minutes=1)
        return requested

    def settle(self) -> list[list[str]]:
        """Ticks until one requests nothing; what each requested."""
        ticks = []
        while requested := self.tick():
            ticks.append(requested)
            assert len(ticks) < 10, ticks
        return ticks


def test_a_daytime_drop_is_ingested_at_once_and_trained_in_the_night_two_nights_played(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails if retraining follows a drop at once (the old eager default) or runs on a night when nothing changed."""
    monkeypatch.delenv(RETRAINING_ENV, raising=False)
    clock = Clock(_graph()).at(0, 13, 58)
    assert clock.settle() == []  # the first tick only starts the cursor
    clock.at(0, 14).drop("v1")
    assert clock.settle() == [["ingested"]]  # found within minutes: a bad drop fails here, in daylight
    assert clock.at(0, 23).settle() == []  # retraining waits for the window
    assert clock.at(1, 2, 0).settle() == [["trained"], ["evaluated"]]  # night 1: the new drop, layer by layer
    assert clock.at(1, 12).settle() == []
    assert clock.at(2, 2, 0).settle() == []  # night 2: nothing new, no work
    clock.at(2, 3).drop("v2")  # a drop inside the window is trained on at once
    assert clock.settle() == [["ingested"], ["trained"], ["evaluated"]]
    clock.at(2, 9).drop("v3")  # after the window closed: waits for the next night
    assert clock.settle() == [["ingested"]]
    assert clock.at(3, 2, 30).settle() == [["trained"], ["evaluated"]]


def test_eager_retraining_is_one_setting_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RETRAINING_ENV, "eager")
    clock = Clock(_graph()).at(0, 13, 58)
    assert clock.settle() == []
    clock.at(0, 14).drop("v1")
    assert clock.settle() == [["ingested"], ["trained"], ["evaluated"]]


def test_the_window_shows_in_the_condition_and_a_misspelt_cadence_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RETRAINING_ENV, raising=False)
    def labels(condition: dg.AutomationCondition) -> list[str]:
        return [condition.get_label() or "", *(label for child in condition.children for label in labels(child))]

    # What the UI's automation view shows for every asset below ingest.
    assert labels(on_new_data())[0] == "an input's data version changed; in the nightly window"
    assert "in the nightly window (02:00-07:00 UTC)" in labels(on_new_data())
    monkeypatch.setenv(RETRAINING_ENV, "hourly")
    with pytest.raises(ValueError, match="VAE_PIPELINE_RETRAINING='hourly'; use nightly"):
        on_new_data()
