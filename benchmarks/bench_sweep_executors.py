"""Sweep benchmark: the wall time of one three-variant sweep under each executor, as a user runs it.

- in_process:   one `dg launch` per variant, one after another, each run in one process (the default, scripts/sweep.sh);
- multiprocess: the same with deploy/local/multiprocess.yaml, each step a process (sweep.sh -c that file);
- celery:       the team deployment (deploy/team/start.sh: PostgreSQL, Redis, an MLflow server, two Celery
                workers, the daemon) and one backfill of the three variants through GraphQL, as from the UI.

Every mode starts from an empty data folder and instance, materializes the shared assets (raw data,
tensor store, judge) untimed, then times the per-variant assets of the three variants plus
`sweep_comparison`: the same work in every mode. The data is a slice of real MNIST (1,200 training
images) with the tests' tiny config, so the figures measure orchestration as much as compute.

Usage: VAE_PIPELINE_MNIST_DIR=../shared/mnist/raw python benchmarks/bench_sweep_executors.py [MODE ...]
(the celery mode needs Debian's postgresql and redis-server, as .ci/run installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # vae_pipeline_tests is not installed; its helpers are reused here

from vae_pipeline_tests.e2e.servers import child_env  # noqa: E402
from vae_pipeline_tests.e2e.team import (  # noqa: E402
    CELERY_RUN_CONFIG,
    PER_VARIANT,
    SHARED,
    SWEEP,
    launch,
    run_backfill,
    started_team,
    team_root,
)
from vae_pipeline_tests.helpers import run_config  # noqa: E402
from vae_pipeline_tests.idx_files import write_mnist_slice  # noqa: E402

MODES = ("in_process", "multiprocess", "celery")
BIN = Path(sys.executable).parent


def dg_launch(env: dict[str, str], log: Path, *args: str) -> None:
    with open(log, "ab") as out:
        subprocess.run([str(BIN / "dg"), "launch", *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, check=True)


def one_machine(mode: str, folder: Path, slice_dir: Path, config: Path) -> float:
    """`dg launch` per variant on a sqlite instance and the embedded MLflow store; seconds for the sweep."""
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    env = child_env(DAGSTER_HOME=str(home), VAE_PIPELINE_DATA_DIR=str(folder / "data"),
                    VAE_PIPELINE_MNIST_DIR=str(slice_dir), VAE_PIPELINE_AUTOMATION="off")
    env.pop("MLFLOW_TRACKING_URI", None)
    executor = ["-c", str(REPO_ROOT / "deploy" / "local" / "multiprocess.yaml")] if mode == "multiprocess" else []
    log = folder / "dg.log"
    dg_launch(env, log, "--assets", ",".join(SHARED), "-c", str(config))
    subprocess.run([sys.executable, "-m", "vae_pipeline.variants_cli", "add", *SWEEP], cwd=REPO_ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    started = time.monotonic()
    for variant in SWEEP:
        dg_launch(env, log, "--assets", ",".join(PER_VARIANT), "--partition", variant, "-c", str(config), *executor)
    dg_launch(env, log, "--assets", "sweep_comparison", "-c", str(config), *executor)
    return time.monotonic() - started


def celery(folder: Path, slice_dir: Path, config: dict) -> float:
    """The team deployment's backfill of the three variants on two Celery workers; seconds from launch to its end."""
    config = {**config, **yaml.safe_load(CELERY_RUN_CONFIG.read_text())}
    cwd = folder / "cwd"
    cwd.mkdir(parents=True)
    with team_root(folder / "team") as root, started_team(root, cwd, slice_dir) as team:
        shared = launch(team, config, SHARED)
        assert team.dev.wait(shared, timeout_s=600) == "SUCCESS", "the shared assets failed: see the team's logs"
        team.dev.add_variants(*SWEEP)
        backfill, seconds = run_backfill(team, SWEEP, [*PER_VARIANT, "sweep_comparison"], config, "benchmark sweep")
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    return seconds


def main(modes: list[str]) -> None:
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        sys.exit(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    mnist = Path(os.environ.get("VAE_PIPELINE_MNIST_DIR", REPO_ROOT.parent / "shared" / "mnist" / "raw"))
    if not (mnist / "train-images-idx3-ubyte.gz").is_file():
        sys.exit(f"no MNIST IDX files in {mnist}: set VAE_PIPELINE_MNIST_DIR to the folder of the four .gz files")
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    work.chmod(0o711)  # as root, PostgreSQL runs as the postgres user and must pass through
    try:
        slice_dir = write_mnist_slice(mnist, work / "slice", n_train=1200, n_test=300)
        config = run_config(slice_dir).to_config_dict()
        config_file = work / "run_config.yaml"
        config_file.write_text(yaml.safe_dump(config))
        print(f"sweep: {len(SWEEP)} variants {SWEEP}; cpus={os.cpu_count()} load_before={os.getloadavg()[0]:.2f}")
        seconds: dict[str, float] = {}
        for mode in modes:
            folder = work / mode
            folder.mkdir()
            if mode == "celery":
                seconds[mode] = celery(folder, slice_dir, config)
            else:
                seconds[mode] = one_machine(mode, folder, slice_dir, config_file)
            ratio = f" ({seconds[mode] / seconds['in_process']:.2f}x in_process)" if "in_process" in seconds else ""
            print(f"{mode}_sweep_s={seconds[mode]:.1f}{ratio} load_after={os.getloadavg()[0]:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODES))
