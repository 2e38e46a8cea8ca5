#!/usr/bin/env bash
# The adversarial black-box suite: builds the release `wsguard` binary, then attacks it over
# loopback while a canary client keeps a sequenced stream going (see suite.py and
# docs/SECURITY.md#how-each-defence-is-tested). Prints one PASS/FAIL line per check and, last,
# `adversarial: N passed, M failed`; exits non-zero on any failure.
#
# Usage: bash tests/adversarial/run.sh [--keep-workdir] [--rss-limit-mib N]
# Environment: WSGUARD_ADVERSARIAL_TIMEOUT_SECS bounds the suite (default 300; it takes ~20 s).
# Needs python3 >= 3.10 with PyJWT and cryptography (installed quietly from PyPI when missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TIMEOUT="${WSGUARD_ADVERSARIAL_TIMEOUT_SECS:-300}"

echo "adversarial: building the release CLI"
cargo build --release -p wsguard-cli --locked

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "adversarial: $PYTHON is $("$PYTHON" -V 2>&1); Python >= 3.10 is needed"
    exit 2
fi
if ! "$PYTHON" -c 'import jwt, cryptography; from jwt.algorithms import RSAAlgorithm' 2>/dev/null; then
    echo "adversarial: installing PyJWT and cryptography"
    "$PYTHON" -m pip install -q --disable-pip-version-check 'PyJWT>=2.8' 'cryptography>=41'
fi

# The suite binds its client sockets to 127.0.0.2, 127.0.0.3, ... (one source address per attack);
# Linux routes all of 127.0.0.0/8 to the loopback interface.
exec timeout --kill-after=10 "$TIMEOUT" "$PYTHON" -u tests/adversarial/suite.py \
    --bin "$ROOT/target/release/wsguard" "$@"
