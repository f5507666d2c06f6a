# Sourced by start.sh and stop.sh: where the team deployment keeps its state, and how PostgreSQL's
# programs are found and run.

# All state (databases, broker dump, data folder, MLflow artifacts, logs, pids, the generated
# password) lives under one folder: $VAE_TEAM_ROOT, default ./team (relative to where the script is
# run). Stopping and starting again with the same folder keeps everything.
team_root="$(mkdir -p "${VAE_TEAM_ROOT:-$PWD/team}" && cd "${VAE_TEAM_ROOT:-$PWD/team}" && pwd)"
pg_dir="$team_root/postgres"  # owned by the user PostgreSQL runs as (see as_pg)
pg_data="$pg_dir/data"
run_dir="$team_root/run"      # <process>.pid: each process leads its own process group
log_dir="$team_root/logs"

# The folder of initdb, pg_ctl and psql: $VAE_TEAM_PG_BIN, else that of `initdb` on PATH, else the
# newest /usr/lib/postgresql/<version>/bin (Debian's `postgresql` package keeps them off PATH).
find_pg_bin() {
  if [ -n "${VAE_TEAM_PG_BIN:-}" ]; then
    echo "$VAE_TEAM_PG_BIN"
  elif command -v initdb >/dev/null; then
    dirname "$(readlink -f "$(command -v initdb)")"
  else
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
      [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    done
  fi
}

# PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user (created by
# Debian's package), from / (every path given is absolute; the caller's folder may be private); as
# anyone else, as that user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}
