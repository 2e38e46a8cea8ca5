#!/usr/bin/env bash
# User-space instructions per operation of two wsguard binaries (or a baseline), counted by
# valgrind's callgrind: repeatable whatever else the shared machine is doing, unlike CPU time.
# Each server runs under callgrind twice, for SHORT and LONG seconds of the same scenario; the
# difference of the two totals over the difference of the operations removes the start-up and
# the connection set-up. Only user space is counted (the kernel's share is the same for every
# server: the same system calls per message, docs/PERFORMANCE.md). Under valgrind a server is
# about 50x slower, so batching differs from a real run: compare wsguard builds with each other,
# not with the baselines (whose read-buffer memset inflates the count).
#
#   A=/path/to/old/wsguard B=target/release/wsguard bash bench/instructions.sh echo --conns 50 --window 1
#   A=... B=... ROUNDS=2 bash bench/instructions.sh fanout --subs 100 --rate 200
#   A=target/release/wsguard B_CONFIG=history bash bench/instructions.sh echo --conns 50 --window 16 --publish
#                              # one binary, two configurations: B with channel history on
#
#   TLS=1 A=... B=... bash bench/instructions.sh handshake --conns 16   # over wss://
#
# A or B may be "baseline-tt". A_CONFIG / B_CONFIG: render_config's variant for that server
# (`history`: bench/config/history.toml; see common.sh). Prints one line per server and round:
# label, Ir per op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
A=${A:?set A to a wsguard binary or baseline-tt}
B=${B:-$ROOT/target/release/wsguard}
A_CONFIG=${A_CONFIG:-}
B_CONFIG=${B_CONFIG:-}
SHORT=${SHORT:-3}
LONG=${LONG:-8}
ROUNDS=${ROUNDS:-1}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
# shellcheck source=common.sh
source "$ROOT/bench/common.sh"
PORT=${BENCH_PORT:-19700}
TOKEN="$("$B" token --config "$(render_config $((PORT - 1)))" --sub bench --ttl-secs 900 2>/dev/null | tail -n1)"
TLS=${TLS:-0}
SCHEME=ws
TLS_ARGS=()
if ((TLS)); then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
  SCHEME=wss
  TLS_ARGS=(--ca-file "$WORK/cert.pem")
fi

# count <server> <config variant> <secs> <scenario args...> -> "<ops> <Ir>"
count() {
  local server=$1 variant=$2 secs=$3 out ops
  shift 3
  PORT=$((PORT + 1))
  out="$WORK/callgrind.$PORT"
  local vg=(taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no)
  if [[ $server == baseline-tt ]]; then
    local tls=()
    if ((TLS)); then tls=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"); fi
    "${vg[@]}" "$ROOT/bench/target/release/baseline_tt" --listen "127.0.0.1:$PORT" "${tls[@]}" >"$WORK/server.log" 2>&1 &
  else
    local config
    config="$(render_config $PORT "$variant")"
    if ((TLS)); then printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$WORK/cert.pem" "$WORK/key.pem" >>"$config"; fi
    "${vg[@]}" "$server" serve --config "$config" >"$WORK/server.log" 2>&1 &
  fi
  SPID=$!
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  ops=$(taskset -c 1 "$ROOT/bench/target/release/loadgen" "$@" --url "$SCHEME://127.0.0.1:$PORT/ws" "${TLS_ARGS[@]}" --token "$TOKEN" \
    --server-pid "$SPID" --warmup-secs 0 --secs "$secs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ops"])')
  kill -TERM "$SPID"
  wait "$SPID" 2>/dev/null || true
  SPID=""
  echo "$ops $(grep -m1 -E '^(summary|totals):' "$out" | awk '{print $2}')"
}

for round in $(seq "$ROUNDS"); do
  for side in A B; do
    if [[ $side == A ]]; then server=$A variant=$A_CONFIG; else server=$B variant=$B_CONFIG; fi
    read -r ops1 ir1 < <(count "$server" "$variant" "$SHORT" "$@")
    read -r ops2 ir2 < <(count "$server" "$variant" "$LONG" "$@")
    python3 -c "print('$round', '$server${variant:+ ($variant)}', round(($ir2 - $ir1) / ($ops2 - $ops1)), 'Ir/op', '($ops1 and $ops2 ops)')"
  done
done
