#!/usr/bin/env bash
# The chart's alert rules checked by promtool: they parse (`promtool check rules`) and behave as
# tests/metrics/alerts.test.yaml says on synthetic series (`promtool test rules`): each alert fires
# when its condition holds past its threshold, and stays quiet just before and for other releases.
#
# Usage: tests/metrics/alerts.sh   (env: BOOTFARM_CACHE)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bootfarm-alerts.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() {
    echo "alerts: FAIL: $*" >&2
    exit 1
}
command -v promtool >/dev/null || fail "no promtool (scripts/setup-host installs prometheus)"
"$HERE/render-rules.sh" "$WORK/bootfarm.rules.yaml" || fail "rendering the PrometheusRule"
cp "$HERE/alerts.test.yaml" "$WORK/"
promtool check rules "$WORK/bootfarm.rules.yaml" || fail "promtool check rules"
n=$(grep -c '^ *- alert:' "$WORK/bootfarm.rules.yaml")
((n == 4)) || fail "expected 4 alerts in the PrometheusRule, found $n"
(cd "$WORK" && promtool test rules alerts.test.yaml) || fail "promtool test rules"
echo "alerts: the chart's $n alert rules pass promtool check and promtool test"
