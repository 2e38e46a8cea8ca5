#!/usr/bin/env bash
# Real-browser tests: headless Debian Chromium, driven by playwright-core, against `wsguard serve`
# on loopback (see browser.test.mjs for what is tested). Installs what it needs on a fresh machine:
# Debian's chromium package (no browser download) and the locked npm packages; builds the CLI.
#
#   bash tests/browser/run.sh                      # BROWSER_TIMEOUT_SECS bounds the run (default 300)
#   WSGUARD_BIN=... bash tests/browser/run.sh      # a prebuilt server binary (no cargo build)
#   BROWSER_ONLY=sdk bash tests/browser/run.sh     # only the tests whose name matches (a regex)
#
# The last line is `browser: N passed, M failed`; the exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"

BROWSER_TIMEOUT_SECS="${BROWSER_TIMEOUT_SECS:-300}"
export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"

summary() {
    echo "browser: $1 passed, $2 failed"
}

if [[ ! -x "$CHROMIUM_BIN" ]]; then
    echo "installing Debian's chromium"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi
"$CHROMIUM_BIN" --version 2>/dev/null | grep -i chromium

# playwright-core never downloads a browser; the variable only guards against a future change.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

if [[ -z "${WSGUARD_BIN:-}" ]]; then
    echo "building wsguard-cli"
    (cd ../.. && cargo build -p wsguard-cli --locked --quiet)
    target_dir="$(cd ../.. && cargo metadata --format-version 1 --no-deps --locked |
        node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).target_directory))')"
    export WSGUARD_BIN="$target_dir/debug/wsguard"
fi
only=()
if [[ -n "${BROWSER_ONLY:-}" ]]; then only=(--test-name-pattern="$BROWSER_ONLY"); fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
timeout --kill-after=10 "$BROWSER_TIMEOUT_SECS" \
    node --test --test-concurrency=1 --test-reporter=tap "${only[@]}" browser.test.mjs 2>&1 | tee "$log" || status=$?

passed="$(grep -m1 -oE '^# pass [0-9]+' "$log" | grep -oE '[0-9]+' || true)"
failed="$(grep -m1 -oE '^# fail [0-9]+' "$log" | grep -oE '[0-9]+' || true)"
if [[ -z "$passed" || -z "$failed" ]]; then
    echo "the test run did not finish (status $status; timeout ${BROWSER_TIMEOUT_SECS}s)"
    summary "${passed:-0}" "$(( ${failed:-0} + 1 ))"
    exit 1
fi
if [[ "$status" -ne 0 && "$failed" -eq 0 ]]; then
    failed=1
fi
summary "$passed" "$failed"
[[ "$failed" -eq 0 ]]
