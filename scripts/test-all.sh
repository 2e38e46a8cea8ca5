#!/usr/bin/env bash
# Runs every check and test of the project: Rust, C, Python, Node and the JavaScript client.
# This is the README's test command and what CI runs. Each language's script installs what it
# needs from the package registries on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "rustfmt"
cargo fmt --all -- --check

step "clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests (unit, integration over loopback, CLI, generated-file and docs drift)"
cargo test --workspace --locked

step "Monitoring (promtool check/test rules; dashboard and alert metrics against a live /metrics)"
bash tests/monitoring/run.sh

step "C ABI (header drift, C11 test under valgrind, C++17 example)"
bash ffi/tests/run.sh

step "Node module (napi build, generated-file drift, node --test)"
bash bindings-node/test.sh

step "RFC 6455 conformance (Autobahn|Testsuite against the release binary, echo mode)"
bash tests/conformance/run.sh

step "Adversarial black-box suite (release binary, attacks while a canary streams)"
bash tests/adversarial/run.sh

step "Fuzzing (cargo-fuzz; replays the committed seeds, then a bounded run per target)"
FUZZ_SECS="${FUZZ_SECS:-10}" bash fuzz/run.sh

step "Real browser (Debian Chromium via playwright-core: demo page, refused origin, CSWSH, the JS client SDK)"
bash tests/browser/run.sh

step "JavaScript client SDK (npm ci, typecheck, dist/ drift, node --test against wsguard serve)"
# Its browser test ran in the step above.
SKIP_BROWSER=1 bash clients/js/test.sh

step "Python package (abi3 wheel via maturin, stubtest, mypy, pytest)"
bash bindings-python/tests/run.sh
