# Shell shared by the end-to-end tests (tests/cluster/e2e.sh, tests/cluster/e2e-node.sh).
# Sourcing defines functions and runs nothing. The sourcing script sets:
#   E2E_NAME        the log prefix (e2e, e2e-node)
#   E2E_KUBECONFIG  the kubeconfig `k` uses;  NS  the namespace
#   FIXTURES        the boot fixtures dir (scripts/fixtures);  FIXTURE_URL  how runners reach it
#                   (file://$FIXTURES, or http://127.0.0.1:PORT where a server publishes it)
# shellcheck shell=bash

E2E_NAME=${E2E_NAME:-e2e}
E2E_STARTED=${E2E_STARTED:-$SECONDS}

log() { echo "$E2E_NAME: [$((SECONDS - E2E_STARTED))s] $*" >&2; }
fail() {
    echo "$E2E_NAME: FAIL: $*" >&2
    exit 1
}

# Missing fixtures fail the test: a test that passes by skipping proves nothing.
require_fixtures() {
    local arch
    for arch in "$@"; do
        [[ -f $FIXTURES/$arch/kernel && -f $FIXTURES/$arch/initrd-poweroff.cpio.gz ]] ||
            fail "no $arch boot fixtures in $FIXTURES: run scripts/fixtures (scripts/test does)"
    done
}

stop_pid() { # stop_pid PID SECONDS: TERM, then KILL after SECONDS
    local pid=$1 wait=$2
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + wait))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
}

# kubectl on the test's cluster and namespace, bounded (60 s, or 30 s past a --timeout=Ns it is
# given, e.g. `k wait --timeout=300s`); version-skew warnings dropped.
k() {
    local a limit=60
    for a in "$@"; do
        [[ $a =~ ^--timeout=([0-9]+)s$ ]] && limit=$((BASH_REMATCH[1] + 30))
    done
    # The filter is part of the pipeline (not a process substitution), so its output is written
    # before k returns: a caller that reads the stderr it redirected sees all of it.
    local rc
    { timeout "$limit" kubectl --kubeconfig "$E2E_KUBECONFIG" -n "$NS" "$@" 2>&1 1>&3 3>&- |
        { grep -v -i 'warning' || true; } >&2; rc=${PIPESTATUS[0]}; } 3>&1
    return "$rc"
}

# wait_for SECONDS WHAT CMD...: retries CMD (a command or a function) every 0.5 s until it succeeds
# or time runs out.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after ${limit}s waiting for: $what"
        sleep 0.5
    done
    log "ok: $what"
}

jsonpath() { k get "$1" -o "jsonpath=$2" 2>/dev/null; }
# count KIND [kubectl get args...]: how many objects match.
count() { k get "$@" -o name 2>/dev/null | grep -c . || true; }
# count_is N KIND [args...] / count_at_least N KIND [args...]: for wait_for.
count_is() {
    local n=$1
    shift
    [[ $(count "$@") == "$n" ]]
}
count_at_least() {
    local n=$1
    shift
    (($(count "$@") >= n))
}
pool_pods() { count pods -l "bootfarm.dev/pool=$1"; }
phase_is() { [[ $(jsonpath "bootjob/$1" '{.status.phase}') == "$2" ]]; }
# phase_attempts_are JOB "PHASE ATTEMPTS"
phase_attempts_are() { [[ $(jsonpath "bootjob/$1" '{.status.phase} {.status.attempts}') == "$2" ]]; }

# The chart's example BootJob FILE with its artifact server replaced by FIXTURE_URL.
example() { sed "s#http://bootfarm-fixtures/#$FIXTURE_URL/#g" "$CHART/examples/$1"; }
example_name() { example "$1" | awk '/^  name:/ {print $2; exit}'; }

# job NAME ARCH INITRD [extra spec lines]: a BootJob on the fixtures.
job() {
    local name=$1 arch=$2 initrd=$3 console=ttyS0
    [[ $arch == arm64 ]] && console=ttyAMA0
    cat <<EOF
apiVersion: bootfarm.dev/v1alpha1
kind: BootJob
metadata: {name: $name}
spec:
  arch: $arch
  kernel: {url: "$FIXTURE_URL/$arch/kernel"}
  initrd: {url: "$FIXTURE_URL/$arch/initrd-$initrd.cpio.gz"}
  bootArgs: console=$console panic=-1
  timeouts: {boot: 300, total: 600}
${4:-}
EOF
}
