# Redis from Debian's redis-server: own port, 127.0.0.1 only, no persistence. Sourced.

REDIS_PIDFILE=$RUN_DIR/redis.pid
REDIS_LOG=$LOG_DIR/redis.log

redis_address() { echo "127.0.0.1:$REDIS_PORT"; }

redis_install() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  apt_install redis-server
}

redis_pid() {
  local pid
  pid=$(read_pid "$REDIS_PIDFILE")
  pid_alive "$pid" "redis-server 127.0.0.1:" && echo "$pid"
}

redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

redis_start() {
  require_free_port redis KIRBY_REDIS_PORT "$REDIS_PORT"
  mkdir -p "$SERVICES_DIR/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" \
    --dir "$SERVICES_DIR/redis" >>"$REDIS_LOG" 2>&1 9>&- || fail_with_log redis "$REDIS_LOG" "redis-server failed"
  local i
  for ((i = 0; i < 20; i++)); do  # the daemon writes its pid file right after forking
    redis_pid >/dev/null && break
    sleep 0.25
  done
  wait_until 30 redis "$REDIS_LOG" redis_ready
}

redis_stop() {
  local pid
  pid=$(redis_pid) || return 0
  stop_pid redis "$pid"
  rm -f "$REDIS_PIDFILE"
}
