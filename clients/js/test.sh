#!/usr/bin/env bash
# wsguard-client (clients/js): install the locked dev dependencies, typecheck, check that the
# committed dist/ is what the sources build to, run the Node tests against a real `wsguard serve`,
# then the SDK in real Chromium (tests/browser, the `sdk` test).
#
#   bash clients/js/test.sh          # WSGUARD_BIN=... to use a prebuilt server binary
#   SKIP_BROWSER=1 bash clients/js/test.sh
#
# The last line is `clients/js: N passed, M failed`.
set -euo pipefail
cd "$(dirname "$0")"

npm ci --no-audit --no-fund --loglevel=error
npx tsc -p tsconfig.json --noEmit

echo "build drift (dist/ must be committed as built)"
node build.mjs
if ! git diff --exit-code --stat -- dist || [[ -n "$(git status --porcelain -- dist)" ]]; then
    git status --short -- dist
    echo "dist/ differs from the sources: run 'node build.mjs' in clients/js and commit dist/"
    exit 1
fi

if [[ -z "${WSGUARD_BIN:-}" ]]; then
    echo "building wsguard-cli"
    (cd ../.. && cargo build -p wsguard-cli --locked --quiet)
    target_dir="$(cd ../.. && cargo metadata --format-version 1 --no-deps --locked |
        node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).target_directory))')"
    export WSGUARD_BIN="$target_dir/debug/wsguard"
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
timeout --kill-after=10 180 node --test --test-concurrency=1 --test-reporter=tap test/*.test.mjs 2>&1 | tee "$log" || status=$?
passed="$(grep -oE '^# pass [0-9]+' "$log" | grep -oE '[0-9]+' || echo 0)"
failed="$(grep -oE '^# fail [0-9]+' "$log" | grep -oE '[0-9]+' || echo 1)"
if [[ "$status" -ne 0 && "$failed" -eq 0 ]]; then failed=1; fi

if [[ "${SKIP_BROWSER:-0}" != 1 ]]; then
    # The browser suite builds nothing more (WSGUARD_BIN is set) and runs only the SDK's test.
    browser_status=0
    BROWSER_ONLY=sdk bash ../../tests/browser/run.sh 2>&1 | tee "$log" || browser_status=$?
    bp="$(grep -oE '^browser: [0-9]+ passed' "$log" | grep -oE '[0-9]+' || echo 0)"
    bf="$(grep -oE '[0-9]+ failed$' "$log" | tail -1 | grep -oE '[0-9]+' || echo 1)"
    if [[ "$browser_status" -ne 0 && "$bf" -eq 0 ]]; then bf=1; fi
    passed=$((passed + bp)); failed=$((failed + bf))
fi
echo "clients/js: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
