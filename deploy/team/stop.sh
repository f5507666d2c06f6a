#!/usr/bin/env bash
# Stop the team deployment that deploy/team/start.sh started from $VAE_TEAM_ROOT (default ./team).
# State stays: start.sh with the same folder brings back the runs, the registry and the data.
# Order: the UI and the daemon first (no new runs are launched), then the code server and the Celery
# workers, MLflow, Redis, and PostgreSQL last, which everything else writes to. Runs in progress are
# interrupted (their run workers are in the code server's process group, their steps on the workers):
# stop when none is, or re-execute them from the UI afterwards.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/common.sh"

# stop_group NAME: SIGTERM to the process group that run/NAME.pid leads, SIGKILL after 30 s.
stop_group() {
  local name="$1" pidfile="$run_dir/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  local begun=$SECONDS
  if kill -TERM -- "-$pid" 2>/dev/null; then
    for _ in $(seq 1 60); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -KILL -- "-$pid" 2>/dev/null; then
      echo "stop.sh: $name did not stop within 30 s; killed"
    fi
    echo "stopped $name ($((SECONDS - begun)) s)"
  fi
  rm -f "$pidfile"
}

# Each stage's processes stop side by side (each takes a few seconds to shut down cleanly).
stop_group dagster-webserver & stop_group dagster-daemon & wait
stop_group dagster-code-server &
for pidfile in "$run_dir"/worker-*.pid; do
  [ -e "$pidfile" ] && stop_group "$(basename "$pidfile" .pid)" &
done
wait
stop_group mlflow & stop_group redis & wait
if [ -f "$pg_data/postmaster.pid" ]; then
  pg_bin="$(find_pg_bin)"
  if as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null; then
    echo "stopped postgres"
  else
    # pg_ctl could not do it (e.g. the postgres user can no longer reach the folder): the same fast
    # shutdown, by the signal pg_ctl would send to the server whose pid the lock file holds.
    pid="$(head -n 1 "$pg_data/postmaster.pid")"
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stop.sh: PostgreSQL (pid $pid) did not stop; see $pg_dir/postgres.log" >&2
      exit 1
    fi
    echo "stopped postgres (by signal)"
  fi
fi
