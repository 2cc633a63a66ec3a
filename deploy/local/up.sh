#!/usr/bin/env bash
# `make up` / `make down`: the docker-compose topology as local processes on loopback, since
# Docker cannot run here: redis-server (AOF on), two gateways behind nginx (Debian's, with the
# same SSE settings as the compose file: deploy/nginx/locations.conf), the worker-emitter, the
# stats-aggregator and the sinks (deploy/k8s/base/sinks.toml, as compose: stock-outs into the
# `ops` user's bell on gateway-1, with a service key made at the first `up`). `down` stops exactly the processes `up` started (pid files, checked
# against each process's command line).
#
#   deploy/local/up.sh up | down | status | stop <name> | start <name> | restart <name>
#
# Settings (environment): UP_DIR (state, logs; default .local/up), UP_BIN_DIR (the binaries;
# default target/release), ports UP_NGINX_PORT 8080, UP_GW1_PORT 8081, UP_GW2_PORT 8082,
# UP_WORKER_PORT 9101, UP_AGG_PORT 9102, UP_SINKS_PORT 9103, UP_REDIS_PORT 6390; UP_REDIS_URL
# (default redis://127.0.0.1:UP_REDIS_PORT) is where the services reach Redis; UP_SINKS_CONFIG
# the sinks' routes and destinations (default deploy/k8s/base/sinks.toml). Other variables (RUST_LOG, ...)
# pass through to every service; UP_GATEWAY_<VAR>=v sets <VAR>=v for the gateways only
# (e.g. UP_GATEWAY_RAKUDA__DRAIN_GRACE_MS=5000).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${UP_DIR:-$ROOT/.local/up}"
BIN="${UP_BIN_DIR:-$ROOT/target/release}"
NGINX_PORT="${UP_NGINX_PORT:-8080}"
GW1_PORT="${UP_GW1_PORT:-8081}"
GW2_PORT="${UP_GW2_PORT:-8082}"
WORKER_PORT="${UP_WORKER_PORT:-9101}"
AGG_PORT="${UP_AGG_PORT:-9102}"
SINKS_PORT="${UP_SINKS_PORT:-9103}"
REDIS_PORT="${UP_REDIS_PORT:-6390}"
# Where the services reach Redis: itself, or a fault proxy in front of it (`make soak`'s
# network-fault modes).
REDIS_URL="${UP_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"
SERVICES=(redis gateway-1 gateway-2 worker-emitter stats-aggregator sinks nginx)
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

mkdir -p "$DIR/pids" "$DIR/logs"
# The sinks' key on the gateways (auth.service_keys.sinks): made once, kept with the state.
if [ ! -s "$DIR/sinks.key" ]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/sinks.key")
fi
SINKS_KEY="$(cat "$DIR/sinks.key")"

pidfile() { echo "$DIR/pids/$1.pid"; }

# The pid of a service this script started, if that process still runs the expected program.
running_pid() {
  local f pid expect
  f="$(pidfile "$1")"
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  case "$1" in
    redis) expect=redis-server ;;
    nginx) expect=nginx ;;
    gateway-*) expect=sse-gateway ;;
    *) expect="$1" ;;
  esac
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$expect"; then
    echo "$pid"
  else
    rm -f "$f"
    return 1
  fi
}

wait_http() { # name port path
  local i
  for i in $(seq 1 200); do
    if HTTP_ADDR="127.0.0.1:$2" "$BIN/rakuda-healthcheck" "$3" 2>/dev/null; then return 0; fi
    # Alive at all (its command line may still be the forking shell's for a moment).
    if ! kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; then
      echo "$1 exited during start-up; its log:" >&2
      tail -20 "$DIR/logs/$1.log" >&2
      return 1
    fi
    sleep 0.05
  done
  echo "$1 did not answer $3 on port $2 within 10 s" >&2
  return 1
}

start_one() {
  local name="$1"
  if running_pid "$name" >/dev/null; then echo "$name is already running"; return 0; fi
  local log="$DIR/logs/$name.log"
  case "$name" in
    redis)
      mkdir -p "$DIR/redis"
      redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DIR/redis" --appendonly yes \
        --save "" --daemonize no >>"$log" 2>&1 &
      echo $! >"$(pidfile "$name")"
      local i
      for i in $(seq 1 200); do
        # PONG, not just an answer: while it loads its AOF Redis answers LOADING, and a
        # service started then exits at its first command.
        [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
      done
      echo "redis-server did not start; its log:" >&2; tail -20 "$log" >&2; return 1
      ;;
    gateway-1 | gateway-2)
      local port="$GW1_PORT" extra=() v
      [ "$name" = gateway-2 ] && port="$GW2_PORT"
      for v in $(compgen -v UP_GATEWAY_ || true); do extra+=("${v#UP_GATEWAY_}=${!v}"); done
      # A development topology: open unless AUTH_MODE (and a key) says otherwise.
      env AUTH_MODE="${AUTH_MODE:-none}" "${extra[@]}" REDIS_URL="$REDIS_URL" INSTANCE_ID="$name" HTTP_ADDR="127.0.0.1:$port" \
        RAKUDA__TRUST_FORWARDED_FOR=true RAKUDA__AUTH__SERVICE_KEYS__SINKS="$SINKS_KEY" "$BIN/sse-gateway" >>"$log" 2>&1 &
      echo $! >"$(pidfile "$name")"
      wait_http "$name" "$port" /readyz
      ;;
    worker-emitter)
      REDIS_URL="$REDIS_URL" INSTANCE_ID="$name" HTTP_ADDR="127.0.0.1:$WORKER_PORT" \
        "$BIN/worker-emitter" >>"$log" 2>&1 &
      echo $! >"$(pidfile "$name")"
      wait_http "$name" "$WORKER_PORT" /healthz
      ;;
    stats-aggregator)
      REDIS_URL="$REDIS_URL" INSTANCE_ID="$name" HTTP_ADDR="127.0.0.1:$AGG_PORT" \
        "$BIN/stats-aggregator" >>"$log" 2>&1 &
      echo $! >"$(pidfile "$name")"
      wait_http "$name" "$AGG_PORT" /healthz
      ;;
    sinks)
      REDIS_URL="$REDIS_URL" INSTANCE_ID="$name" HTTP_ADDR="127.0.0.1:$SINKS_PORT" \
        CONFIG_FILE="${UP_SINKS_CONFIG:-$ROOT/deploy/k8s/base/sinks.toml}" SINKS_SERVICE_KEY="$SINKS_KEY" \
        RAKUDA__DESTINATIONS__BELL__URL="http://127.0.0.1:$GW1_PORT" "$BIN/sinks" >>"$log" 2>&1 &
      echo $! >"$(pidfile "$name")"
      wait_http "$name" "$SINKS_PORT" /readyz
      ;;
    nginx)
      mkdir -p "$DIR/nginx"
      local user_line=""
      [ "$(id -u)" = 0 ] && user_line="user root root;"
      cat >"$DIR/nginx/nginx.conf" <<CONF
# Rendered by deploy/local/up.sh; the locations are the compose file's.
$user_line
daemon off;
worker_processes 1;
pid $DIR/nginx/nginx.pid;
error_log $DIR/logs/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $DIR/nginx/client;
    proxy_temp_path $DIR/nginx/proxy;
    fastcgi_temp_path $DIR/nginx/fastcgi;
    uwsgi_temp_path $DIR/nginx/uwsgi;
    scgi_temp_path $DIR/nginx/scgi;
    upstream gateways {
        # Streams are long: a new one goes to the gateway holding the fewest, so those a
        # gateway sheds above its fair share land where there is room.
        least_conn;
        server 127.0.0.1:$GW1_PORT max_fails=1 fail_timeout=2s;
        server 127.0.0.1:$GW2_PORT max_fails=1 fail_timeout=2s;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        include $ROOT/deploy/nginx/locations.conf;
    }
}
CONF
      "$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/logs/nginx-error.log" >>"$log" 2>&1 &
      echo $! >"$(pidfile "$name")"
      wait_http "$name" "$NGINX_PORT" /healthz
      ;;
    *) echo "unknown service $name (one of ${SERVICES[*]})" >&2; return 2 ;;
  esac
}

stop_one() {
  local name="$1" pid i
  pid="$(running_pid "$name")" || { rm -f "$(pidfile "$name")"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  # Gateways drain (20 s at most by default); then it is killed.
  for i in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$(pidfile "$name")"; return 0; }
    sleep 0.05
  done
  echo "$name did not stop within 30 s: kill -9" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$(pidfile "$name")"
}

case "${1:-up}" in
  up)
    for s in "${SERVICES[@]}"; do start_one "$s"; done
    echo "rakuda-realtime topology is up (logs in $DIR/logs):"
    echo "  dashboard and API via nginx  http://127.0.0.1:$NGINX_PORT"
    echo "  gateways                     http://127.0.0.1:$GW1_PORT  http://127.0.0.1:$GW2_PORT"
    echo "  worker-emitter, aggregator   http://127.0.0.1:$WORKER_PORT/metrics  http://127.0.0.1:$AGG_PORT/metrics"
    echo "  sinks (stock-outs -> ops)    http://127.0.0.1:$SINKS_PORT/metrics"
    echo "  redis                        $REDIS_URL"
    echo "make down stops them."
    ;;
  down)
    # The load balancer first, Redis last.
    for s in nginx sinks gateway-1 gateway-2 worker-emitter stats-aggregator redis; do stop_one "$s"; done
    echo "rakuda-realtime topology is down"
    ;;
  status)
    for s in "${SERVICES[@]}"; do
      if pid="$(running_pid "$s")"; then echo "$s running (pid $pid)"; else echo "$s stopped"; fi
    done
    ;;
  stop) stop_one "$2" ;;
  start) start_one "$2" ;;
  restart) stop_one "$2"; start_one "$2" ;;
  *) echo "usage: $0 up | down | status | stop <name> | start <name> | restart <name>" >&2; exit 2 ;;
esac
