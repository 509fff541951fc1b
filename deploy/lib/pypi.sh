# pypiserver from PyPI, in its own virtualenv in the cache, serving the wheelhouse folder
# (no authentication, no fallback to PyPI, folder listing read on every request). Sourced.

PYPISERVER_VERSION=2.4.2
PYPI_REQUIREMENTS=("pypiserver==$PYPISERVER_VERSION" "paste==3.10.1")  # paste: a threaded HTTP server
PYPI_VENV=$CACHE_DIR/pypiserver-$PYPISERVER_VERSION
PYPI_PIDFILE=$RUN_DIR/pypi.pid
PYPI_LOG=$LOG_DIR/pypi.log

pypi_address() { echo "127.0.0.1:$PYPI_PORT"; }

pypi_install() {
  command -v curl >/dev/null || apt_install curl  # the readiness check
  # The marker, written last, names what was installed: a broken or older install is redone.
  [ "$(cat "$PYPI_VENV/.installed" 2>/dev/null)" = "${PYPI_REQUIREMENTS[*]}" ] && return 0
  local python=${PYTHON:-python3}
  command -v "$python" >/dev/null || apt_install python3 python3-venv
  say "pypi: installing pypiserver $PYPISERVER_VERSION into $PYPI_VENV"
  rm -rf "$PYPI_VENV"
  { "$python" -m venv "$PYPI_VENV" && "$PYPI_VENV/bin/python" -m pip install -q \
      --disable-pip-version-check "${PYPI_REQUIREMENTS[@]}"; } >&2 \
    || { rm -rf "$PYPI_VENV"; die "pypi: installing pypiserver failed (see above)"; }
  echo "${PYPI_REQUIREMENTS[*]}" >"$PYPI_VENV/.installed"
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
    -a . -P . --disable-fallback --backend simple-dir --server paste "$PYPI_WHEELHOUSE"
  wait_until 30 pypi "$PYPI_LOG" pypi_ready
}

pypi_stop() {
  local pid
  pid=$(pypi_pid) || return 0
  stop_pid pypi "$pid"
  rm -f "$PYPI_PIDFILE"
}
