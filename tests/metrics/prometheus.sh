#!/usr/bin/env bash
# The Grafana dashboard and the chart's alert rules against a real Prometheus (Debian's 2.42),
# scraping a standalone farm that boots a burst of real kernels (tests/metrics/dashboard.py says
# what is checked). The picture of the main panels and the logs are kept in $OUT.
#
# Usage: tests/metrics/prometheus.sh
#   env: BOOTFARM_BIN_DIR [target/debug], BOOTFARM_CACHE, BOOTFARM_FIXTURES,
#        BOOTFARM_TEST_ARTIFACTS [target/test-artifacts] (the picture goes to …/prometheus/)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BOOTFARM_BIN_DIR:-$ROOT/target/debug}
BOOTFARM_CACHE=${BOOTFARM_CACHE:-$([[ $EUID == 0 ]] && echo /var/cache/bootfarm || echo "$HOME/.cache/bootfarm")}
FX=${BOOTFARM_FIXTURES:-$BOOTFARM_CACHE/fixtures}
OUT=${BOOTFARM_TEST_ARTIFACTS:-$ROOT/target/test-artifacts}/prometheus
VENV=$BOOTFARM_CACHE/venv
MATPLOTLIB_VERSION=3.9.2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bootfarm-prometheus.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() {
    echo "prometheus: FAIL: $*" >&2
    exit 1
}
command -v prometheus >/dev/null || fail "no prometheus (scripts/setup-host installs it)"
for b in bootfarm-operator bootfarm-runner; do
    [[ -x $BIN/$b ]] || fail "no $BIN/$b (build first)"
done
"$ROOT/scripts/venv" "$VENV" "matplotlib==$MATPLOTLIB_VERSION" || fail "cannot install matplotlib"
"$ROOT/tests/metrics/render-rules.sh" "$WORK/bootfarm.rules.yaml" || fail "rendering the PrometheusRule"
mkdir -p "$OUT"
PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" "$ROOT/tests/metrics/dashboard.py" --bin-dir "$BIN" --fixtures "$FX" \
    --rules "$WORK/bootfarm.rules.yaml" --dashboard "$ROOT/charts/bootfarm/dashboards/bootfarm.json" --out "$OUT" ||
    fail "the dashboard against a real Prometheus (logs: $OUT)"
