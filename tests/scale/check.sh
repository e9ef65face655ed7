#!/usr/bin/env bash
# The control plane's scale regression check (CI): a short scripts/bench-scale run in each mode,
# asserting on counts only, never on time: no job handed out twice, none lost or retried, every
# runner's heartbeats and console chunks sent, and in Kubernetes mode at most 6 apiserver writes
# per job and no reads (heartbeats, log chunks and claims come from the operator's watch cache).
#
# Usage: tests/scale/check.sh standalone|kube   (kube needs the control plane: control-plane.sh build)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=${1:-}
[[ $MODE == standalone || $MODE == kube ]] || { echo "usage: $0 standalone|kube" >&2; exit 2; }
JOBS=200 RUNNERS=50
fail() { echo "scale: FAIL ($MODE): $*" >&2; exit 1; }

# A lease TTL of 6 s: runners heartbeat every 2 s, so each job's 4 s boot renews its lease.
out=$("$ROOT/scripts/bench-scale" --mode "$MODE" --jobs "$JOBS" --runners "$RUNNERS" --lease-ttl 6 --debug | tail -n 1)
echo "scale: $out" >&2
check() { # check JQ-EXPR WHAT
  jq -e "$1" >/dev/null <<<"$out" || fail "$2: $(jq -c "$3" <<<"$out")"
}
check ".mode == \"$MODE\" and .jobs == $JOBS and .runners == $RUNNERS" "not the run asked for" '{mode, jobs, runners}'
check '.duplicate_claims == 0' "a job was handed to two runners" '{duplicate_claims, claims}'
check '.lost_jobs == 0' "jobs without a verdict" '{lost_jobs, errors}'
check ".claims == $JOBS and .retried_jobs == 0 and .lost_leases == 0" "jobs claimed more than once or leases lost" '{claims, retried_jobs, lost_leases, errors}'
check ".heartbeats >= $JOBS and .log_posts >= $JOBS" "the hollow runners did not heartbeat or ship consoles" '{heartbeats, log_posts}'
if [[ $MODE == kube ]]; then
  check '.apiserver_writes_per_job <= 6' "more than 6 apiserver writes per job" '{apiserver_writes_per_job, apiserver_requests_per_job}'
  check '.apiserver_reads_per_job <= 0.05' "apiserver reads per job (heartbeats, logs or claims not served from the cache)" '{apiserver_reads_per_job, apiserver_requests_per_job}'
else
  check '.apiserver_writes_per_job == null and .apiserver_reads_per_job == null' "apiserver fields standalone" '{apiserver_writes_per_job, apiserver_reads_per_job}'
fi
echo "scale: ok ($MODE): $JOBS jobs, $RUNNERS hollow runners: no duplicate claim, nothing lost$([[ $MODE == kube ]] && jq -r '", \(.apiserver_writes_per_job) apiserver writes and \(.apiserver_reads_per_job) reads per job"' <<<"$out")" >&2
