#!/usr/bin/env bash
# wsguard benchmark: wsguard (full hardened pipeline) side by side with a raw tokio-tungstenite
# baseline, in one run, on this machine. Not part of the test run; never asserts timings.
#
#   bash bench/run.sh            # full run, ~6-8 min on the 2-core machine
#   bash bench/run.sh --quick    # smoke run, < 2 min (1 repetition, 1 s windows, no 18k idle)
#   WSG_BEFORE=/path/to/old/wsguard bash bench/run.sh
#                                # also runs that binary as `wsguard-before`, side by side with the
#                                # current one in every scenario (before/after of a change)
#   WSG_BEFORE_DROP='^pending_handshakes_per_ip' WSG_BEFORE=... bash bench/run.sh
#                                # leaves the config lines matching that regex out of the older
#                                # binary's config (keys it does not know yet)
#   KEYS=idp bash bench/run.sh   # ES256 tokens; the current binary takes its keys from an identity
#                                # provider (auth.jwks_url, served on loopback), wsguard-before
#                                # from a jwks_file holding the same key
#   ONLY=idle bash bench/run.sh  # only the scenarios whose name contains one of ONLY's words
#                                # (space-separated: echo pipelined pipelined-publish fanout-max
#                                # fanout-rate api-publish handshake handshake-proxy idle client-sdk;
#                                # "wss" selects the TLS ones)
#   ONLY=api-publish bash bench/run.sh
#                                # API_RATE (default 200) publications per second to 1,000
#                                # subscribers, made by a backend through the server API
#                                # (`wsguard serve` with [api]) and by an embedding host
#                                # (bench/src/bin/host_publisher.rs, the core linked in): server CPU
#                                # per publication and per delivery, the API's as a ratio to the host's
#   ONLY=client-sdk bash bench/run.sh
#                                # the JS client SDK (clients/js) against raw `ws` in Node, on the
#                                # same wsguard server: messages per second and their ratio
#
# Server pinned to core 0, load generator to core 1 (taskset). Every figure is the median of
# REPS runs; each run starts a fresh server process; the servers alternate order per repetition.
# Output: bench/results/<UTC timestamp>/{raw.jsonl,table.md} and the table on stdout.
# Method and results: docs/PERFORMANCE.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

if [[ $QUICK == 1 ]]; then
  REPS=1; SECS=1; WARM=0.5; BIG_IDLE=0
else
  REPS=${REPS:-3}; SECS=${SECS:-4}; WARM=${WARM:-1}; BIG_IDLE=${BIG_IDLE:-18000}
fi
SERVERS=(baseline-tt baseline-fws wsguard)
WSG_BEFORE=${WSG_BEFORE:-}
if [[ -n $WSG_BEFORE ]]; then SERVERS+=(wsguard-before); fi
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

T_START=$SECONDS
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  echo "== building (root: wsguard-cli; bench: loadgen, baselines, proxy backend, embedding host)" >&2
  (cd "$ROOT" && cargo build --release -p wsguard-cli --locked -q)
  cargo build --release --manifest-path "$ROOT/bench/Cargo.toml" -q
fi
T_BUILT=$SECONDS
WSG="$ROOT/target/release/wsguard"
BIN="$ROOT/bench/target/release"
LG=(taskset -c "$CLIENT_CPU" "$BIN/loadgen")

OUT="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"
# shellcheck source=common.sh
source "$ROOT/bench/common.sh"
PORT=${BENCH_PORT:-19100} # BENCH_PORT: the first port of a run (its key server and token config take the two below)
IDP_PORT=$((PORT - 2))
MINT=()
if [[ ${KEYS:-hmac} == idp ]]; then
  # The fixture P-256 key as a JWKS, served over plain http (allowed for a loopback jwks_url) with
  # no Cache-Control: wsguard refreshes it every auth.jwks_cache_min_secs, never per handshake.
  mkdir -p "$WORK/idp"
  openssl pkey -pubin -in "$ROOT/tests/fixtures/keys/ec-p256.pub.pem" -outform DER >"$WORK/idp/pub.der"
  python3 - "$WORK/idp/pub.der" >"$WORK/idp/jwks.json" <<'PY'
import base64, json, sys
point = open(sys.argv[1], "rb").read()[-64:]  # SPKI of a P-256 key ends with X || Y
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": b64(point[:32]), "y": b64(point[32:]),
                            "kid": "bench-1", "alg": "ES256", "use": "sig"}]}))
PY
  python3 -m http.server $IDP_PORT --bind 127.0.0.1 --directory "$WORK/idp" >/dev/null 2>&1 &
  HELPER_PIDS+=($!)
  KEY_SOURCE=$'algorithms = ["ES256"]\njwks_url = "http://127.0.0.1:'"$IDP_PORT"'/jwks.json"'
  KEY_SOURCE_BEFORE=$'algorithms = ["ES256"]\njwks_file = "'"$WORK/idp/jwks.json"'"'
  MINT=(--private-key-file "$ROOT/tests/fixtures/keys/ec-p256.pem" --kid bench-1)
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$IDP_PORT) 2>/dev/null && break; sleep 0.1; done
fi
"$WSG" check-config "$(render_config $((PORT - 1)))" >/dev/null
TOKEN="$("$WSG" token --config "$WORK/wsguard-$((PORT - 1)).toml" --sub bench --ttl-secs 900 "${MINT[@]}" | tail -n1)"

# The TLS scenarios: a self-signed certificate for localhost, trusted by the load generator.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
TLS=0 # 1: start the servers with TLS and connect over wss://
BACKEND_PID="" # the handshake-proxy scenario's backend, stopped with its server
LG_EXTRA=() # load generator arguments the server started last needs (set by start_server)
API_RATE=${API_RATE:-200} # api-publish: publications per second, by the API and by the host alike
WSGUARD_API_KEY="$(head -c 24 /dev/urandom | base64 -w0)"
export WSGUARD_API_KEY

start_server() { # name -> sets SPID, URL
  PORT=$((PORT + 1))
  LG_EXTRA=()
  local tls_args=() config
  if ((TLS)); then tls_args=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"); fi
  case "$1" in
    baseline-tt)
      taskset -c "$SERVER_CPU" "$BIN/baseline_tt" --listen "127.0.0.1:$PORT" "${tls_args[@]}" >"$WORK/$1.log" 2>&1 &
      ;;
    baseline-fws)
      taskset -c "$SERVER_CPU" "$BIN/baseline_fws" --listen "127.0.0.1:$PORT" >"$WORK/$1.log" 2>&1 &
      ;;
    wsguard | wsguard-before)
      if [[ $1 == wsguard-before ]]; then config="$(render_config $PORT before)"; else config="$(render_config $PORT)"; fi
      if ((TLS)); then
        printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$WORK/cert.pem" "$WORK/key.pem" >>"$config"
      fi
      local binary=$WSG
      [[ $1 == wsguard-before ]] && binary=$WSG_BEFORE
      taskset -c "$SERVER_CPU" "$binary" serve --config "$config" >"$WORK/$1.log" 2>&1 &
      ;;
    wsguard-proxy)
      # The current binary with a [proxy] connect endpoint: a local backend, pinned with the
      # server, answers `true` to every handshake (over kept-alive HTTP/1.1 connections).
      config="$(render_config $PORT)"
      taskset -c "$SERVER_CPU" "$BIN/proxy_backend" --listen "127.0.0.1:$((PORT + 500))" >"$WORK/proxy-backend.log" 2>&1 &
      BACKEND_PID=$!
      printf '[proxy.connect]\nurl = "http://127.0.0.1:%s/connect"\n' $((PORT + 500)) >>"$config"
      taskset -c "$SERVER_CPU" "$WSG" serve --config "$config" >"$WORK/$1.log" 2>&1 &
      ;;
    wsguard-api | wsguard-host)
      # api-publish: the benchmark config plus a server API on loopback with a key and a request
      # rate that never refuses. `wsguard serve` is published to by the load generator through the
      # API; the embedding host serves the same config and publishes by itself at the same rate.
      config="$(render_config $PORT)"
      printf '[api]\nlisten = "127.0.0.1:%s"\nkey_env = "WSGUARD_API_KEY"\nrequests_per_sec = 1000000.0\nburst = 1000000\n' \
        $((PORT + 500)) >>"$config"
      if [[ $1 == wsguard-api ]]; then
        taskset -c "$SERVER_CPU" "$WSG" serve --config "$config" >"$WORK/$1.log" 2>&1 &
        LG_EXTRA=(--via api --api-url "http://127.0.0.1:$((PORT + 500))" --api-key "$WSGUARD_API_KEY")
      else
        taskset -c "$SERVER_CPU" "$BIN/host_publisher" --config "$config" --rate "$API_RATE" --channel bench \
          >"$WORK/$1.log" 2>&1 &
        LG_EXTRA=(--via host)
      fi
      ;;
  esac
  SPID=$!
  if ((TLS)); then URL="wss://127.0.0.1:$PORT/ws"; else URL="ws://127.0.0.1:$PORT/ws"; fi
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then sleep 0.2; return 0; fi
    sleep 0.1
  done
  echo "server $1 did not start; log:" >&2; cat "$WORK/$1.log" >&2; exit 1
}
stop_server() {
  kill "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
  if [[ -n $BACKEND_PID ]]; then
    kill "$BACKEND_PID" 2>/dev/null || true
    wait "$BACKEND_PID" 2>/dev/null || true
    BACKEND_PID=""
  fi
}

# want <name>: is this scenario selected by ONLY (all are when it is empty)?
want() {
  [[ -z "${ONLY:-}" ]] && return 0
  local w
  for w in $ONLY; do [[ "$1" == *"$w"* ]] && return 0; done
  return 1
}

# run_case <scenario args...>: every server, REPS times, alternating the order.
run_case() {
  local rep srv order
  for rep in $(seq "$REPS"); do
    # Alternate the order from one repetition to the next (forward, then reversed).
    order=("${SERVERS[@]}")
    if ! ((rep % 2)); then
      local i reversed=()
      for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do reversed+=("${SERVERS[i]}"); done
      order=("${reversed[@]}")
    fi
    for srv in "${order[@]}"; do
      start_server "$srv"
      "${LG[@]}" "$@" "${LG_EXTRA[@]}" --url "$URL" --ca-file "$WORK/cert.pem" --token "$TOKEN" --server-pid "$SPID" --label "$srv" \
        --warmup-secs "$WARM" --secs "$SECS" | tee -a "$RAW" >&2
      stop_server
    done
  done
}

HS_SRC=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9
if want echo; then echo "== echo ping-pong" >&2; run_case echo --conns 50 --window 1; fi
if want pipelined; then echo "== pipelined" >&2; run_case echo --conns 50 --window 16; fi
if want pipelined-publish; then
  echo "== pipelined publish (schema-checked, acked)" >&2; run_case echo --conns 50 --window 16 --publish
fi
if want fanout-max; then echo "== fan-out, max rate" >&2; run_case fanout --subs 100 --window 8; fi
if want fanout-rate; then echo "== fan-out, fixed rate" >&2; run_case fanout --subs 100 --rate 200; fi
if want api-publish; then
  # A publication to 1,000 subscribers through the server API, against the same publication by
  # an embedding host (ServerHandle::publish), at the same fixed rate.
  echo "== api publish: server API against an embedding host (1,000 subscribers, ${API_RATE}/s)" >&2
  SAVE_SERVERS=("${SERVERS[@]}"); SERVERS=(wsguard-api wsguard-host)
  run_case fanout --subs 1000 --rate "$API_RATE" --src-addrs 127.0.0.40
  SERVERS=("${SAVE_SERVERS[@]}")
fi
if want handshake; then echo "== handshake" >&2; run_case handshake --conns 16 --src-addrs "$HS_SRC"; fi
if want handshake-proxy; then
  # The handshake with a [proxy] connect endpoint, against the plain handshake of the same run.
  echo "== handshake with a proxy connect endpoint (local backend)" >&2
  SAVE_SERVERS=("${SERVERS[@]}"); SERVERS=(wsguard wsguard-proxy)
  run_case handshake --conns 16 --src-addrs "$HS_SRC"
  SERVERS=("${SAVE_SERVERS[@]}")
fi
if want idle; then echo "== idle 1k" >&2; run_case idle-multi --conns 1000 --procs 1 --src-addrs 127.0.0.20; fi
if ((BIG_IDLE > 0)) && want idle-big; then
  echo "== idle ${BIG_IDLE} (6 client processes, 6 source addresses)" >&2
  SAVE=$REPS; REPS=1
  run_case idle-multi --conns "$BIG_IDLE" --procs 6 \
    --src-addrs 127.0.0.21,127.0.0.22,127.0.0.23,127.0.0.24,127.0.0.25,127.0.0.26
  REPS=$SAVE
fi

# The JS client SDK's own cost: wsguard-client against the raw `ws` library, both in Node on the
# client CPU, against the same wsguard server (its own figure and ratio, outside report.py's table).
if want client-sdk; then
  echo "== client SDK (Node): wsguard-client against raw ws" >&2
  (cd "$ROOT/clients/js" && npm ci --no-audit --no-fund --loglevel=error)
  start_server wsguard
  taskset -c "$CLIENT_CPU" node "$ROOT/clients/js/bench/throughput.mjs" --url "$URL" --token "$TOKEN" \
    --origin http://bench.local --channel bench --secs "$SECS" --warmup-secs "$WARM" --reps "$REPS" \
    >"$OUT/client-sdk.jsonl"
  stop_server
  cat "$OUT/client-sdk.jsonl" >&2
fi

# Over TLS: wsguard against the TLS baseline (the same tokio-tungstenite baseline behind rustls).
TLS=1; SAVE_SERVERS=("${SERVERS[@]}"); SERVERS=(baseline-tt wsguard)
if [[ -n $WSG_BEFORE ]]; then SERVERS+=(wsguard-before); fi
if want wss-echo; then echo "== wss: echo ping-pong" >&2; run_case echo --conns 50 --window 1; fi
if want wss-fanout-rate; then echo "== wss: fan-out, fixed rate" >&2; run_case fanout --subs 100 --rate 200; fi
if want wss-handshake; then echo "== wss: handshake" >&2; run_case handshake --conns 16 --src-addrs "$HS_SRC"; fi
if want wss-idle; then echo "== wss: idle 1k" >&2; run_case idle-multi --conns 1000 --procs 1 --src-addrs 127.0.0.30; fi
TLS=0; SERVERS=("${SAVE_SERVERS[@]}")

{
  echo "# wsguard benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
    "kernel $(uname -r); reps=$REPS secs=$SECS warmup=$WARM; server on cpu $SERVER_CPU, load on cpu $CLIENT_CPU"
  echo
  if [[ -s "$RAW" ]]; then python3 "$ROOT/bench/report.py" "$RAW"; fi
  if [[ -s "$OUT/client-sdk.jsonl" ]]; then
    python3 - "$OUT/client-sdk.jsonl" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).readline())
print(f"\nclient SDK (Node, window {r['window']}): wsguard-client {r['sdk_msgs_per_sec']:,} msg/s, "
      f"raw ws {r['raw_ws_msgs_per_sec']:,} msg/s, ratio {r['ratio']:.2f}; client CPU per message "
      f"{r['sdk_client_cpu_us_per_msg']} µs (SDK) against {r['raw_ws_client_cpu_us_per_msg']} µs (raw ws)")
PY
  fi
} >"$OUT/table.md"
cat "$OUT/table.md"
echo "results: $OUT (build $((T_BUILT - T_START)) s, benchmark $((SECONDS - T_BUILT)) s)" >&2
