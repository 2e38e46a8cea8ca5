#!/usr/bin/env bash
# The C ABI's test command: header drift, Rust unit tests of the adapter, the C test (built with
# -Wall -Wextra -Werror -std=c11 against the committed header) driven by real WebSocket clients,
# once against libwsguard.so and once against libwsguard.a under valgrind, the C++17 example and
# its CMake build through pkg-config. Installs what it needs on a fresh machine (pinned cbindgen,
# valgrind, cmake, the driver's Python packages). Every step is bounded in time.
#
#   bash ffi/tests/run.sh               run everything; last line: `ffi: N passed, M failed`
#   bash ffi/tests/run.sh --regenerate  rewrite include/wsguard.h from ffi/src and exit
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

CBINDGEN_VERSION=0.29.4
passed=0
failed=0
skipped=0

pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$1"; }
skip() { skipped=$((skipped + 1)); printf 'SKIP %s\n' "$1"; }
step() { printf '\n==> %s\n' "$*"; }
# run NAME SECONDS CMD...: one bounded step, counted as one check.
run() {
    local name=$1 secs=$2
    shift 2
    if timeout --kill-after=10 "$secs" "$@"; then pass "$name"; else fail "$name"; fi
}

generate_header() {
    cbindgen --quiet --config ffi/cbindgen.toml --crate wsguard-ffi --output "$1" ffi
}

step "tools"
if [[ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]]; then
    timeout 1200 cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --quiet
fi
if [[ "${1:-}" == "--regenerate" ]]; then
    generate_header include/wsguard.h
    echo "include/wsguard.h regenerated"
    exit 0
fi
command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind >/dev/null)
command -v cmake >/dev/null || (apt-get update -qq && apt-get install -y -qq cmake >/dev/null) || true
python3 -c 'import websockets, jwt' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check websockets PyJWT

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wsguard-ffi.XXXXXX")
cleanup() { if [[ $failed -eq 0 ]]; then rm -rf "$WORK"; else echo "kept $WORK for inspection"; fi; }
trap cleanup EXIT

step "header drift (cbindgen $CBINDGEN_VERSION)"
generate_header "$WORK/wsguard.h"
if diff -u include/wsguard.h "$WORK/wsguard.h"; then
    pass header_matches_fresh_generation
else
    fail "header_matches_fresh_generation (run: bash ffi/tests/run.sh --regenerate)"
fi

step "build libwsguard and run the adapter's Rust tests"
run cargo_build 1200 cargo build -p wsguard-ffi --quiet
run cargo_test_ffi 1200 cargo test -p wsguard-ffi --quiet
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
LIBDIR=$TARGET/debug

step "pkg-config file"
VERSION=$(python3 -c 'import re; print(re.search(r"^version = \"([^\"]+)\"", open("Cargo.toml").read(), re.M).group(1))')
sed -e "s|@PREFIX@|$ROOT|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@INCLUDEDIR@|$ROOT/include|" -e "s|@VERSION@|$VERSION|" \
    ffi/wsguard.pc.in >"$WORK/wsguard.pc"
export PKG_CONFIG_PATH=$WORK
if [[ "$(pkg-config --modversion wsguard)" == "$VERSION" ]] && pkg-config --cflags --libs --static wsguard >/dev/null; then
    pass pkg_config_file
else
    fail pkg_config_file
fi
read -r -a CFLAGS_WSG <<<"$(pkg-config --cflags wsguard)"
read -r -a LIBS_WSG <<<"$(pkg-config --libs wsguard)"
# The system libraries a static link needs: Libs.private without -lwsguard itself.
LIBS_PRIVATE=()
for lib in $(pkg-config --libs-only-l --static wsguard); do
    [[ $lib == -lwsguard ]] || LIBS_PRIVATE+=("$lib")
done

step "compile the C test (-Wall -Wextra -Werror -std=c11), shared and static"
CC_FLAGS=(-Wall -Wextra -Werror -std=c11 -g "${CFLAGS_WSG[@]}")
run c_test_compiles_shared 120 gcc "${CC_FLAGS[@]}" ffi/tests/c/test_server.c -o "$WORK/test_server_shared" \
    "${LIBS_WSG[@]}" -Wl,-rpath,"$LIBDIR" -lpthread
# The static archive by path, so the shared library next to it cannot be picked instead.
run c_test_compiles_static 120 gcc "${CC_FLAGS[@]}" ffi/tests/c/test_server.c -o "$WORK/test_server_static" \
    "$LIBDIR/libwsguard.a" "${LIBS_PRIVATE[@]}"

# The test server's config: port 0, an HMAC secret file, channel rules, the declared RPCs.
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$WORK/hmac.secret"
cat >"$WORK/server.toml" <<EOF
[server]
listen = "127.0.0.1:0"
shutdown_grace_secs = 5.0

[origins]
allow_missing = true

[auth]
hmac_secret_file = "$WORK/hmac.secret"
issuer = "wsguard-ffi-test"
audience = "wsguard"

[limits]
rpc_timeout_secs = 2.0

# No admin listener: its default port is fixed, and tests run in parallel.
[observability]
metrics_listen = ""

[[channels]]
pattern = "room:{id}"
subscribe = {}
publish = {}

# History and presence for the host reads (no client may read either: the host is trusted).
[[channels]]
pattern = "feed:{id}"
subscribe = {}
publish = {}
history_size = 10
presence = true

[[rpc]]
method = "echo"
[[rpc]]
method = "echo_later"
[[rpc]]
method = "too_late"
[[rpc]]
method = "fail"
[[rpc]]
method = "drop"
[[rpc]]
method = "bad_json"
[[rpc]]
method = "stop_inside"
[[rpc]]
method = "whoami"
EOF

# driver NAME WAIT DEADLINE CMD...: runs the driver and adds its counts.
driver() {
    local name=$1 wait=$2 deadline=$3
    shift 3
    local log=$WORK/$name.log
    timeout --kill-after=10 $((deadline + 30)) python3 ffi/tests/driver.py --secret "$WORK/hmac.secret" \
        --config "$WORK/server.toml" --wait "$wait" --deadline "$deadline" -- "$@" >"$log" 2>&1 || true
    grep -E '^(PASS|FAIL) |not ok ' "$log" || true
    local summary
    summary=$(grep -E '^driver: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
    if [[ -z $summary ]]; then
        fail "$name (driver did not finish; see $log)"
        tail -20 "$log"
        return
    fi
    local p f
    read -r p f < <(sed -E 's/^driver: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/' <<<"$summary")
    passed=$((passed + p))
    failed=$((failed + f))
    echo "$name: $summary"
}

step "C test against libwsguard.so, real WebSocket clients"
start=$SECONDS
driver c_test_shared 10 120 "$WORK/test_server_shared" "$WORK/server.toml"
echo "($((SECONDS - start)) s)"

step "C test against libwsguard.a under valgrind"
start=$SECONDS
driver c_test_valgrind 60 600 valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
    --log-file="$WORK/valgrind.log" "$WORK/test_server_static" "$WORK/server.toml"
echo "($((SECONDS - start)) s)"
# Tokio's runtime threads leave "possibly lost" and "still reachable" blocks at exit; errors and
# definite leaks must be zero (valgrind's exit status already says so; this names the cause).
if grep -q 'ERROR SUMMARY: 0 errors' "$WORK/valgrind.log" &&
    grep -Eq 'definitely lost: 0 bytes|All heap blocks were freed' "$WORK/valgrind.log"; then
    pass valgrind_no_errors_no_definite_leaks
else
    fail valgrind_no_errors_no_definite_leaks
    grep -E 'ERROR SUMMARY|definitely lost|Invalid|uninitialised' "$WORK/valgrind.log" | head -20 || true
fi

step "C++17 example (RAII wrapper)"
run cpp_example_compiles 180 g++ -std=c++17 -Wall -Wextra -Werror -Iffi/examples "${CFLAGS_WSG[@]}" \
    ffi/examples/example.cpp -o "$WORK/example" "${LIBS_WSG[@]}" -Wl,-rpath,"$LIBDIR" -lpthread
if timeout --kill-after=5 60 "$WORK/example" "$WORK/server.toml" >"$WORK/example.log" 2>&1 &&
    grep -q '^example: ok$' "$WORK/example.log"; then
    pass cpp_example_runs
else
    fail cpp_example_runs
    cat "$WORK/example.log"
fi

step "CMake example through pkg-config"
if command -v cmake >/dev/null; then
    run cmake_example_builds 300 bash -c "cmake -S ffi/examples -B '$WORK/cmake' >'$WORK/cmake.log' 2>&1 &&
        cmake --build '$WORK/cmake' >>'$WORK/cmake.log' 2>&1 || { cat '$WORK/cmake.log'; exit 1; }"
else
    skip "cmake_example_builds (cmake unavailable)"
fi

printf '\n'
if [[ $skipped -gt 0 ]]; then
    echo "ffi: $passed passed, $failed failed, $skipped skipped"
else
    echo "ffi: $passed passed, $failed failed"
fi
[[ $failed -eq 0 ]]
