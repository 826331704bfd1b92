#!/usr/bin/env bash
# What kotel costs the host, measured side by side in one run, rounds interleaved:
#   getppid    ns per getppid(2), a call no probe is about (kotel-host-loop, pinned);
#   pingpong   ns per round trip of two processes on one CPU passing a byte over pipes
#              (4 syscalls, 2 blocked switch-outs, 2 wakeups a round trip);
#   nginx      requests/s of nginx (Debian's nginx-light, 1 worker, a 2 768-byte page,
#              sendfile on) under wrk over loopback (1 thread, 8 connections);
#   writev     ns per 1-byte writev to /dev/null (kotel-writev-loop, pinned).
#   tcpsend    ns per 64-byte send on a loopback TCP connection (kotel-host-loop, pinned).
# Each figure runs untraced and under `kotel run` with its defaults (mode kotel); `kotel run
# --probes all` adds the writev probe (mode kotel_all). The modes floor_tcp and
# floor_tcp_timed hold, instead of kotel, empty programs on the TCP probe's two socket
# tracepoints, or the least a timer of TCP sends does there (start in task storage, difference
# at the end): what any per-send timer on those hooks costs. KOTEL_BASE_BIN adds the modes
# base and base_all: the same with another build, for an A/B of a change in the same run.
# The median of each (figure, mode) is printed with its ratio to untraced.
# Usage: scripts/bench-host.sh [rounds]     (root; installs nginx-light and wrk if missing)
# KOTEL_BENCH_FIGURES and KOTEL_BENCH_MODES pick subsets. Only processes this script started
# are stopped, each by its pid.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
for pkg in nginx-light wrk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
done
rounds="${1:-3}"
figures="${KOTEL_BENCH_FIGURES:-getppid pingpong nginx tcpsend writev}"
modes="${KOTEL_BENCH_MODES:-untraced floor_tcp floor_tcp_timed kotel kotel_all${KOTEL_BASE_BIN:+ base base_all}}"
# The floor programs and the benchmark loops that attach them need kotel-e2e's bench feature.
cargo build -q --release -p kotel-collector -p kotel-e2e --features kotel-e2e/bench
host_loop=./target/release/kotel-host-loop
writev_loop=./target/release/kotel-writev-loop
cpu=$(( $(nproc) - 1 ))
tmp=$(mktemp -d)
agent_pid=""
nginx_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# nginx on a free loopback port, its config and files in $tmp; its pid from its pid file.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$tmp/www" "$tmp/nginx"
python3 -c 'import sys; sys.stdout.write(("<p>kotel bench page</p>\n" * 200)[:2768])' > "$tmp/www/index.html"
chmod 755 "$tmp" "$tmp/www"; chmod 644 "$tmp/www/index.html"  # nginx's workers are not root
cat > "$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $tmp/nginx/body;
  server {
    listen 127.0.0.1:$port;
    root $tmp/www;
  }
}
CONF
if [[ " $figures " == *" nginx "* ]]; then
  nginx -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log"
  for _ in $(seq 1 100); do [ -s "$tmp/nginx/nginx.pid" ] && break; sleep 0.05; done
  nginx_pid=$(cat "$tmp/nginx/nginx.pid")
fi

start_agent() { # marker binary [args...]
  local marker=$1; shift
  "$@" >"$tmp/agent.out" 2>"$tmp/agent.err" &
  agent_pid=$!
  for _ in $(seq 1 300); do
    grep -q "$marker" "$tmp/agent.err" && return 0
    kill -0 "$agent_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "kotel did not attach:" >&2; cat "$tmp/agent.err" >&2; exit 1
}
stop_agent() { # kotel flushes on SIGINT and must exit 0; the floor holder dies of SIGTERM
  # (a background job of a script ignores SIGINT)
  if [ "$1" = floor ]; then kill -TERM "$agent_pid"; else kill -INT "$agent_pid"; fi
  if wait "$agent_pid"; then :; elif [ "$1" != floor ]; then
    echo "kotel failed:" >&2; cat "$tmp/agent.err" >&2; exit 1
  fi
  agent_pid=""
}

measure() { # figure → one number on stdout
  case "$1" in
    getppid) "$host_loop" getppid --calls 5000000 --cpu "$cpu" | sed -n 's/.*"ns_per_call":\([0-9.]*\).*/\1/p' ;;
    pingpong) "$host_loop" pingpong --calls 200000 --cpu "$cpu" | sed -n 's/.*"ns_per_call":\([0-9.]*\).*/\1/p' ;;
    writev) "$writev_loop" --calls 2000000 --cpu "$cpu" | sed -n 's/.*"ns_per_call":\([0-9.]*\).*/\1/p' ;;
    tcpsend) "$host_loop" tcpsend --calls 500000 --cpu "$cpu" | sed -n 's/.*"ns_per_call":\([0-9.]*\).*/\1/p' ;;
    nginx) wrk -t1 -c8 -d4s "http://127.0.0.1:$port/index.html" | awk '/^Requests\/sec:/ { print $2 }' ;;
  esac
}

for r in $(seq 1 "$rounds"); do
  for m in $modes; do
    case "$m" in
      untraced) ;;
      floor_tcp) start_agent "floor attached" "$host_loop" hold --floor tcp ;;
      floor_tcp_timed) start_agent "floor attached" "$host_loop" hold --floor tcp_timed ;;
      kotel) start_agent kotel.run.attached ./target/release/kotel run --out "$tmp/out" ;;
      kotel_all) start_agent kotel.run.attached ./target/release/kotel run --out "$tmp/out" --probes all ;;
      base) start_agent kotel.run.attached "${KOTEL_BASE_BIN:?}" run --out "$tmp/out" ;;
      base_all) start_agent kotel.run.attached "${KOTEL_BASE_BIN:?}" run --out "$tmp/out" --probes writev,tcp_send,runqueue,offcpu ;;
      *) echo "unknown mode $m" >&2; exit 1 ;;
    esac
    for f in $figures; do
      v=$(measure "$f")
      [ -n "$v" ] || { echo "figure $f under $m produced no measurement" >&2; exit 1; }
      echo "$f $m $v" >> "$tmp/results"
      echo "round $r: $f $m $v" >&2
    done
    [ -n "$agent_pid" ] && stop_agent "${m%%_*}"
  done
done

python3 - "$tmp/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f, m, v = line.split()
    rows.setdefault(f, {}).setdefault(m, []).append(float(v))
units = {"getppid": "ns/call", "pingpong": "ns/round trip", "nginx": "requests/s",
         "tcpsend": "ns/send", "writev": "ns/call"}
print(f"{'figure':<10}{'mode':<16}{'median':>12}  {'unit':<14}{'vs untraced':>12}{'added':>10}")
for f, by_mode in rows.items():
    base = statistics.median(by_mode["untraced"]) if "untraced" in by_mode else None
    for m, vals in by_mode.items():
        med = statistics.median(vals)
        ratio = med / base if base else float("nan")
        added = med - base if base is not None else float("nan")
        print(f"{f:<10}{m:<16}{med:>12.1f}  {units[f]:<14}{ratio:>11.3f}x{added:>10.1f}")
PY
