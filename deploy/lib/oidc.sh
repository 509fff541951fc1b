# A real OpenID Connect provider: panva's oidc-provider (npm) in the small Node server of
# deploy/oidc (users and the test client in deploy/oidc/accounts.json). Installed with `npm ci`
# from the committed lockfile into deploy/oidc/node_modules (git-ignored). Sourced.

OIDC_DIR=$DEPLOY_DIR/oidc
OIDC_PIDFILE=$RUN_DIR/oidc.pid
OIDC_LOG=$LOG_DIR/oidc.log

oidc_address() { echo "127.0.0.1:$OIDC_PORT"; }

oidc_install() {
  command -v curl >/dev/null || apt_install curl  # the readiness check
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  local lock_sum
  lock_sum=$(sha256sum "$OIDC_DIR/package-lock.json" | cut -d' ' -f1)
  # The marker, written last, names the lockfile installed: a broken or older install is redone.
  [ "$(cat "$OIDC_DIR/node_modules/.kirby-installed" 2>/dev/null)" = "$lock_sum" ] && return 0
  say "oidc: npm ci in $OIDC_DIR (oidc-provider from the npm registry)"
  (cd "$OIDC_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2 \
    || die "oidc: npm ci in $OIDC_DIR failed (see above)"
  echo "$lock_sum" >"$OIDC_DIR/node_modules/.kirby-installed"
}

oidc_pid() {
  local pid
  pid=$(read_pid "$OIDC_PIDFILE")
  pid_alive "$pid" "$OIDC_DIR/server.js" && echo "$pid"
}

oidc_ready() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
    "http://127.0.0.1:$OIDC_PORT/.well-known/openid-configuration")" = 200 ]
}

oidc_start() {
  require_free_port oidc KIRBY_OIDC_PORT "$OIDC_PORT"
  KIRBY_OIDC_PORT=$OIDC_PORT spawn "$OIDC_PIDFILE" "$OIDC_LOG" node "$OIDC_DIR/server.js"
  wait_until 30 oidc "$OIDC_LOG" oidc_ready
}

oidc_stop() {
  local pid
  pid=$(oidc_pid) || return 0
  stop_pid oidc "$pid"
  rm -f "$OIDC_PIDFILE"
}
