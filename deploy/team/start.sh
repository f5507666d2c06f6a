#!/usr/bin/env bash
# Start the team deployment on this machine, every server on 127.0.0.1 only:
#
#   PostgreSQL   Dagster's instance (runs, events, partitions, backfills, pool slots) and MLflow's
#                backend store, two databases of one cluster
#   Redis        the Celery broker (queue /0) and result backend (/1)
#   mlflow       `mlflow server`: tracking and registry in PostgreSQL; artifacts uploaded through
#                the server into $VAE_TEAM_ROOT/mlartifacts, so a worker needs only its URL
#   worker-N     `dagster-celery worker start`, one step at a time each: the steps of runs launched
#                with deploy/team/celery.yaml
#   code server  `dagster code-server start`: loads the definitions once and launches the run workers;
#                the daemon and the UI read the code location from it
#   daemon       `dagster-daemon run`: run queue, backfills, sensors, run monitoring and retries
#   webserver    `dagster-webserver`: the UI and its GraphQL API
#
# Usage: bash deploy/team/start.sh [--foreground]
#   returns once every server answers (stop with deploy/team/stop.sh), or with --foreground stays
#   and stops everything on Ctrl-C.
# Settings (environment): VAE_TEAM_ROOT (./team) holds all state; ports VAE_TEAM_PG_PORT (5432),
# VAE_TEAM_REDIS_PORT (6379), VAE_TEAM_MLFLOW_PORT (5000), VAE_TEAM_DAGSTER_PORT (3000), VAE_TEAM_CODE_PORT (4000);
# VAE_TEAM_WORKERS (2) Celery workers; VAE_TEAM_MLFLOW_WORKERS (2) processes serving MLflow's API; DAGSTER_PG_USER (vae), DAGSTER_PG_DB (dagster),
# VAE_TEAM_MLFLOW_DB (mlflow); DAGSTER_PG_PASSWORD (default: generated on first start into
# $VAE_TEAM_ROOT/secrets/pg_password, mode 600; nothing secret is in the repository);
# VAE_TEAM_VENV (the repository's .venv); VAE_TEAM_PG_BIN (PostgreSQL's programs, found by default);
# VAE_TEAM_DATA_DIR ($VAE_TEAM_ROOT/data): the pipeline's data folder, a path or an object store URL.
# VAE_TEAM_STEP_TIME_LIMIT (3600): seconds a step may run on a Celery worker; a step of a worker lost
# whole is run again on another worker VAE_TEAM_REDELIVERY_MARGIN (300) seconds after this (see the
# Celery workers below). The margin must exceed the time a worker takes to stop a step at its limit.
# The pipeline's own settings pass through (VAE_PIPELINE_MNIST_DIR, VAE_PIPELINE_AUTOMATION,
# VAE_PIPELINE_SWEEP); VAE_PIPELINE_DATA_DIR, MLFLOW_TRACKING_URI and DAGSTER_HOME are set here, to
# VAE_TEAM_DATA_DIR, folders under $VAE_TEAM_ROOT and this MLflow server.
# $VAE_TEAM_ROOT/team.env (mode 600) exports the same environment for a shell: `source` it to use
# the dagster, dg or mlflow command line against this deployment.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$here/common.sh"

pg_port="${VAE_TEAM_PG_PORT:-5432}"
redis_port="${VAE_TEAM_REDIS_PORT:-6379}"
mlflow_port="${VAE_TEAM_MLFLOW_PORT:-5000}"
dagster_port="${VAE_TEAM_DAGSTER_PORT:-3000}"
code_port="${VAE_TEAM_CODE_PORT:-4000}"
workers="${VAE_TEAM_WORKERS:-2}"
step_limit="${VAE_TEAM_STEP_TIME_LIMIT:-3600}"
redelivery_margin="${VAE_TEAM_REDELIVERY_MARGIN:-300}"
pg_user="${DAGSTER_PG_USER:-vae}"
dagster_db="${DAGSTER_PG_DB:-dagster}"
mlflow_db="${VAE_TEAM_MLFLOW_DB:-mlflow}"
venv="${VAE_TEAM_VENV:-$repo/.venv}"
bin="$venv/bin"

fail() { echo "start.sh: $*" >&2; exit 1; }
[[ "$step_limit" =~ ^[1-9][0-9]*$ ]] || fail "VAE_TEAM_STEP_TIME_LIMIT=$step_limit is not a whole number of seconds; set it to one, e.g. 3600."
[[ "$redelivery_margin" =~ ^[1-9][0-9]*$ ]] || fail "VAE_TEAM_REDELIVERY_MARGIN=$redelivery_margin is not a whole number of seconds; set it to one, e.g. 300."

# --- what must be there before anything starts ------------------------------------------------
[ -x "$bin/dagster-webserver" ] && [ -x "$bin/dagster-celery" ] && [ -x "$bin/mlflow" ] \
  || fail "no dagster-webserver, dagster-celery or mlflow in $bin: run bash scripts/setup.sh (or set VAE_TEAM_VENV)."
"$bin/python" -c "import dagster_postgres, psycopg2" 2>/dev/null \
  || fail "dagster-postgres or psycopg2 missing in $venv: pip install -c constraints.txt -e . (both are dependencies)."
pg_bin="$(find_pg_bin)"
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_ctl" ] && [ -x "$pg_bin/psql" ] \
  || fail "PostgreSQL's initdb, pg_ctl and psql not found: apt-get install postgresql (Debian), or set VAE_TEAM_PG_BIN."
redis="$(command -v redis-server || true)"
[ -n "$redis" ] || fail "redis-server not found: apt-get install redis-server."
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || fail "running as root, but there is no postgres user to run PostgreSQL as (Debian's postgresql package creates it)."
fi

mkdir -p "$run_dir" "$log_dir"
for pidfile in "$run_dir"/*.pid; do
  [ -e "$pidfile" ] || continue
  if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    fail "$(basename "$pidfile" .pid) is already running from $team_root; stop it first: VAE_TEAM_ROOT=$team_root bash $here/stop.sh"
  fi
  rm -f "$pidfile"
done
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$pg_port" "$redis_port" "$mlflow_port" "$dagster_port" "$code_port"; do
  ! port_in_use "$port" || fail "port $port on 127.0.0.1 is taken (a system PostgreSQL or Redis? another deployment?); choose others with VAE_TEAM_PG_PORT, VAE_TEAM_REDIS_PORT, VAE_TEAM_MLFLOW_PORT, VAE_TEAM_DAGSTER_PORT, VAE_TEAM_CODE_PORT."
done

# Anything that fails from here on stops what was started.
on_exit() {
  local rc=$?
  [ "$rc" = 0 ] && return
  echo "start.sh: failed; stopping what was started (logs in $log_dir)" >&2
  VAE_TEAM_ROOT="$team_root" bash "$here/stop.sh" >&2 || true
  exit "$rc"
}
trap on_exit EXIT

# start_bg NAME ARGV...: ARGV in a session (and process group) of its own, cwd $VAE_TEAM_ROOT (so a
# relative path written by any of them stays under it), output to logs/NAME.log, pid in run/NAME.pid.
# setsid execs without forking here (a background job of a script leads no group), so the pid is the
# group's id: stop.sh ends the whole group, children included.
start_bg() {
  local name="$1"; shift
  (cd "$team_root" && exec setsid "$@" </dev/null >>"$log_dir/$name.log" 2>&1) &
  echo "$!" >"$run_dir/$name.pid"
}

# wait_until WHAT NAME SECONDS COMMAND...: poll COMMAND every second; fail with NAME's log tail
# when it does not succeed in time or NAME's process has died.
wait_until() {
  local what="$1" name="$2" seconds="$3"; shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ -f "$run_dir/$name.pid" ] && ! kill -0 "$(cat "$run_dir/$name.pid")" 2>/dev/null; then
      tail -n 30 "$log_dir/$name.log" >&2 || true
      echo "start.sh: $what exited (log: $log_dir/$name.log)" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$log_dir/$name.log" >&2 || true
      echo "start.sh: $what not ready after ${seconds}s (log: $log_dir/$name.log)" >&2
      return 1
    fi
    sleep 1
  done
}
http_ok() { "$bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"; }

# --- the password: from the environment, else the one generated on the first start -------------
mkdir -p "$team_root/secrets"
chmod 700 "$team_root/secrets"
password_file="$team_root/secrets/pg_password"
if [ -n "${DAGSTER_PG_PASSWORD:-}" ]; then
  password="$DAGSTER_PG_PASSWORD"
elif [ -s "$password_file" ]; then
  password="$(cat "$password_file")"
else
  password="$("$bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
  (umask 077 && printf '%s\n' "$password" >"$password_file")
fi

# --- PostgreSQL: one cluster, TCP on 127.0.0.1 only, password (scram-sha-256) for every role -----
mkdir -p "$pg_dir"
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$pg_dir"
  runuser -u postgres -- test -w "$pg_dir" || fail "the postgres user cannot reach $pg_dir: a folder above it is private (pytest's and mktemp's are 0700). Put VAE_TEAM_ROOT where that user can pass (chmod o+x on its parents), or start as a user other than root."
fi
chmod 700 "$pg_dir"
if [ ! -f "$pg_data/PG_VERSION" ]; then
  pwfile="$pg_dir/initdb-password"  # read by initdb, then removed
  (umask 077 && printf '%s\n' "$password" >"$pwfile")
  [ "$(id -u)" != 0 ] || chown postgres: "$pwfile"
  as_pg "$pg_bin/initdb" -D "$pg_data" -U "$pg_user" --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 --locale=C \
    >"$log_dir/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$log_dir/initdb.log" >&2; fail "initdb failed"; }
  rm -f "$pwfile"
  # No Unix socket (its default folder is the system's, /var/run/postgresql): TCP on loopback only.
  printf "\n# deploy/team/start.sh\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n" >>"$pg_data/postgresql.conf"
fi
as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_dir/postgres.log" -o "-p $pg_port" -w -t 60 start >"$log_dir/pg_ctl.log" 2>&1 \
  || { tail -n 30 "$pg_dir/postgres.log" >&2 || true; fail "PostgreSQL did not start (log: $pg_dir/postgres.log)"; }
psql_() { PGPASSWORD="$password" "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
for db in "$dagster_db" "$mlflow_db"; do
  [ "$(psql_ -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" = 1 ] || psql_ -c "CREATE DATABASE \"$db\""
done

# --- the environment of every other process --------------------------------------------------
export DAGSTER_HOME="$team_root/dagster_home"
export DAGSTER_PG_HOST=127.0.0.1 DAGSTER_PG_PORT="$pg_port" DAGSTER_PG_USER="$pg_user" DAGSTER_PG_DB="$dagster_db"
export DAGSTER_PG_PASSWORD="$password"
# The pipeline's files: every Celery worker must reach them. VAE_TEAM_DATA_DIR may be a shared folder or an
# object store URL (s3://bucket/vae, with s3fs installed and AWS_* set); each machine then works in a local
# copy, VAE_PIPELINE_CACHE_DIR.
export VAE_PIPELINE_DATA_DIR="${VAE_TEAM_DATA_DIR:-$team_root/data}"
export VAE_PIPELINE_CACHE_DIR="${VAE_PIPELINE_CACHE_DIR:-$team_root/cache}"
export MLFLOW_TRACKING_URI="http://127.0.0.1:$mlflow_port"
unset MLFLOW_REGISTRY_URI                        # the registry is the tracking server's
export DAGSTER_WEBSERVER_URL="http://127.0.0.1:$dagster_port"  # links from MLflow's registry to runs
export VAE_TEAM_CELERY_BROKER="redis://127.0.0.1:$redis_port/0" VAE_TEAM_CELERY_BACKEND="redis://127.0.0.1:$redis_port/1"
export VAE_PIPELINE_SWEEP="${VAE_PIPELINE_SWEEP:-$repo/sweeps/default.yaml}"  # the processes run in $VAE_TEAM_ROOT
export VIRTUAL_ENV="$venv" PATH="$bin:$PATH"     # dagster-celery runs `celery` from PATH
mkdir -p "$DAGSTER_HOME"
case "$VAE_PIPELINE_DATA_DIR" in *://*) ;; *) mkdir -p "$VAE_PIPELINE_DATA_DIR" ;; esac
cp "$here/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
(
  umask 077
  {
    echo "# Written by deploy/team/start.sh: the environment of the team deployment's processes (holds the database password)."
    for var in DAGSTER_HOME DAGSTER_PG_HOST DAGSTER_PG_PORT DAGSTER_PG_USER DAGSTER_PG_DB DAGSTER_PG_PASSWORD \
               VAE_PIPELINE_DATA_DIR VAE_PIPELINE_CACHE_DIR MLFLOW_TRACKING_URI DAGSTER_WEBSERVER_URL VAE_TEAM_CELERY_BROKER VAE_TEAM_CELERY_BACKEND; do
      printf 'export %s=%q\n' "$var" "${!var}"
    done
  } >"$team_root/team.env"
)
# Dagster's tables, created (or migrated after an upgrade) once, before several processes race to.
"$bin/dagster" instance migrate >"$log_dir/dagster-migrate.log" 2>&1 \
  || { cat "$log_dir/dagster-migrate.log" >&2; fail "could not create Dagster's tables in database $dagster_db"; }

# --- Redis: the broker. Bound to loopback (protected mode, no password) ---------------------------
mkdir -p "$team_root/redis"
start_bg redis "$redis" --port "$redis_port" --bind 127.0.0.1 --dir "$team_root/redis"

# --- MLflow: tracking and registry in PostgreSQL, artifacts proxied into mlartifacts/ ------------
# The password reaches psycopg2 through PGPASSWORD, not the URI: a command line is public (ps).
# The driver is named because SQLAlchemy 2.1 defaults postgresql:// to psycopg 3 (see dagster.yaml).
# MLflow's job execution (GenAI scoring, trace archival) is off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION
# says otherwise: the pipeline runs no MLflow jobs, and with it on the server starts seven job consumer
# processes that each import MLflow (about 9 s of CPU on two cores) and then keep polling.
start_bg mlflow env PGPASSWORD="$password" MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" "$bin/mlflow" server --host 127.0.0.1 --port "$mlflow_port" \
  --workers "${VAE_TEAM_MLFLOW_WORKERS:-2}" \
  --backend-store-uri "postgresql+psycopg2://$pg_user@127.0.0.1:$pg_port/$mlflow_db" \
  --artifacts-destination "$team_root/mlartifacts"

wait_until "redis-server" redis 30 "$bin/python" -c 'import sys, redis; redis.Redis(host="127.0.0.1", port=int(sys.argv[1])).ping()' "$redis_port"

# --- Celery workers: one pool process each, so a worker runs one step at a time ------------------
# The -y file is the Celery executor's own config block (broker, backend, Celery settings), not a
# run config; the settings are the workers' (the run worker only submits tasks and waits).
# A worker lost whole (kill -9 of the worker and its pool process, its machine gone) reports
# nothing: by default Celery acknowledges a task when it starts, so its step was never run again
# and the run worker waited for its result forever. Acknowledged late instead, the task stays in
# Redis until it ends, and Redis hands an unacknowledged task to another worker once it is older
# than visibility_timeout: the step runs again in the same run, and training resumes from its
# checkpoint. Redis cannot tell a lost worker from a slow one, so a step must not outlive that
# timeout, or it would run twice at once: task_time_limit stops a step (its worker kills it, the run
# fails and run_retries re-executes it, resuming training) VAE_TEAM_REDELIVERY_MARGIN seconds (5
# minutes by default) before Redis would hand it out,
# and a worker holds no task but the one it runs (prefetch 1; dagster-celery's default 4 let a busy
# worker hold queued steps past the timeout, and they ran twice).
# A pool process that dies alone (the OOM killer) is still reported lost and fails the run at once
# (task_reject_on_worker_lost false: requeued, the same OOM would recur on every worker).
# restore interval x throttle: Redis is searched for such tasks every 10 s, not every 100 s.
mkdir -p "$team_root/celery"
cat >"$team_root/celery/worker.yaml" <<EOF
execution:
  config:
    broker: $VAE_TEAM_CELERY_BROKER
    backend: $VAE_TEAM_CELERY_BACKEND
    config_source:
      task_acks_late: true
      task_reject_on_worker_lost: false
      task_time_limit: $step_limit
      worker_prefetch_multiplier: 1
      broker_transport_options:
        visibility_timeout: $((step_limit + redelivery_margin))
        unacked_restore_interval: 10
        unacked_restore_throttle: 1
        # dagster-celery's own defaults (this block replaces them): retry a publish 3 times
        max_retries: 3
        interval_start: 0
        interval_step: 0.2
        interval_max: 0.5
EOF
# Each worker's share of the cores for torch's and scikit-learn's OpenMP thread pools (unless
# OMP_NUM_THREADS is set), so that steps running side by side do not oversubscribe the cores: with
# two workers on two busy cores, the judge's regularity figures of one evaluation took 4-8 s with
# a pool per worker sized to every core, about 1 s with one thread each.
cores="$(nproc)"
worker_threads="${OMP_NUM_THREADS:-$(( cores / workers > 0 ? cores / workers : 1 ))}"
for i in $(seq 1 "$workers"); do
  OMP_NUM_THREADS="$worker_threads" start_bg "worker-$i" "$bin/dagster-celery" worker start -A dagster_celery.app -y "$team_root/celery/worker.yaml" \
    -n "worker-$i" -- --concurrency 1
done

# --- Dagster: one code server; the daemon and the UI on it ----------------------------------------
# Given the repository's workspace.yaml, the UI and the daemon would each start a code server of their
# own (a Python process that imports the definitions: about 15 s of CPU and 0.9 GB), and the daemon
# starts a new one every 60 s (Dagster 1.13's workspace refresh). One long-lived code server serves
# both, and launches the run workers (they are in its process group). The workspace file that names
# it is written here; the code location keeps the name of workspace.yaml's, vae_pipeline.
cat >"$team_root/workspace.yaml" <<EOF
# Written by deploy/team/start.sh at every start: the code server it runs.
load_from:
  - grpc_server:
      host: 127.0.0.1
      port: $code_port
      location_name: vae_pipeline
EOF
start_bg dagster-code-server "$bin/dagster" code-server start -m vae_pipeline.definitions --location-name vae_pipeline \
  -h 127.0.0.1 -p "$code_port"
wait_until "dagster code server" dagster-code-server 60 port_in_use "$code_port"
start_bg dagster-daemon "$bin/dagster-daemon" run -w "$team_root/workspace.yaml"
start_bg dagster-webserver "$bin/dagster-webserver" -w "$team_root/workspace.yaml" -h 127.0.0.1 -p "$dagster_port"

wait_until "mlflow server" mlflow 180 http_ok "$MLFLOW_TRACKING_URI/health"
for i in $(seq 1 "$workers"); do  # celery logs "<name>@<host> ready." once it consumes the queue
  wait_until "celery worker-$i" "worker-$i" 180 grep -q " ready\." "$log_dir/worker-$i.log"
done
wait_until "dagster-webserver" dagster-webserver 240 http_ok "$DAGSTER_WEBSERVER_URL/server_info"
wait_until "dagster-daemon" dagster-daemon 5 kill -0 "$(cat "$run_dir/dagster-daemon.pid")"
trap - EXIT

cat <<EOF
Team deployment running from $team_root
  Dagster UI      $DAGSTER_WEBSERVER_URL   (the code location may take a minute to load)
  MLflow UI       $MLFLOW_TRACKING_URI
  PostgreSQL      127.0.0.1:$pg_port, user $pg_user, databases $dagster_db and $mlflow_db
  Redis broker    $VAE_TEAM_CELERY_BROKER
  Celery workers  $(for i in $(seq 1 "$workers"); do printf 'worker-%s ' "$i"; done)
  Logs            $log_dir (PostgreSQL's: $pg_dir/postgres.log)
Launch runs on the workers with the run config deploy/team/celery.yaml (with the ops' config).
Command line against this deployment: source $team_root/team.env
Stop: VAE_TEAM_ROOT=$team_root bash $here/stop.sh
EOF

if [ "${1:-}" = "--foreground" ]; then
  trap 'VAE_TEAM_ROOT="$team_root" bash "$here/stop.sh"; exit 0' INT TERM
  echo "Running in the foreground; Ctrl-C stops everything."
  while true; do sleep 3600 & wait $!; done
fi
