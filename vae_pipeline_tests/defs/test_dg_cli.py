"""`dg`, the project's command line, finds the code location from pyproject.toml and works on it.

Each command runs as a user types it: the venv's `dg`, from the repository root, with the venv
active, in a throwaway instance (DAGSTER_HOME) and data folder. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit  # dg's own TOML reader, so this runs on Python 3.10 too (no tomllib)
import yaml

from vae_pipeline_tests.helpers import REPO_ROOT, TINY_TRAINING
from vae_pipeline_tests.variants import TINY_VARIANT

# Each test starts `dg` processes (several seconds each): not the fast tier.
pytestmark = pytest.mark.slow

DG = Path(sys.executable).parent / "dg"
PIPELINE_ASSETS = {
    "mnist_raw", "mnist_tensors", "vae_model", "autoencoder_baseline", "digit_classifier", "latent_embeddings",
    "prior_samples", "reconstruction_report", "latent_evaluation", "champion_comparison", "champion_model",
}


@pytest.fixture
def dg_env(tmp_path: Path, mnist_dir: Path) -> dict[str, str]:
    """The environment scripts/pipeline.sh gives dg, pointed at folders under tmp_path."""
    if not DG.is_file():
        pytest.fail(f"{DG} not found: install the project into this environment (pip install -c constraints.txt -e '.[dev]').")
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    # As scripts/instance.sh does: the project's instance config (telemetry off, run monitoring on).
    shutil.copy(REPO_ROOT / "deploy" / "local" / "dagster.yaml", dagster_home / "dagster.yaml")
    venv = Path(sys.prefix)
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "VAE_PIPELINE_DATA_DIR": str(tmp_path / "data"),
        "VAE_PIPELINE_MNIST_DIR": str(mnist_dir),
        # What `source .venv/bin/activate` sets; dg warns when the active venv is not the project's.
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _dg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # check=False: each test asserts on the exit status itself, with dg's output in the message.
    return subprocess.run(
        [str(DG), *args], check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def test_dg_check_defs_loads_the_code_location(dg_env: dict[str, str]) -> None:
    done = _dg(dg_env, "check", "defs")
    assert done.returncode == 0, _output(done)
    assert "All definitions loaded successfully." in done.stdout, _output(done)


def test_dg_list_defs_lists_the_pipeline(dg_env: dict[str, str]) -> None:
    done = _dg(dg_env, "list", "defs", "--json")
    assert done.returncode == 0, _output(done)
    listed = json.loads(done.stdout)
    assets = {asset["asset_key"]: asset for asset in listed["assets"]}
    assert PIPELINE_ASSETS <= set(assets), _output(done)
    assert "vae_model" in assets["latent_evaluation"]["dependency_keys"]
    assert "vae_pipeline_job" in {job["name"] for job in listed["jobs"]}, _output(done)


def test_dg_launch_exits_non_zero_when_the_run_fails(dg_env: dict[str, str]) -> None:
    # scripts/pipeline.sh relies on this: a failed run must fail the script.
    bad = {"ops": {"mnist_raw": {"config": {"dataset": "no_such_dataset", "allow_download": False}}}}
    done = _dg(dg_env, "launch", "--assets", "mnist_raw", "--config-json", json.dumps(bad))
    assert done.returncode != 0, _output(done)
    assert "no_such_dataset" in done.stdout + done.stderr, _output(done)


def test_dg_launch_trains_a_variant_once_it_is_a_partition(dg_env: dict[str, str], tmp_path: Path, mnist_slice_dir: Path) -> None:
    # What scripts/pipeline.sh does: add the variant to the instance, then launch its partition.
    selection = ["--assets", "mnist_raw,mnist_tensors,vae_model"]
    config = {"ops": {
        "mnist_raw": {"config": {"source_dir": str(mnist_slice_dir), "verify_md5": False, "allow_download": False}},
        "mnist_tensors": {"config": {"val_size": 200}},
        "vae_model": {"config": TINY_TRAINING},
    }}
    launch = [*selection, "--config-json", json.dumps(config)]
    unknown = _dg(dg_env, "launch", *launch, "--partition", TINY_VARIANT)  # not a partition of this instance yet
    assert unknown.returncode != 0 and f"partition key `{TINY_VARIANT}`" in unknown.stderr, _output(unknown)
    added = subprocess.run([sys.executable, "-m", "vae_pipeline.variants_cli", "add", TINY_VARIANT], check=False,
                           cwd=REPO_ROOT, env=dg_env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0 and f"added {TINY_VARIANT}" in added.stdout, _output(added)
    assert not (tmp_path / "data" / "models").exists()

    # In this process (in-process executor), returning when the run is done: its outputs are there.
    done = _dg(dg_env, "launch", *launch, "--partition", TINY_VARIANT)
    assert done.returncode == 0, _output(done)
    assert "RUN_SUCCESS" in done.stderr, _output(done)
    for warning in ("BetaWarning", "PreviewWarning", "SupersessionWarning", "DeprecationWarning"):
        assert warning not in done.stdout + done.stderr, _output(done)  # the default path prints none
    (manifest,) = (tmp_path / "data" / "manifests" / "vae_model" / TINY_VARIANT).glob("*.json")
    trained = json.loads(manifest.read_text())
    assert trained["variant"] == TINY_VARIANT and trained["model_config"]["latent_dim"] == 4


def test_dg_dagster_dev_and_workspace_yaml_name_one_code_location() -> None:
    # Runs and sensor state are filed under the location name: `dg dev` and `dagster dev -w
    # workspace.yaml` must show the same location, or one UI loses the other's history.
    pyproject = tomlkit.parse((REPO_ROOT / "pyproject.toml").read_text()).unwrap()
    dg_project = pyproject["tool"]["dg"]["project"]
    dagster = pyproject["tool"]["dagster"]
    (entry,) = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]
    module = entry["python_module"]
    assert dg_project["code_location_target_module"] == dagster["module_name"] == module["module_name"]
    assert dg_project["code_location_name"] == dagster["code_location_name"] == module["location_name"]
