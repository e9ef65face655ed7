#!/usr/bin/env bash
# The JUnit reports bootfarm writes, read by a real JUnit consumer: junitparser (the Python
# library CI result publishers use), installed into the cache's venv. Every recorded console log
# of the repository is classified with `--junit`; the report must read, and agree with the JSON
# result: one suite, one case for the boot, one per issue, one per test, failures where the
# verdict, the policy and the tests say so, skips where tests were skipped.
#
# Usage: tests/formats/junit-consumer.sh   (env: BOOTFARM_BIN_DIR [target/debug], BOOTFARM_CACHE)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BOOTFARM_BIN_DIR:-$ROOT/target/debug}
BOOTFARM_CACHE=${BOOTFARM_CACHE:-$([[ $EUID == 0 ]] && echo /var/cache/bootfarm || echo "$HOME/.cache/bootfarm")}
VENV=$BOOTFARM_CACHE/venv
JUNITPARSER_VERSION=3.2.0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bootfarm-junit.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

fail() {
    echo "junit-consumer: FAIL: $*" >&2
    exit 1
}
[[ -x $BIN/bootfarm-runner ]] || fail "no $BIN/bootfarm-runner (build first)"
"$ROOT/scripts/venv" "$VENV" "junitparser==$JUNITPARSER_VERSION" || fail "cannot install junitparser"

# The recorded logs have issues but no tests: one KTAP run adds a pass, a failure and a skip.
printf '%s\n' '[    0.000000] Linux version 6.1.0 (x@y) #1' '[    1.000000] Run /init as init process' \
    'KTAP version 1' '1..3' 'ok 1 t_pass' 'not ok 2 t_fail' 'ok 3 t_skip # SKIP not here' \
    '[    2.000000] reboot: Power down' >"$WORK/ktap-tests.log"
n=0
for log in "$ROOT"/core/tests/fixtures/logs/*.log "$ROOT"/core/tests/samples/*.log "$WORK/ktap-tests.log"; do
    base=$(basename "$log" .log)
    status=0
    "$BIN/bootfarm-runner" classify "$log" --output json --junit "$WORK/$base.xml" >"$WORK/$base.json" || status=$?
    ((status == 0 || status == 1)) || fail "classify $log exited $status"
    n=$((n + 1))
done
((n >= 20)) || fail "only $n logs found"

"$VENV/bin/python" - "$WORK" <<'PY'
import glob, json, os, sys
from junitparser import JUnitXml, Failure, Error, Skipped

work = sys.argv[1]
checked = tested = skipped = 0
for path in sorted(glob.glob(os.path.join(work, "*.xml"))):
    name = os.path.basename(path)[:-4]
    result = json.load(open(os.path.join(work, name + ".json")))
    xml = JUnitXml.fromfile(path)
    suites = list(xml)
    assert len(suites) == 1, (name, len(suites))
    suite = suites[0]
    cases = list(suite)
    want = 1 + len(result["issues"]) + len(result["tests"])
    assert len(cases) == want and suite.tests == want, (name, len(cases), suite.tests, want)

    def outcome(case):
        kinds = {type(r) for r in case.result}
        return "failure" if Failure in kinds else "error" if Error in kinds else "skipped" if Skipped in kinds else "passed"

    boot = cases[0]
    assert boot.name == "boot", (name, boot.name)
    expected_boot = {"pass": "passed", "fail": "failure", "error": "error"}[result["result"]]
    assert outcome(boot) == expected_boot, (name, outcome(boot), expected_boot)
    issues = cases[1 : 1 + len(result["issues"])]
    for case, issue in zip(issues, result["issues"]):
        assert case.name.startswith("check-kernel-" + issue["kind"] + ": "), (name, case.name)
        assert outcome(case) == ("failure" if issue["fatal"] else "passed"), (name, case.name)
    tests = cases[1 + len(result["issues"]) :]
    per = {"pass": "passed", "fail": "failure", "skip": "skipped", "unknown": "error"}
    for case, test in zip(tests, result["tests"]):
        assert case.name == test["name"], (name, case.name, test["name"])
        assert outcome(case) == per[test["result"]], (name, case.name)
    failures = sum(outcome(c) == "failure" for c in cases)
    assert suite.failures == failures, (name, suite.failures, failures)
    assert suite.skipped == sum(outcome(c) == "skipped" for c in cases), name
    checked += 1
    tested += len(tests)
    skipped += sum(outcome(c) == "skipped" for c in tests)
assert tested >= 3 and skipped >= 1, (tested, skipped)
print(f"junit-consumer: {checked} reports read by junitparser and agree with their results")
PY
