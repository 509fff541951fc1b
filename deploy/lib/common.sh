# Shared helpers for deploy/services: settings, pid files, bounded waits, logs. Sourced, not run.

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(dirname "$DEPLOY_DIR")
SERVICES_DIR=$(realpath -m "${KIRBY_SERVICES_DIR:-$REPO_DIR/.services}")
CACHE_DIR=$(realpath -m "${KIRBY_SERVICES_CACHE:-${HOME:-/root}/.cache/kirby-services}")
KAFKA_PORT=${KIRBY_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KIRBY_KAFKA_CONTROLLER_PORT:-9093}
REDIS_PORT=${KIRBY_REDIS_PORT:-6390}
POSTGRES_PORT=${KIRBY_POSTGRES_PORT:-5439}
PYPI_PORT=${KIRBY_PYPI_PORT:-8081}
LDAP_PORT=${KIRBY_LDAP_PORT:-3890}
LDAPS_PORT=${KIRBY_LDAPS_PORT:-6360}
OIDC_PORT=${KIRBY_OIDC_PORT:-9400}
RUN_DIR=$SERVICES_DIR/run
LOG_DIR=$SERVICES_DIR/logs
PYPI_WHEELHOUSE=$SERVICES_DIR/wheelhouse

say() { echo "services: $*" >&2; }
die() { say "error: $*"; exit 1; }

for port_variable in KAFKA_PORT KAFKA_CONTROLLER_PORT REDIS_PORT POSTGRES_PORT PYPI_PORT LDAP_PORT LDAPS_PORT OIDC_PORT; do
  [[ ${!port_variable} =~ ^[0-9]+$ ]] || die "KIRBY_$port_variable='${!port_variable}' is not a port number"
done

prepare_dirs() { mkdir -p "$RUN_DIR" "$LOG_DIR" "$CACHE_DIR"; }

# pid_alive PID MARKER: true when PID runs and its command line contains MARKER
# (guards against a stale pid file whose number now belongs to another process).
pid_alive() {
  local pid=$1 marker=$2
  [[ $pid =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"
}

# read_pid FILE: the first line of a pid file, or nothing.
read_pid() { [ -f "$1" ] && head -n1 "$1" | tr -d '[:space:]' || true; }

# wait_until SECONDS NAME LOG CHECK...: run CHECK every half second until it succeeds; on timeout,
# or when the service's process is gone, print the log's tail and fail.
wait_until() {
  local seconds=$1 name=$2 log=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! "${name}_pid" >/dev/null; then
      fail_with_log "$name" "$log" "its process exited while starting"
    fi
    if ((SECONDS >= deadline)); then
      fail_with_log "$name" "$log" "not ready after ${seconds}s"
    fi
    sleep 0.5
  done
}

fail_with_log() {
  local name=$1 log=$2 reason=$3
  say "$name: $reason; last lines of $log:"
  tail -n 40 "$log" >&2 2>/dev/null || true
  exit 1
}

# stop_pid NAME PID: SIGTERM, wait up to 30 s, then SIGKILL. Only ever the pid from our pid file.
stop_pid() {
  local name=$1 pid=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 60; i++)); do
    [ -e "/proc/$pid" ] || return 0
    sleep 0.5
  done
  say "$name: pid $pid did not stop in 30s, killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

# spawn PIDFILE LOG COMMAND...: start COMMAND detached from this shell, output to LOG.
spawn() {
  local pidfile=$1 log=$2
  shift 2
  setsid nohup "$@" </dev/null >>"$log" 2>&1 9>&- &  # fd 9: deploy/services' lock
  echo $! >"$pidfile"
}

# require_free_port NAME VARIABLE PORT: fail with one clear line when something else listens there.
require_free_port() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
    die "$1: port $3 on 127.0.0.1 is taken by another process; choose another one with $2"
  fi
}

APT_UPDATED=
apt_install() {
  command -v apt-get >/dev/null || die "apt-get is missing: install $* yourself"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ]; then
    say "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || die "apt-get update failed"
    # require_free_port NAME VARIABLE PORT: fail with one clear line when something else listens there.
require_free_port() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
    die "$1: port $3 on 127.0.0.1 is taken by another process; choose another one with $2"
  fi
}

APT_UPDATED=1
  fi
  say "apt-get install $*"
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >&2 || die "apt-get install $* failed"
}
