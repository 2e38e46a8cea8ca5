#!/usr/bin/env bash
# Builds and tests the Node package `wsguard`: installs the locked npm dependencies, builds the
# native module with @napi-rs/cli, checks that the committed generated files (index.js,
# index.d.ts) equal freshly generated ones, then runs the node:test suite over real sockets.
#
# Needs a Rust toolchain and Node >= 20.17 with npm; reaches only the npm registry and crates.io.
# Usage: bindings-node/test.sh            (debug build: fastest)
#        WSGUARD_NODE_RELEASE=1 bindings-node/test.sh   (the release build that would ship)
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: node $(node --version), npm $(npm --version), $(cargo --version)"

step "npm ci (package-lock.json)"
timeout 600 npm ci --no-audit --no-fund

# napi rewrites index.js / index.d.ts in place; keep the committed ones to compare with.
committed="$(mktemp -d)"
trap 'rm -rf "$committed"' EXIT
cp index.js index.d.ts "$committed/"

profile=()
if [[ "${WSGUARD_NODE_RELEASE:-}" == 1 ]]; then profile=(--release); fi
step "napi build --platform ${profile[*]}"
timeout 1800 npx napi build --platform "${profile[@]}"

step "generated files match the committed ones"
drift=0
for file in index.js index.d.ts; do
  if ! diff -u "$committed/$file" "$file"; then drift=1; fi
done
if [[ $drift == 1 ]]; then
  cp "$committed/index.js" "$committed/index.d.ts" .
  echo "index.js / index.d.ts drifted from the Rust sources: run 'npx napi build --platform' in" >&2
  echo "bindings-node/ and commit the regenerated files (the committed ones were restored)." >&2
  exit 1
fi

step "node --test"
timeout 300 node --test --test-timeout=60000 __test__/
