#!/usr/bin/env bash
# Tools for the facts/metrics tests and benchmark (issue #4): Debian `prometheus` (promtool, which
# also checks and unit-tests the chart's alert rules in e2e/tests/chart.rs, and the server the
# Grafana query test scrapes the agent with),
# Debian's node_exporter for the side-by-side test, and wrk for `make bench-facts`.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_install prometheus prometheus-node-exporter wrk
# The Debian package starts node_exporter as a service; the tests start their own copy.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus-node-exporter 2>/dev/null; then
    systemctl stop prometheus-node-exporter || true
fi
command -v promtool >/dev/null
test -x /usr/bin/prometheus-node-exporter
command -v wrk >/dev/null
