#!/usr/bin/env bash
# RFC 6455 conformance: runs the Autobahn|Testsuite fuzzing client against the release `wsguard`
# binary in its conformance-test mode (`[protocol] echo = true`, see wsguard.toml beside this
# script), prints the suite's summary and exits non-zero if any case FAILED.
#
# Usage: bash tests/conformance/run.sh [REPORT_DIR]     (default: target/conformance/autobahn)
# Environment:
#   WSGUARD_AUTOBAHN_DIR              the Autobahn kit (default: ../shared/autobahn from the repo root)
#   WSGUARD_CONFORMANCE_TIMEOUT_SECS  bound on the wstest run (default 600; the suite takes ~25 s)
#
# Compression cases (12.*, 13.*) are excluded by the kit: wsguard offers no permessage-deflate.
# Expected result (same as a bare tokio-tungstenite echo server): 301 cases, 296 OK, NON-STRICT
# 6.4.3 and 6.4.4, INFORMATIONAL 7.1.6, 7.13.1 and 7.13.2 (docs/SECURITY.md#conformance).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
KIT="${WSGUARD_AUTOBAHN_DIR:-$ROOT/../shared/autobahn}"
TIMEOUT="${WSGUARD_CONFORMANCE_TIMEOUT_SECS:-600}"
REPORTS="${1:-$ROOT/target/conformance/autobahn}"
CONFIG="$ROOT/tests/conformance/wsguard.toml"

say() { printf 'conformance: %s\n' "$*"; }

[[ -x "$KIT/run.sh" && -x "$KIT/install.sh" ]] || { say "Autobahn kit not found at $KIT"; exit 2; }

say "building the release CLI"
cargo build --release -p wsguard-cli --locked
BIN="$ROOT/target/release/wsguard"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/wsguard-conformance.XXXXXX")"
SERVER_PID=""
SERVER_EXIT=""
# SIGTERM (graceful: close 1001, drain), SIGKILL after 5 s; the exit status lands in SERVER_EXIT.
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_EXIT=0
    wait "$SERVER_PID" 2>/dev/null || SERVER_EXIT=$?
    SERVER_PID=""
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# A fresh 48-byte HS256 secret for this run only.
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$WORK/hmac.secret"

say "installing the Autobahn kit (idempotent)"
bash "$KIT/install.sh"

say "starting wsguard serve --config tests/conformance/wsguard.toml"
(cd "$WORK" && exec "$BIN" serve --config "$CONFIG") 2>"$WORK/server.log" &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 100); do
    PORT="$(sed -n 's/.*"message":"listening".*"local_addr":"127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$WORK/server.log" | head -n 1)"
    [[ -n "$PORT" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$PORT" ]]; then
    cat "$WORK/server.log" >&2
    say "the server did not start"
    exit 1
fi
say "server pid $SERVER_PID listening on 127.0.0.1:$PORT"

TOKEN="$(cd "$WORK" && "$BIN" token --config "$CONFIG" --sub autobahn --ttl-secs 900)"

mkdir -p "$REPORTS"
# --strict-close: a case whose closing handshake is FAILED, WRONG CODE or UNCLEAN fails too
# (stricter than the kit's default, which fails only on the case behaviour).
set +e
bash "$KIT/run.sh" --strict-close --timeout "$TIMEOUT" --header "Authorization: Bearer $TOKEN" \
    "ws://127.0.0.1:$PORT/ws" "$REPORTS" | tee "$WORK/autobahn.out"
STATUS=${PIPESTATUS[0]}
set -e
SUMMARY="$(tail -n 1 "$WORK/autobahn.out")"

# The server must have survived the whole suite.
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    tail -n 20 "$WORK/server.log" >&2
    say "the server exited during the suite"
    STATUS=1
fi
stop_server
if [[ "$SERVER_EXIT" != 0 ]]; then
    say "the server exited with status $SERVER_EXIT on SIGTERM (want 0)"
    STATUS=1
fi
if grep -q 'panicked' "$WORK/server.log"; then
    grep 'panicked' "$WORK/server.log" | head -n 5 >&2
    say "the server log shows a panic"
    STATUS=1
fi
cp "$WORK/server.log" "$REPORTS/server.log"
say "reports in $REPORTS (index.html), server log in $REPORTS/server.log"
# The closing line: the kit's "autobahn: N passed, M failed", or a failure when the server broke.
if [[ ! "$SUMMARY" =~ ^autobahn:\ [0-9]+\ passed,\ [0-9]+\ failed$ ]]; then
    SUMMARY="autobahn: 0 passed, 1 failed"
    STATUS=1
elif [[ "$STATUS" -ne 0 && "$SUMMARY" == *", 0 failed" ]]; then
    SUMMARY="${SUMMARY%, 0 failed}, 1 failed"
fi
echo "$SUMMARY"
exit "$STATUS"
