"""The code location loads, and shows every asset with a description and a group."""

from __future__ import annotations

import dagster as dg

from vae_pipeline.definitions import defs


def test_definitions_load_and_describe_every_asset() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "mnist_raw", "mnist_tensors", "vae_model", "autoencoder_baseline", "latent_embeddings",
        "prior_samples", "reconstruction_report", "latent_evaluation", "champion_comparison", "champion_model",
        "version_comparison",
        "digit_classifier",
    }
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        assert node.group_name != "default", f"{key} has no group"


def test_nightly_schedule_requests_the_whole_pipeline() -> None:
    schedule = defs.resolve_schedule_def("nightly_retrain")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == "vae_pipeline_job"
    job = defs.resolve_job_def("vae_pipeline_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} >= {"vae_model", "champion_model"}


def test_the_failed_run_sensor_is_on_by_default() -> None:
    sensor = defs.resolve_sensor_def("end_mlflow_runs_of_failed_runs")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
