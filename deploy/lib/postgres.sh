# PostgreSQL from Debian's packages, run as the postgres OS user with its data in the services
# folder; role kirby (password kirby) owning databases kirby and kirby_test. Sourced.

POSTGRES_ROOT=$SERVICES_DIR/postgres
POSTGRES_DATA=$POSTGRES_ROOT/data
POSTGRES_LOG=$LOG_DIR/postgres.log

postgres_address() { echo "127.0.0.1:$POSTGRES_PORT"; }

postgres_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

postgres_install() {
  postgres_bin >/dev/null || apt_install postgresql
  postgres_bin >/dev/null || die "postgresql installed, but no /usr/lib/postgresql/*/bin/pg_ctl"
  [ "$(id -u)" != 0 ] || id postgres >/dev/null 2>&1 || die "the postgres OS user is missing (it comes with Debian's postgresql)"
}

# PostgreSQL refuses to run as root: as root, run its tools as the postgres user; otherwise as us.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The database superuser is the OS user that runs the server (peer authentication on the socket).
postgres_superuser() { if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi; }

# chown_postgres PATH...: as root, hand PATHs to the postgres user.
chown_postgres() {
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$@"; fi
}

postgres_pid() {
  local pid
  pid=$(read_pid "$POSTGRES_DATA/postmaster.pid")
  pid_alive "$pid" "$POSTGRES_DATA" && echo "$pid"
}

postgres_ready() {
  "$(postgres_bin)/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT" -d postgres
}

# The postgres user must reach its data folder: give "search" (o+x) to the folders above it that
# lack it (a clone under /root, for example), never read rights.
postgres_make_reachable() {
  local dir=$SERVICES_DIR
  until as_postgres test -x "$SERVICES_DIR" 2>/dev/null || [ "$dir" = / ]; do
    local mode
    mode=$(stat -c %A "$dir")
    if [[ ${mode:9:1} != [xt] ]]; then
      say "postgres: chmod o+x $dir (so the postgres user reaches its data)"
      chmod o+x "$dir"
    fi
    dir=$(dirname "$dir")
  done
}

postgres_init() {
  [ -f "$POSTGRES_DATA/PG_VERSION" ] && return 0
  say "postgres: initdb $POSTGRES_DATA"
  rm -rf "$POSTGRES_DATA"
  mkdir -p "$POSTGRES_DATA"
  chown_postgres "$POSTGRES_ROOT" "$POSTGRES_DATA"
  chmod 700 "$POSTGRES_DATA"
  as_postgres "$(postgres_bin)/initdb" -D "$POSTGRES_DATA" -U "$(postgres_superuser)" -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >>"$POSTGRES_LOG" 2>&1 \
    || fail_with_log postgres "$POSTGRES_LOG" "initdb failed"
}

postgres_start() {
  local socket=$POSTGRES_DATA/.s.PGSQL.$POSTGRES_PORT
  ((${#socket} <= 107)) || die "postgres: its socket path $socket is longer than 107 bytes; choose a shorter KIRBY_SERVICES_DIR"
  require_free_port postgres KIRBY_POSTGRES_PORT "$POSTGRES_PORT"
  mkdir -p "$POSTGRES_ROOT"
  touch "$POSTGRES_LOG"
  chown_postgres "$POSTGRES_ROOT" "$POSTGRES_LOG"
  chmod go+x "$LOG_DIR"  # pg_ctl, as the postgres user, opens its log there
  [ "$(id -u)" != 0 ] || postgres_make_reachable
  postgres_init
  # Tests only: no fsync. Socket inside the data folder, TCP on 127.0.0.1 only.
  as_postgres "$(postgres_bin)/pg_ctl" -D "$POSTGRES_DATA" -l "$POSTGRES_LOG" -w -t 60 start \
    -o "-p $POSTGRES_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$POSTGRES_DATA -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    >>"$POSTGRES_LOG" 2>&1 9>&- || fail_with_log postgres "$POSTGRES_LOG" "pg_ctl start failed"
  wait_until 60 postgres "$POSTGRES_LOG" postgres_ready
  postgres_provision
}

postgres_sql() {
  as_postgres "$(postgres_bin)/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h "$POSTGRES_DATA" \
    -p "$POSTGRES_PORT" -U "$(postgres_superuser)" -d postgres "$@"
}

# Role kirby and its databases, created only when missing.
postgres_provision() {
  postgres_sql -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kirby') THEN
        CREATE ROLE kirby LOGIN CREATEDB PASSWORD 'kirby';
      END IF; END \$\$;" >>"$POSTGRES_LOG" 2>&1 || fail_with_log postgres "$POSTGRES_LOG" "creating role kirby failed"
  local database
  for database in kirby kirby_test; do
    if [ -z "$(postgres_sql -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
      postgres_sql -c "CREATE DATABASE $database OWNER kirby" >>"$POSTGRES_LOG" 2>&1 \
        || fail_with_log postgres "$POSTGRES_LOG" "creating database $database failed"
    fi
  done
}

postgres_stop() {
  as_postgres "$(postgres_bin)/pg_ctl" -D "$POSTGRES_DATA" -m fast -w -t 30 stop >>"$POSTGRES_LOG" 2>&1 && return 0
  local pid
  pid=$(postgres_pid) && stop_pid postgres "$pid"
}
