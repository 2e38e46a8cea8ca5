#!/usr/bin/env bash
# wsguard benchmark: wsguard (full hardened pipeline) side by side with a raw tokio-tungstenite
# baseline, in one run, on this machine. Not part of the test run; never asserts timings.
#
#   bash bench/run.sh            # full run, ~12-14 min on the 2-core machine (180 s of it churn)
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
#                                # fanout-rate api-publish handshake handshake-proxy idle client-sdk
#                                # cluster-redis cluster-nats churn history-publish history-fanout
#                                # history-memory history-recover; "wss" selects the TLS ones,
#                                # "cluster" both cluster scenarios, "history" the four history ones)
#   CLUSTER_SUBS=1000 CLUSTER_RATE=20 ONLY=cluster bash bench/run.sh
#                                # two wsguard nodes through a private redis-server / nats-server
#                                # (started on a port of this run), against the same script on one node
#   CHURN_SECS=180 CHURN_WARM=20 CHURN_CONNS=8 ONLY=churn bash bench/run.sh
#                                # connect, subscribe, receive, close in loops: server RSS growth
#   ONLY=api-publish bash bench/run.sh
#                                # API_RATE (default 200) publications per second to 1,000
#                                # subscribers, made by a backend through the server API
#                                # (`wsguard serve` with [api]) and by an embedding host
#                                # (bench/src/bin/host_publisher.rs, the core linked in): server CPU
#                                # per publication and per delivery, the API's as a ratio to the host's
#   ONLY=client-sdk bash bench/run.sh
#                                # the JS client SDK (clients/js) against raw `ws` in Node, on the
#                                # same wsguard server: messages per second and their ratio
#   ONLY=history bash bench/run.sh
#                                # channel history: wsguard against `wsguard-history` (the same
#                                # config with bench/config/history.toml): history-publish,
#                                # history-fanout, history-memory, history-recover
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
METRICS=0 # 1: wsguard servers run their admin listener (the history-memory scenario reads /metrics)
SERVER_ARGS=() # load generator arguments that depend on the server started (its metrics URL)
BACKEND_PID="" # the handshake-proxy scenario's backend, stopped with its server
API_RATE=${API_RATE:-200} # api-publish: publications per second, by the API and by the host alike
WSGUARD_API_KEY="$(head -c 24 /dev/urandom | base64 -w0)"
export WSGUARD_API_KEY

start_server() { # name -> sets SPID, URL, SERVER_ARGS
  PORT=$((PORT + 1))
  SERVER_ARGS=()
  local tls_args=() config
  if ((TLS)); then tls_args=(--tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"); fi
  case "$1" in
    baseline-tt)
      taskset -c "$SERVER_CPU" "$BIN/baseline_tt" --listen "127.0.0.1:$PORT" "${tls_args[@]}" >"$WORK/$1.log" 2>&1 &
      ;;
    baseline-fws)
      taskset -c "$SERVER_CPU" "$BIN/baseline_fws" --listen "127.0.0.1:$PORT" >"$WORK/$1.log" 2>&1 &
      ;;
    wsguard | wsguard-before | wsguard-history)
      # wsguard-history: the current binary with channel history on (bench/config/history.toml).
      case "$1" in
        wsguard-before) config="$(render_config $PORT before)" ;;
        wsguard-history) config="$(render_config $PORT history)" ;;
        *) config="$(render_config $PORT)" ;;
      esac
      if ((TLS)); then
        printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$WORK/cert.pem" "$WORK/key.pem" >>"$config"
      fi
      if ((METRICS)); then
        sed -i "s|^metrics_listen = \"\"|metrics_listen = \"127.0.0.1:$((PORT + 600))\"|" "$config"
        SERVER_ARGS=(--metrics-url "http://127.0.0.1:$((PORT + 600))/metrics")
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
        SERVER_ARGS=(--via api --api-url "http://127.0.0.1:$((PORT + 500))" --api-key "$WSGUARD_API_KEY")
      else
        taskset -c "$SERVER_CPU" "$BIN/host_publisher" --config "$config" --rate "$API_RATE" --channel bench \
          >"$WORK/$1.log" 2>&1 &
        SERVER_ARGS=(--via host)
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
      "${LG[@]}" "$@" "${SERVER_ARGS[@]}" --url "$URL" --ca-file "$WORK/cert.pem" --token "$TOKEN" --server-pid "$SPID" \
        --label "$srv" --warmup-secs "$WARM" --secs "$SECS" | tee -a "$RAW" >&2
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
  run_case handshake --conns 16 --src-addrs "$HS_SRC" --tag proxy
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

# Channel history: wsguard against wsguard-history, the same configuration with history on both
# channel rules (bench/config/history.toml), in one run (docs/PERFORMANCE.md, "History").
SAVE_SERVERS=("${SERVERS[@]}"); SERVERS=(wsguard wsguard-history)
if want history-publish; then
  echo "== history: pipelined publish, history off and on" >&2
  run_case echo --conns 50 --window 16 --publish --tag history
fi
if want history-fanout; then
  echo "== history: fan-out to 1000 subscribers at 20/s, history off and on" >&2
  run_case fanout --subs 1000 --rate 20 --tag history
fi
if want history-memory; then
  # 100 channels x 1000 (history_size): RSS growth per stored publication; `wsguard` (history
  # off) publishes the same messages, the growth history does not account for.
  echo "== history: memory per stored publication (100 channels x 1000)" >&2
  METRICS=1
  run_case history-memory --channels 100 --per-channel 1000 --prefix bench --pad 64 --tag history
  METRICS=0
fi
if want history-recover; then
  # Only with history: recovering 1000 publications against delivering the same 1000 live.
  echo "== history: recover 1000 publications with since" >&2
  SERVERS=(wsguard-history)
  run_case history-recover --messages 1000 --window 16 --tag history
fi
SERVERS=("${SAVE_SERVERS[@]}")

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

# ---- cluster: two nodes through Redis and through NATS (ONLY=cluster, cluster-redis, cluster-nats)
# Both wsguard nodes on the server CPU, the private broker (redis-server / nats-server on ports of
# this run, stopped by PID) and the load generator on the client CPU; each node's CPU is read from
# its own /proc entries, so the two nodes' figures stay apart. Every repetition runs, in
# alternating order: the same script on one node (`one-node`: the subscribers and the publisher on
# one process, the local delivery), the publisher alone on one node (`publish-only`: the local
# publish), and the two-node runs, subscribers on node B and the publisher on node A.
CLUSTER_SUBS=${CLUSTER_SUBS:-1000}
CLUSTER_RATE=${CLUSTER_RATE:-20}
BROKER_PORT=$((${BENCH_PORT:-19100} - 3)) # the private broker of this run (below the key server's port)
NODE_PIDS=()
BROKER_PID=""
WSGUARD_CLUSTER_KEY="$(head -c 48 /dev/urandom | base64 -w0)"
export WSGUARD_CLUSTER_KEY

start_broker() { # redis|nats -> BROKER_PID, BROKER_URL
  case "$1" in
    redis)
      taskset -c "$CLIENT_CPU" redis-server --port "$BROKER_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" >"$WORK/redis.log" 2>&1 &
      BROKER_URL="redis://127.0.0.1:$BROKER_PORT"
      ;;
    nats)
      taskset -c "$CLIENT_CPU" nats-server -a 127.0.0.1 -p "$BROKER_PORT" >"$WORK/nats.log" 2>&1 &
      BROKER_URL="nats://127.0.0.1:$BROKER_PORT"
      ;;
  esac
  BROKER_PID=$!
  HELPER_PIDS+=("$BROKER_PID")
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && return 0; sleep 0.1; done
  echo "broker $1 did not start" >&2; cat "$WORK/$1.log" >&2; exit 1
}
stop_broker() {
  kill "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  forget_helper "$BROKER_PID"
  BROKER_PID=""
}
forget_helper() { # pid: stopped, so no longer one for the exit clean-up to stop
  local p keep=()
  for p in "${HELPER_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  HELPER_PIDS=("${keep[@]}")
}

# start_node <name> [broker] [TOML] -> NODE_PID, NODE_URL: the benchmark config with its admin
# port on (for /readyz), with a broker a [cluster] section (signed broker messages, as
# recommended), and the TOML text given, appended.
start_node() {
  PORT=$((PORT + 1))
  local config admin=$((PORT + 600))
  config="$(render_config $PORT)"
  sed -i "s|^metrics_listen = \"\"|metrics_listen = \"127.0.0.1:$admin\"|" "$config"
  if [[ -n ${2:-} ]]; then
    printf '[cluster]\nbroker = "%s"\nurl = "%s"\nnode_id = "bench-%s"\nsigning_key_env = "WSGUARD_CLUSTER_KEY"\n' \
      "$2" "$BROKER_URL" "$1" >>"$config"
  fi
  printf '%s\n' "${3:-}" >>"$config"
  taskset -c "$SERVER_CPU" "$WSG" serve --config "$config" >"$WORK/node-$1.log" 2>&1 &
  NODE_PID=$!
  NODE_PIDS+=("$NODE_PID")
  HELPER_PIDS+=("$NODE_PID")
  NODE_URL="ws://127.0.0.1:$PORT/ws"
  for _ in $(seq 150); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" == 200 ]] && return 0
    sleep 0.1
  done
  echo "node $1 not ready; log:" >&2; cat "$WORK/node-$1.log" >&2; exit 1
}
stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_helper "$pid"
  done
  NODE_PIDS=()
}

# cluster_case <one-node|publish-only|redis|nats>: one run of the cluster script.
cluster_case() {
  local subs=$CLUSTER_SUBS
  [[ $1 == publish-only ]] && subs=0
  local args=(--subs "$subs" --rate "$CLUSTER_RATE" --token "$TOKEN" --label "$1"
    --warmup-secs "$WARM" --secs "$SECS")
  case "$1" in
    one-node | publish-only)
      start_node single
      "${LG[@]}" cluster --url "$NODE_URL" --server-pid "$NODE_PID" "${args[@]}" | tee -a "$RAW" >&2
      ;;
    redis | nats)
      start_broker "$1"
      start_node a "$1"; local pub_url=$NODE_URL pub_pid=$NODE_PID
      start_node b "$1"
      "${LG[@]}" cluster --url "$NODE_URL" --server-pid "$NODE_PID" --pub-url "$pub_url" --pub-pid "$pub_pid" \
        "${args[@]}" | tee -a "$RAW" >&2
      ;;
  esac
  stop_nodes
  if [[ -n $BROKER_PID ]]; then stop_broker; fi
}

run_cluster() {
  local cases=(one-node publish-only) rep i order
  local broker binary
  for broker in redis nats; do
    want "cluster-$broker" || continue
    binary=$broker-server
    if command -v "$binary" >/dev/null; then cases+=("$broker"); else echo "cluster-$broker skipped: no $binary on PATH" >&2; fi
  done
  echo "== cluster: ${CLUSTER_SUBS} subscribers on one node, ${CLUSTER_RATE} publications/s from another (${cases[*]})" >&2
  for rep in $(seq "$REPS"); do
    order=("${cases[@]}")
    if ! ((rep % 2)); then order=(); for ((i = ${#cases[@]} - 1; i >= 0; i--)); do order+=("${cases[i]}"); done; fi
    for i in "${order[@]}"; do cluster_case "$i"; done
  done
}
if want cluster-redis || want cluster-nats; then run_cluster; fi

# ---- churn: connect, authenticate, subscribe, receive, close, in loops (ONLY=churn) -------------
# One wsguard run of CHURN_SECS after CHURN_WARM (the server's RSS is read at the window's start and
# end and every half second); every cycle uses a new channel `churn:l<loop>c<cycle>`, allowed by a
# rule appended to the benchmark config (the same payload schema as `bench`).
run_churn() {
  local secs warm
  if ((QUICK)); then secs=${CHURN_SECS:-5}; warm=${CHURN_WARM:-2}; else secs=${CHURN_SECS:-180}; warm=${CHURN_WARM:-20}; fi
  echo "== churn: ${CHURN_CONNS:-8} loops of connect, subscribe, receive, close for ${secs} s" >&2
  start_node churn "" "$(printf '[[channels]]\npattern = "churn:{cycle}"\nsubscribe = {}\npublish = {}\nschema_file = "%s"' \
    "$ROOT/bench/config/payload.schema.json")"
  "${LG[@]}" churn --url "$NODE_URL" --server-pid "$NODE_PID" --token "$TOKEN" --label wsguard \
    --conns "${CHURN_CONNS:-8}" --warmup-secs "$warm" --secs "$secs" \
    --src-addrs 127.0.0.40,127.0.0.41,127.0.0.42,127.0.0.43,127.0.0.44,127.0.0.45,127.0.0.46,127.0.0.47 |
    tee -a "$RAW" >&2
  stop_nodes
}
if want churn; then run_churn; fi

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
