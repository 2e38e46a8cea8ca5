#!/usr/bin/env bash
# Checks the operators' view in docs/monitoring/: the Prometheus alerting rules with promtool
# (syntax, then the unit tests in alerts.test.yml), and, with a running server, that every metric
# the Grafana dashboard and the rules use is exported and that the dashboard is well formed
# (core/tests/monitoring.rs). promtool comes from Debian's `prometheus` package, installed when
# missing (as root, as on CI).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v promtool >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "promtool is missing: apt-get install --no-install-recommends prometheus (as root)" >&2
        exit 1
    fi
    apt-get update -qq
    # RUNLEVEL=1: install promtool without starting the Prometheus server the package ships.
    RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

promtool check rules docs/monitoring/alerts.yml
promtool test rules tests/monitoring/alerts.test.yml
# `--workspace`, as in the Rust step of scripts/test-all.sh: the same feature set, so nothing is
# rebuilt.
cargo test --workspace --locked --test monitoring
