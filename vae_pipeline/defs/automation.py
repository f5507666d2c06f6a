"""When assets update by themselves: ingest as soon as new data arrives, retraining in a nightly window.

The raw folder is observed every minute (`observe_raw_files` in defs/raw_files.py records a new
version of `mnist_raw_files` only when the files' md5s change). The cheap work stays eager: the
raw files are read, the tensor store built and its data checks run within minutes of a drop, so
a bad drop is found while its sender is still at work. Retraining and everything below it (the
judge, the VAE and the auto-encoder, their outputs, evaluation, gates, promotion, the sweep table)
waits for the nightly window, 02:00 to 07:00 in $VAE_PIPELINE_TIMEZONE (UTC by default), and runs
then only if an input's data version changed since the asset last ran: a night with nothing new
does no work beyond the observation, and a re-materialization that reproduces the same data
version (the same raw files, a reused model) triggers nothing below it. Within the window, each
layer runs once its inputs settled, so a drop flows down in a few short runs.

`VAE_PIPELINE_RETRAINING=eager` (read when the definitions load) makes retraining follow new data
at once instead, as ingest does; the UI's automation view shows which one a deployment uses
("in the nightly window" in each condition's label).
"""

import os

import dagster as dg

AUTOMATION_ENV = "VAE_PIPELINE_AUTOMATION"
RETRAINING_ENV = "VAE_PIPELINE_RETRAINING"
TIMEZONE_ENV = "VAE_PIPELINE_TIMEZONE"
# The nightly window: opened by the first cron tick, closed by the second. Five hours hold a whole
# sweep's retraining on a CPU; a run still going at 07:00 finishes, and what it leaves waits a night.
NIGHT_OPENS = "0 2 * * *"
NIGHT_CLOSES = "0 7 * * *"


def default_sensor_status() -> dg.DefaultSensorStatus:
    """RUNNING, unless $VAE_PIPELINE_AUTOMATION is "off": a deployment that launches every run by hand (the e2e tests).

    Only the default: a sensor switched on or off in the UI stays as it was switched.
    """
    value = os.environ.get(AUTOMATION_ENV, "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"${AUTOMATION_ENV}={value!r}; use on (the default) or off.")
    return dg.DefaultSensorStatus.RUNNING if value == "on" else dg.DefaultSensorStatus.STOPPED


def retraining_cadence() -> str:
    """"nightly" (the default) or "eager", from $VAE_PIPELINE_RETRAINING."""
    value = os.environ.get(RETRAINING_ENV, "nightly").strip().lower()
    if value not in ("nightly", "eager"):
        raise ValueError(f"${RETRAINING_ENV}={value!r}; use nightly (the default: retrain between 02:00 and 07:00) or eager.")
    return value


def in_nightly_window() -> dg.AutomationCondition:
    """True from the 02:00 tick to the 07:00 tick (in $VAE_PIPELINE_TIMEZONE, else UTC)."""
    timezone = os.environ.get(TIMEZONE_ENV, "UTC")
    opened = dg.AutomationCondition.cron_tick_passed(NIGHT_OPENS, timezone)
    closed = dg.AutomationCondition.cron_tick_passed(NIGHT_CLOSES, timezone)
    return opened.since(closed).with_label(f"in the nightly window (02:00-07:00 {timezone})")


def on_new_data() -> dg.AutomationCondition:
    """Retraining and what lies below it: `as_soon_as_new_data`, in the nightly window unless $VAE_PIPELINE_RETRAINING=eager.

    The trigger (an input changed) is remembered until the asset runs, so a drop at 14:00 is
    trained on at 02:00; a drop at 03:00 is trained on at once, the window being open.
    """
    if retraining_cadence() == "eager":
        return as_soon_as_new_data()
    return (as_soon_as_new_data() & in_nightly_window()).with_label("an input's data version changed; in the nightly window")


def as_soon_as_new_data() -> dg.AutomationCondition:
    """Run once after an input's data version changed, when no input is missing, running or about to run.

    The trigger (an input's new data version) is remembered until the asset is requested; an asset
    waits while one of its inputs is requested or in progress, so an asset with several inputs
    (latent_evaluation reads the VAE, the auto-encoder and the judge) runs once, after all of them
    settled, rather than once per input and first against a stale one. A new drop therefore
    flows down in a few short runs, one per layer of the graph.
    """
    changed = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
    return (
        (dg.AutomationCondition.newly_missing() | changed).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
        & ~dg.AutomationCondition.in_progress()
    ).with_label("an input's data version changed")


def on_new_data_after_passed_gates() -> dg.AutomationCondition:
    """`on_new_data`, and every blocking check of every input passed on its latest materialization.

    Blocking checks stop downstream steps only inside the run that evaluated them; the champion
    alias is moved in a later run than the gates, so the gates' outcome is a condition here too.
    """
    gates_passed = dg.AutomationCondition.all_deps_match(
        dg.AutomationCondition.all_checks_match(dg.AutomationCondition.check_passed(), blocking_only=True)
    )
    return (on_new_data() & gates_passed).with_label("new data, and the promotion gates passed")


# The sensor that evaluates the conditions (every minute, so the window's ticks are seen within a
# minute); on by default, so a deployment automates without a click.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all(),
    default_status=default_sensor_status(),
    minimum_interval_seconds=60,
    description="Updates exactly the assets that new data (a new raw-files version) reaches; nothing when nothing changed.",
)
