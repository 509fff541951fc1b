# pypiserver from PyPI, in its own virtualenv in the cache, serving the wheelhouse folder
# (no authentication, no fallback to PyPI, folder listing read on every request). Sourced.

PYPISERVER_VERSION=2.4.2
PYPI_VENV=$CACHE_DIR/pypiserver-$PYPISERVER_VERSION
PYPI_PIDFILE=$RUN_DIR/pypi.pid
PYPI_LOG=$LOG_DIR/pypi.log

pypi_address() { echo "127.0.0.1:$PYPI_PORT"; }

pypi_install() {
  command -v curl >/dev/null || apt_install curl  # the readiness check
  [ -f "$PYPI_VENV/.installed" ] && return 0  # written last, so a broken install is redone
  local python=${PYTHON:-python3}
  command -v "$python" >/dev/null || apt_install python3 python3-venv
  say "pypi: installing pypiserver $PYPISERVER_VERSION into $PYPI_VENV"
  rm -rf "$PYPI_VENV"
  { "$python" -m venv "$PYPI_VENV" && "$PYPI_VENV/bin/python" -m pip install -q \
      --disable-pip-version-check "pypiserver==$PYPISERVER_VERSION"; } >&2 \
    || { rm -rf "$PYPI_VENV"; die "pypi: installing pypiserver failed (see above)"; }
  touch "$PYPI_VENV/.installed"
}

pypi_pid() {
  local pid
  pid=$(read_pid "$PYPI_PIDFILE")
  pid_alive "$pid" "$PYPI_WHEELHOUSE" && echo "$pid"
}

pypi_ready() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$PYPI_PORT/simple/")" = 200 ]
}

pypi_start() {
  require_free_port pypi KIRBY_PYPI_PORT "$PYPI_PORT"
  mkdir -p "$PYPI_WHEELHOUSE"
  spawn "$PYPI_PIDFILE" "$PYPI_LOG" "$PYPI_VENV/bin/pypi-server" run -i 127.0.0.1 -p "$PYPI_PORT" \
    -a . -P . --disable-fallback --backend simple-dir "$PYPI_WHEELHOUSE"
  wait_until 30 pypi "$PYPI_LOG" pypi_ready
}

pypi_stop() {
  local pid
  pid=$(pypi_pid) || return 0
  stop_pid pypi "$pid"
  rm -f "$PYPI_PIDFILE"
}
