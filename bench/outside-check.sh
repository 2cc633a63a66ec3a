#!/usr/bin/env bash
# The outside check of the gateway's figures: an outside load generator, sseload, against its own
# trivial fan-out server, sse-refserver (the loopback floor), and the gateway, side by side in one
# invocation (README.md, the benchmarks). Not part of `make bench`:
# the repository never needs sseload to build or bench; this only runs it where it is.
#
#   SSELOAD=DIR bench/outside-check.sh OUT.jsonl [REPS] [SCENARIO...]
#
# DIR holds release builds of `sseload` and `sse-refserver` (their own Cargo project:
# `cargo build --release --target-dir DIR/..`). Scenarios: S1 S2 S3 S4 (default), P1, REPS
# runs of each (default 3), each run on freshly started servers. Each run appends one JSON line
# to OUT.jsonl, labelled `<target>-<scenario>`; `bench/outside-summary.py OUT.jsonl` prints
# the medians and the gateway's ratios to the floor. Env: GW (the gateway binary, default
# target/release/sse-gateway), GWENV (more VAR=value for the gateway), REDIS_PORT (6411),
# PORT (7711), PERF (a path: `perf record` the servers of PERF_TARGETS, default gw, into PERF.<target>),
# FLOOR_BYTES (the size of the floor's frames: by default its messages are sseload's own
# 42-byte frames; `match` pads them to the gateway's, 299 bytes, since the client's cost of a
# delivery grows with its bytes and both share this machine's CPUs).
set -euo pipefail
out=${1:?usage: SSELOAD=DIR bench/outside-check.sh OUT.jsonl [REPS] [SCENARIO...]}
reps=${2:-3}
shift $(( $# >= 2 ? 2 : $# ))
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(S1 S2 S3 S4)
dir=${SSELOAD:?SSELOAD=DIR: where the release builds of sseload and sse-refserver are}
load=$dir/sseload
ref=$dir/sse-refserver
gw=${GW:-target/release/sse-gateway}
rport=${REDIS_PORT:-6411}
port=${PORT:-7711}
command -v redis-server >/dev/null || { echo "redis-server not found (make deps-redis)" >&2; exit 2; }
for b in "$load" "$ref" "$gw"; do [ -x "$b" ] || { echo "not found: $b" >&2; exit 2; }; done
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
redis_pid=
server_pid=
stop() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    server_pid=
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
    redis_pid=
}
trap 'stop; rm -rf "$work"' EXIT

wait_port() { # bounded: 10 s
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

start() { # target
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
        --daemonize no >"$work/redis.log" 2>&1 &
    redis_pid=$!
    wait_port "$rport"
    case $1 in
    ref)
        "$ref" --listen "127.0.0.1:$port" --redis "127.0.0.1:$rport" rakuda:realtime:orders \
            >"$work/server.log" 2>&1 &
        ;;
    gw)
        # shellcheck disable=SC2086
        env REDIS_URL="redis://127.0.0.1:$rport" HTTP_ADDR="127.0.0.1:$port" \
            SSE_DEBOUNCE_WINDOW=0 AUTH_MODE=none RUST_LOG=warn \
            RAKUDA__MAX_CONNECTIONS=1000000 RAKUDA__MAX_CONNECTIONS_PER_CLIENT=1000000 \
            RAKUDA__RESUME_BURST=1000000 RAKUDA__MAX_PENDING_CONNECTIONS=1000000 \
            RAKUDA__AUTH__PUBLISH_RATE_PER_SEC=1000000000 RAKUDA__AUTH__PUBLISH_BURST=1000000000 \
            ${GWENV:-} "$gw" >"$work/server.log" 2>&1 &
        ;;
    esac
    server_pid=$!
    wait_port "$port"
}

payload='{"channel":"orders","type":"ORDER_RECEIVED","payload":{"id":"o{seq}","action":"created","data":{"t0":{t0},"seq":{seq}}}}'
for s in "${scenarios[@]}"; do
    case $s in
    S1) args=(-n 10000 --src-ips 4 -m 0 --settle 3) ;;
    S2) args=(-n 1000 -m 2000 -r 1000 --t0-scheduled --drain-timeout 60) ;;
    S3) args=(-n 10000 --src-ips 4 -m 200 -r 50 --t0-scheduled --drain-timeout 60) ;;
    S4) args=(-n 1000 -m 10000 -r 0 --drain-timeout 60) ;;
    # The publish path alone: S4's burst with one subscriber.
    P1) args=(-n 1 -m 10000 -r 0 --drain-timeout 60) ;;
    *) echo "unknown scenario $s (S1 S2 S3 S4 P1)" >&2; exit 2 ;;
    esac
    for _ in $(seq "$reps"); do
        for t in ref gw; do
            start "$t"
            if [ "$t" = ref ]; then
                url="http://127.0.0.1:$port/"
                pub=(--pub-redis "127.0.0.1:$rport" rakuda:realtime:orders)
                if [ "${FLOOR_BYTES:-}" = match ]; then
                    # `data: ` + this + two newlines: 299 bytes with 16-digit t0s and 4-digit seqs, as the gateway's frames of S4.
                    pub+=(--payload "{\"t0\":{t0},\"seq\":{seq},\"pad\":\"$(printf '%*s' 247 '' | tr ' ' x)\"}")
                fi
            else
                url="http://127.0.0.1:$port/api/realtime/events?channels=orders"
                pub=(--pub-http "http://127.0.0.1:$port/api/realtime/publish" --pub-conns 4 --payload "$payload")
            fi
            perf_pid=
            if [ -n "${PERF:-}" ] && [[ " ${PERF_TARGETS:-gw} " == *" $t "* ]]; then
                perf record -F 999 --call-graph dwarf,16384 -p "$server_pid" -o "$PERF.$t" 2>"$work/perf.log" &
                perf_pid=$!
            fi
            "$load" --url "$url" "${args[@]}" "${pub[@]}" --server-pid "$server_pid" \
                --label "$t-$s" >>"$out" 2>"$work/load.log" || { cat "$work/load.log" >&2; exit 1; }
            if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
            stop
        done
    done
done
