#!/usr/bin/env bash
# Create .venv and install the project with pinned versions (constraints.txt). Idempotent.
# The installer is uv (pinned below, installed into .venv by pip): it resolves and unpacks the same
# pinned wheels as pip, about four times faster (a fresh install here: 43 s against 180 s with pip,
# most of it torch's CUDA libraries). `pip install -c constraints.txt -e .` installs the same set.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
# --compile-bytecode: the installed packages' .pyc files are written here, once, not by each process that
# imports them. Where Python may not write them (PYTHONDONTWRITEBYTECODE=1, set on the machines this project
# is developed on, or a read-only venv) every process compiled torch, dagster, mlflow and scipy from source:
# loading the definitions took 11.7 s instead of 5.0 s, and the test suite starts some fifty such processes.
UV_LINK_MODE=copy .venv/bin/uv pip install --quiet --python .venv/bin/python --constraint constraints.txt --compile-bytecode \
  --editable ".${extras}"
