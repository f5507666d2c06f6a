"""What tests and benchmarks share: the repository root, the tiny whole-graph config and a run of it, the tracking store.

Test modules import from here (or take conftest fixtures), never from one another.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient

from vae_pipeline_tests.variants import TINY_VARIANT, add_variants

REPO_ROOT = Path(__file__).resolve().parents[1]

# Latent size, beta and likelihood come from the variant (the partition key): TINY_VARIANT is z4-b1-bern.
TINY_TRAINING = {"hidden_dims": [64], "epochs": 2, "batch_size": 100, "device": "cpu"}
TINY_EVALUATION = {"tsne_points": 200, "probe_max_train": 600, "iwae_k": 20, "iwae_examples": 50, "smoothness_pairs": 10,
                   "regularity_samples": 200, "regularity_pairs": 200}
TINY_GATES = {"iwae_k": 20, "iwae_examples": 100, "probe_max_train": 600}
TINY_COMPARISON = {**TINY_GATES, "prior_samples": 200}
# 1,000 training images do not make a 99% judge; the slice's judge is held to a lower floor.
TINY_JUDGE = {"epochs": 2, "min_test_accuracy": 0.7}
# Every asset of vae_pipeline_job.
PIPELINE_ASSETS = {
    "mnist_raw", "mnist_tensors", "vae_model", "autoencoder_baseline", "latent_embeddings",
    "prior_samples", "reconstruction_report", "latent_evaluation", "champion_comparison", "champion_model",
    "version_comparison", "digit_classifier", "sweep_comparison",
}

# Bad run configs and partition keys that the launch-time checks refuse (in process and through a server alike).
# (vae_model config override, words the message must contain)
BAD_TRAINING = {
    "negative epochs": ({"epochs": -3}, ["ops.vae_model.config", "epochs=-3", "at least 1"]),
    "batch larger than the split leaves": ({"batch_size": 59_900}, ["ops.vae_model.config", "batch_size=59900", "smaller batch_size"]),
    "batch larger than any split": ({"batch_size": 100_000}, ["ops.vae_model.config", "batch_size=100000", "above its bound 59999"]),
    "a layer of 40 GB": ({"hidden_dims": [100_000, 100_000]}, ["ops.vae_model.config", "hidden_dims[0]=100000", "use at most 16384"]),
    "cuda without a GPU": ({"device": "cuda"}, ["ops.vae_model.config", "device='cuda'", "device=auto or cpu"]),
}
# Latent size, beta and likelihood are the variant's, the run's partition key (defs/variants.py), so
# a latent size of 0 or an unknown likelihood is a bad key; a user can add any key from the UI.
BAD_VARIANTS = {
    "latent dim 0": "z0-b1-bern",
    "unknown likelihood": "z4-b1-poisson",
    "not a variant key": "foo",
}


def tracking_uri(data_dir: Path) -> str:
    """The embedded MLflow store of a data folder (where the product puts it without $MLFLOW_TRACKING_URI).

    Named explicitly, so that a URI another test exported cannot redirect it; a copy of the folder
    brings its store along (the product points the store's artifact URIs at the copy).
    """
    return f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"


def mlflow_client(uri: str) -> MlflowClient:
    """A client of one store for runs and registry alike (else the registry is MLflow's global one)."""
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def run_config(source_dir: Path, seed: int = 0, ops: dict | None = None, **training: object) -> dg.RunConfig:
    """The tiny whole-graph config; `ops` replaces assets' configs (e.g. which version to evaluate)."""
    return dg.RunConfig(
        {
            "mnist_raw": {"config": {"source_dir": str(source_dir), "verify_md5": False, "allow_download": False}},
            "mnist_tensors": {"config": {"val_size": 200}},
            "vae_model": {"config": {**TINY_TRAINING, "seed": seed, **training}},
            "latent_evaluation": {"config": TINY_EVALUATION},
            "champion_comparison": {"config": TINY_GATES},
            "version_comparison": {"config": TINY_COMPARISON},
            "digit_classifier": {"config": TINY_JUDGE},
            **(ops or {}),
        }
    )


def materialize_all(
    data_dir: Path, source_dir: Path, seed: int = 0, ops: dict | None = None, variant: str = TINY_VARIANT,
    instance: dg.DagsterInstance | None = None, uri: str | None = None, **training: object,
) -> dg.ExecuteInProcessResult:
    """The whole job for one variant, in `instance` (a fresh ephemeral one by default), tracking to `uri`
    (default: the data folder's embedded store)."""
    from vae_pipeline.definitions import defs
    from vae_pipeline.defs.resources import default_resources

    job = defs.resolve_job_def("vae_pipeline_job")
    return job.execute_in_process(
        run_config=run_config(source_dir, seed, ops, **training),
        resources=default_resources(str(data_dir), tracking_uri=uri or tracking_uri(data_dir)),
        instance=add_variants(instance or dg.DagsterInstance.ephemeral(), variant),
        partition_key=variant,
        raise_on_error=False,  # a failed quality gate fails the run; the tests read the outcome
    )


TRAINING_ASSETS = ["mnist_raw", "mnist_tensors", "vae_model"]


def materialize_training(
    data_dir: Path, source_dir: Path, *, uri: str | None = None, instance: dg.DagsterInstance | None = None,
    **training: object,
) -> dg.ExecuteInProcessResult:
    """Ingest the slice and train the tiny variant's VAE only (`training` overrides the tiny training config), tracking
    to `uri` (default: the data folder's embedded store)."""
    from vae_pipeline.definitions import defs
    from vae_pipeline.defs.resources import default_resources

    ops = run_config(source_dir, **training).to_config_dict()["ops"]
    return dg.materialize(
        list(defs.assets), selection=TRAINING_ASSETS, run_config={"ops": {asset: ops[asset] for asset in TRAINING_ASSETS}},
        resources=default_resources(str(data_dir), tracking_uri=uri or tracking_uri(data_dir)),
        instance=add_variants(instance or dg.DagsterInstance.ephemeral(), TINY_VARIANT), partition_key=TINY_VARIANT,
        raise_on_error=False,
    )
