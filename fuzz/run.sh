#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and fails if any of them finds a crash (a panic,
# a failed assertion, a sanitizer report, a timeout or an out-of-memory).
#
#   FUZZ_SECS=20 bash fuzz/run.sh            # every target, FUZZ_SECS seconds each (default 20)
#   FUZZ_SECS=300 bash fuzz/run.sh origin    # only the named targets
#
# The committed seeds in corpus/<target>/ (including every regression input) are replayed first;
# new inputs go to a temporary corpus, so the committed one only changes by hand. A crash input is
# kept in fuzz/artifacts/<target>/ and the line to reproduce it is printed.
#
# libFuzzer instrumentation needs nightly-only compiler flags; the machine has only the stable
# toolchain, so RUSTC_BOOTSTRAP=1 unlocks them for this build (and only for it).
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION="0.13.2"
FUZZ_SECS="${FUZZ_SECS:-20}"
export RUSTC_BOOTSTRAP=1

if [[ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz ${CARGO_FUZZ_VERSION}" ]]; then
    echo "installing cargo-fuzz ${CARGO_FUZZ_VERSION}"
    cargo install cargo-fuzz --version "${CARGO_FUZZ_VERSION}" --locked
fi

# The dictionary each target starts from (dict/<name>.dict).
declare -A DICT=(
    [decode]=json [config_json]=json [config_toml]=toml [channel]=channel [origin]=origin
    [request_head]=http [token]=http [client_ip]=http [proxy_header]=proxy
)
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# cargo-fuzz has no --locked; fail here instead if Cargo.lock would have to change.
cargo fetch --locked --quiet
echo "building ${#targets[@]} fuzz targets"
cargo fuzz build

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
for target in "${targets[@]}"; do
    mkdir -p "$work/$target" "artifacts/$target"
    args=(-max_total_time="$FUZZ_SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if [[ -n "${DICT[$target]:-}" ]]; then
        args+=(-dict="dict/${DICT[$target]}.dict")
    fi
    echo "==> $target (${FUZZ_SECS}s)"
    if cargo fuzz run "$target" "$work/$target" "corpus/$target" -- "${args[@]}" >"$work/$target.log" 2>&1; then
        runs="$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$work/$target.log" | grep -o '[0-9]*$' || true)"
        echo "    ok: ${runs:-?} executions, $(find "$work/$target" -type f | wc -l) new corpus entries"
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "    FAILED:"
        # The finding itself (a panic message or a sanitizer/libFuzzer report), else the log's tail.
        if ! grep -m1 -A4 -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "$work/$target.log" |
            sed 's/^/    | /'; then
            tail -n 40 "$work/$target.log" | sed 's/^/    | /'
        fi
        for artifact in "artifacts/$target"/*; do
            [[ -e "$artifact" ]] || continue
            echo "    reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $target fuzz/$artifact"
        done
    fi
done

echo "fuzz: ${passed} passed, ${failed} failed"
[[ "$failed" -eq 0 ]]
