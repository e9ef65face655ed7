#!/usr/bin/env bash
# The web UI in Debian's headless Chromium, driven by Playwright (pinned, in the test venv),
# against real standalone farms booting real kernels (tests/ui/ui.py says what is checked).
# Screenshots and the farms' logs are kept in $OUT.
#
# Usage: tests/ui/ui.sh
#   env: BOOTFARM_BIN_DIR [target/debug], BOOTFARM_CACHE, BOOTFARM_FIXTURES,
#        BOOTFARM_TEST_ARTIFACTS [target/test-artifacts] (the screenshots go to …/ui/)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BOOTFARM_BIN_DIR:-$ROOT/target/debug}
BOOTFARM_CACHE=${BOOTFARM_CACHE:-$([[ $EUID == 0 ]] && echo /var/cache/bootfarm || echo "$HOME/.cache/bootfarm")}
FX=${BOOTFARM_FIXTURES:-$BOOTFARM_CACHE/fixtures}
OUT=${BOOTFARM_TEST_ARTIFACTS:-$ROOT/target/test-artifacts}/ui
VENV=$BOOTFARM_CACHE/venv
PLAYWRIGHT_VERSION=1.65.2
# It ships axe-core (4.12.1), run in the page to check accessibility.
AXE_VERSION=0.1.8
fail() {
    echo "ui: FAIL: $*" >&2
    exit 1
}
# Debian's wrapper script only sets flags; the browser itself is the binary beside it.
CHROMIUM=/usr/lib/chromium/chromium
[[ -x $CHROMIUM ]] || CHROMIUM=$(command -v chromium || true)
[[ -n $CHROMIUM && -x $CHROMIUM ]] || fail "no chromium (scripts/setup-host installs it)"
for b in bootfarm-operator bootfarm-runner; do
    [[ -x $BIN/$b ]] || fail "no $BIN/$b (build first)"
done
# Playwright drives the system's Chromium: its own browser downloads are never used.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
"$ROOT/scripts/venv" "$VENV" "playwright==$PLAYWRIGHT_VERSION" "axe-playwright-python==$AXE_VERSION" ||
    fail "cannot install playwright and axe"
mkdir -p "$OUT"
PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" "$ROOT/tests/ui/ui.py" --bin-dir "$BIN" --fixtures "$FX" \
    --chromium "$CHROMIUM" --out "$OUT" || fail "the web UI in Chromium (logs and screenshots: $OUT)"
