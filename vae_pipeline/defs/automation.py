"""When assets update by themselves: on new data, never on a clock that finds nothing changed.

The raw folder is observed every minute (`observe_raw_files` in defs/raw_files.py records a new
version of `mnist_raw_files` only when the files' md5s change); every asset downstream runs once
the data version of one of its inputs changed and its inputs settled. A re-materialization that
reproduces the same data version (the same raw files, a reused model) triggers nothing below it,
so a night with nothing new does no work beyond the observation. Retraining is eager on new data rather than tied to a nightly hour: a new drop is
ingested and checked within minutes, and a model that depends on it is trained soon after; a team
that wants retraining batched into a nightly window can give `vae_model`
`AutomationCondition.on_cron("0 2 * * *")` instead, with no other change.
"""

import os

import dagster as dg

AUTOMATION_ENV = "VAE_PIPELINE_AUTOMATION"


def default_sensor_status() -> dg.DefaultSensorStatus:
    """RUNNING, unless $VAE_PIPELINE_AUTOMATION is "off": a deployment that launches every run by hand (the e2e tests).

    Only the default: a sensor switched on or off in the UI stays as it was switched.
    """
    value = os.environ.get(AUTOMATION_ENV, "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"${AUTOMATION_ENV}={value!r}; use on (the default) or off.")
    return dg.DefaultSensorStatus.RUNNING if value == "on" else dg.DefaultSensorStatus.STOPPED


def on_new_data() -> dg.AutomationCondition:
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


# The sensor that evaluates the conditions; on by default, so a deployment automates without a click.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all(),
    default_status=default_sensor_status(),
    minimum_interval_seconds=60,
    description="Updates exactly the assets that new data (a new raw-files version) reaches; nothing when nothing changed.",
)
