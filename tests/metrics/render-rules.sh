#!/usr/bin/env bash
# Renders the chart's PrometheusRule (release "bf", namespace "bootfarm", metrics.prometheusRule on)
# into a plain Prometheus rules file, the form promtool and a real Prometheus read.
#
# Usage: tests/metrics/render-rules.sh OUT.yaml [extra helm args...]   (env: BOOTFARM_CACHE)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: render-rules.sh OUT.yaml [helm args...]}
shift
HELM=$("$ROOT/scripts/helm")
KV=$("$ROOT/scripts/helm" --validate)
PY=$(dirname "$KV")/python # the validator's venv has PyYAML
"$HELM" template bf "$ROOT/charts/bootfarm" --namespace bootfarm --set metrics.prometheusRule.enabled=true \
    --set metrics.serviceMonitor.enabled=true "$@" \
    --show-only templates/prometheusrule.yaml |
    "$PY" -c '
import sys, yaml
rule = yaml.safe_load(sys.stdin)
assert rule["kind"] == "PrometheusRule", rule["kind"]
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[1], "w"), sort_keys=False)
' "$out"
