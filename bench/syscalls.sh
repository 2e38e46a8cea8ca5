#!/usr/bin/env bash
# System calls and user/system CPU time per operation, for each server in turn, in one script.
# Where wsguard and a baseline make the same system calls per operation, the kernel's share of
# their CPU is the same work, and only the user-space share can differ: this shows which.
# Each server runs natively (pinned to core 0, the load generator to core 1, as in run.sh); after
# a 1.5 s warm-up, `perf stat` counts the server's system calls for 3 s while /proc/<pid>/stat
# gives its user and system time over the same 3 s. Divided by the operations per second that
# the load generator reports.
#
#   bash bench/syscalls.sh handshake --conns 16
#   ROUNDS=3 SERVERS="baseline-tt wsguard" bash bench/syscalls.sh fanout --subs 100 --window 8
#
# Prints, per server and round, one line per counter that is not zero: name, count per op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=${ROUNDS:-1}
read -r -a SERVERS <<<"${SERVERS:-baseline-tt wsguard}"
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
WSG="${WSG:-$ROOT/target/release/wsguard}"
BIN="$ROOT/bench/target/release"
# shellcheck source=common.sh
source "$ROOT/bench/common.sh"
PORT=${BENCH_PORT:-19750}
TOKEN="$("$WSG" token --config "$(render_config $((PORT - 1)))" --sub bench --ttl-secs 900 | tail -n1)"
CALLS=(write writev sendto sendmsg read recvfrom recvmsg epoll_wait epoll_ctl futex accept4 setsockopt
  getsockopt getpeername shutdown close mmap munmap madvise brk)
EVENTS="raw_syscalls:sys_enter,context-switches$(printf ',syscalls:sys_enter_%s' "${CALLS[@]}")"

# measure <server> <scenario args...>: prints the per-op lines
measure() {
  local server=$1
  shift
  PORT=$((PORT + 1))
  case "$server" in
    baseline-tt) taskset -c 0 "$BIN/baseline_tt" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 & ;;
    baseline-fws) taskset -c 0 "$BIN/baseline_fws" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 & ;;
    wsguard) taskset -c 0 "$WSG" serve --config "$(render_config $PORT)" >"$WORK/server.log" 2>&1 & ;;
    *) echo "unknown server $server" >&2; exit 2 ;;
  esac
  SPID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  sleep 0.3
  (
    sleep 1.5
    read -r -a before <"/proc/$SPID/stat"
    perf stat -x, -e "$EVENTS" -p "$SPID" -- sleep 3 2>"$WORK/perf" >/dev/null
    read -r -a after <"/proc/$SPID/stat"
    # Fields 14 and 15 of /proc/<pid>/stat: utime and stime in clock ticks.
    echo "$(((after[13] - before[13]) * 1000000 / $(getconf CLK_TCK))),,user_us" >>"$WORK/perf"
    echo "$(((after[14] - before[14]) * 1000000 / $(getconf CLK_TCK))),,system_us" >>"$WORK/perf"
  ) &
  local counter=$!
  taskset -c 1 "$BIN/loadgen" "$@" --url "ws://127.0.0.1:$PORT/ws" --token "$TOKEN" --server-pid "$SPID" \
    --warmup-secs 1 --secs 4 >"$WORK/load.json"
  wait "$counter"
  kill "$SPID"
  wait "$SPID" 2>/dev/null || true
  SPID=""
  python3 - "$WORK/perf" "$WORK/load.json" "$server" "$round" <<'PY'
import json, sys
load = json.load(open(sys.argv[2]))
rate = load["ops_per_sec"]
print(f"{sys.argv[4]} {sys.argv[3]}: {rate:,.0f} ops/s, {load['errors']} errors")
for line in open(sys.argv[1]):
    fields = line.strip().split(",")
    if len(fields) < 3 or not fields[0].replace(".", "").isdigit():
        continue
    per_op = float(fields[0]) / 3 / rate
    if per_op:
        print(f"  {fields[2].removeprefix('syscalls:sys_enter_'):28s} {per_op:10.4f} per op")
PY
}

for round in $(seq "$ROUNDS"); do
  for server in "${SERVERS[@]}"; do measure "$server" "$@"; done
done
