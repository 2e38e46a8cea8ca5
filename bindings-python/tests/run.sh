#!/usr/bin/env bash
# Builds the abi3 wheel of the `wsguard` Python package, installs it into bindings-python/.venv,
# checks the stubs against the built module and runs the pytest suite over real sockets.
#
#   bash bindings-python/tests/run.sh [pytest args...]
#
# Needs Python >= 3.9 with venv and pip (PYTHON=python3.11 to choose one), a Rust toolchain and
# PyPI. Every step is bounded in time.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

python="${PYTHON:-python3}"
venv="$here/.venv"
wheels="$here/dist"

step() { printf '\n==> %s\n' "$*"; }

step "venv and test tools ($venv)"
if [ ! -x "$venv/bin/python" ]; then
    # Debian's system Python ships venv without ensurepip; virtualenv from PyPI then stands in.
    "$python" -m venv "$venv" 2>/dev/null || {
        rm -rf "$venv"
        PIP_BREAK_SYSTEM_PACKAGES=1 timeout 300 "$python" -m pip install --quiet --disable-pip-version-check \
            --user virtualenv
        "$python" -m virtualenv --quiet "$venv"
    }
fi
timeout 600 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

step "build the abi3 wheel (maturin)"
rm -rf "$wheels"
# A debug build (the suite needs no optimiser; the release wheel is `maturin build --release`).
# --compatibility linux: this wheel is for this machine only, so no manylinux policy audit.
timeout 1500 "$venv/bin/maturin" build --quiet --interpreter "$venv/bin/python" --out "$wheels" \
    --compatibility linux
timeout 300 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
    "$wheels"/wsguard-*.whl

# Run from the tests folder so `import wsguard` finds the installed wheel, not python/wsguard.
cd "$here/tests"

step "stubs match the native module (mypy.stubtest); package and tests type-check (mypy --strict)"
timeout 300 "$venv/bin/python" -m mypy.stubtest wsguard._native
timeout 300 "$venv/bin/python" -m mypy --strict -p wsguard
timeout 300 "$venv/bin/python" -m mypy --strict .

step "pytest"
timeout 600 "$venv/bin/python" -m pytest -q -p no:cacheprovider --timeout=60 --timeout-method=thread "$@" .
