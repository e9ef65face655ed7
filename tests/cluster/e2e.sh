#!/usr/bin/env bash
# End to end on a real kube-apiserver: the chart's CRDs and RBAC, `bootfarm-operator run` with the
# chart's own ServiceAccount token, the chart's example BootJobs booting real kernels through runner
# pods that tests/cluster/fake-kubelet.py runs as local processes.
#
# Usage: tests/cluster/e2e.sh        (env: BOOTFARM_FIXTURES, BOOTFARM_CACHE, E2E_KEEP=1 keeps $WORK)
# Covers: kubectl wait --for=condition=Succeeded; `kubectl get bootjobs` columns; scale-up creates
# runner pods and idle scale-down deletes them; pending pods beyond demand are removed; deleting a
# BootJob cancels its boot; a runner pod deleted mid-boot makes the job retry; an operator restart
# loses nothing; invalid BootJobs are rejected by the schema or end in Error with a clear condition;
# a BootPlan applied with kubectl expands into owned BootJobs, `wait --plan` and `compare` read it;
# callbacks arrive signed; `bisect` finds the first bad of a series of real builds.
# Every wait is bounded; everything started here is stopped on exit, whatever happens.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CHART=$ROOT/charts/bootfarm
# shellcheck source=tests/cluster/control-plane.sh
source "$HERE/control-plane.sh"
# shellcheck source=tests/cluster/lib.sh
source "$HERE/lib.sh"
set -euo pipefail

BOOTFARM_CACHE=${BOOTFARM_CACHE:-$([[ $EUID == 0 ]] && echo /var/cache/bootfarm || echo "$HOME/.cache/bootfarm")}
FIXTURES=${BOOTFARM_FIXTURES:-$BOOTFARM_CACHE/fixtures}
NS=bootfarm-e2e
RELEASE=bf
SA=$RELEASE-bootfarm
USER_TOKEN=e2e-user-token-0123456789abcdef
RUNNER_TOKEN=e2e-runner-token-0123456789abcdef
LEASE_TTL=10
IDLE_TIMEOUT=15
E2E_NAME=e2e
FIXTURE_URL=file://$FIXTURES

require_fixtures x86_64 arm64

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bootfarm-e2e.XXXXXX")
CP=$WORK/cp
E2E_KUBECONFIG=$CP/kubeconfig
OPERATOR_PID="" KUBELET_PID="" RECEIVER_PID="" LOCAL_FIXTURES=""

cleanup() {
    local rc=$?
    set +e
    if ((rc != 0)); then
        echo "e2e: --- operator log (tail) ---" >&2
        tail -n 40 "$WORK/operator.log" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' >&2
        echo "e2e: --- fake kubelet log (tail) ---" >&2
        tail -n 20 "$WORK/kubelet.log" >&2 2>/dev/null
        k get bootjobs,runnerpools,pods -o wide >&2 2>/dev/null
    fi
    stop_pid "$OPERATOR_PID" 10
    stop_pid "$RECEIVER_PID" 5
    # The kubelet stops its runner processes (and so their QEMUs) before it exits.
    stop_pid "$KUBELET_PID" 30
    cp_stop "$CP" >/dev/null 2>&1
    [[ -n $LOCAL_FIXTURES ]] && rm -rf "$LOCAL_FIXTURES"
    if [[ -n ${E2E_KEEP:-} ]]; then
        echo "e2e: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The fake kubelet maps a runner pod's mount paths (the cache and /tmp among them) into the pod's
# own directory, so the fixtures the farm allows are given from a directory outside any of them.
LOCAL_FIXTURES=$(mktemp -d /var/tmp/bootfarm-e2e-fixtures.XXXXXX)
cp -rl "$FIXTURES/." "$LOCAL_FIXTURES/" 2>/dev/null || cp -r "$FIXTURES/." "$LOCAL_FIXTURES/"
FIXTURES=$LOCAL_FIXTURES
FIXTURE_URL=file://$FIXTURES

# --- build and start ---------------------------------------------------------------------------

log "building bootfarm-operator and bootfarm-runner"
(cd "$ROOT" && cargo build -q -p bootfarm-operator -p bootfarm-runner) || fail "cargo build"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/debug
OPERATOR=$TARGET/bootfarm-operator
RUNNER=$TARGET/bootfarm-runner

cp_build >/dev/null || fail "control plane build"
cp_start "$CP" || fail "control plane start"
# shellcheck source=/dev/null
source "$CP/ports.env"
k create namespace "$NS" >/dev/null

# --- install: the chart's CRDs, RBAC, Secrets, RunnerPools and runner pod template -------------

HELM=$("$ROOT/scripts/helm")
# A Python with PyYAML (the kubernetes-validate venv has it; a fresh machine's python3 may not).
PY=$(dirname "$("$ROOT/scripts/helm" --validate)")/python
"$HELM" template "$RELEASE" "$CHART" --namespace "$NS" --kube-version "v$K8S_VERSION" \
    --set "runnerPools.tcg.arches={x86_64,arm64}" \
    --set runnerPools.tcg.maxRunners=2 \
    --set runnerPools.tcg.idleTimeoutSeconds=$IDLE_TIMEOUT \
    --set runnerPools.tcg.startupTimeoutSeconds=120 \
    --set "auth.userTokens={$USER_TOKEN}" --set "auth.runnerToken=$RUNNER_TOKEN" \
    >"$WORK/chart.yaml" || fail "helm template"
# What the operator needs from the chart (no Deployment: the operator runs here, as a process).
"$PY" - "$WORK/chart.yaml" "$WORK" <<'EOF' || fail "splitting the rendered chart"
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
keep = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Secret", "RunnerPool"}
yaml.safe_dump_all([d for d in docs if d["kind"] in keep], open(os.path.join(sys.argv[2], "install.yaml"), "w"))
pod = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-runner-pod")]
assert pod, "the chart renders no runner pod template ConfigMap"
os.makedirs(os.path.join(sys.argv[2], "runner-pod"), exist_ok=True)
for key, text in pod[0]["data"].items():
    open(os.path.join(sys.argv[2], "runner-pod", key), "w").write(text)
EOF
k apply -f "$CHART/crds/" >/dev/null || fail "the apiserver rejected the CRDs"
k wait --for=condition=Established crd/bootjobs.bootfarm.dev crd/runnerpools.bootfarm.dev --timeout=60s >/dev/null ||
    fail "CRDs not established"
k apply -f "$WORK/install.yaml" >/dev/null || fail "the apiserver rejected the chart's RBAC/Secrets/RunnerPools"
log "installed CRDs, RBAC, Secrets and RunnerPools ($(grep -c '^kind:' "$WORK/install.yaml") objects)"

# The operator runs with the chart's ServiceAccount token: this proves the Role is enough.
sa_token() {
    local secret
    secret=$(k get serviceaccount "$SA" -o 'jsonpath={.secrets[0].name}') && [[ -n $secret ]] &&
        k get secret "$secret" -o 'jsonpath={.data.token}' | base64 -d
}
wait_for 60 "ServiceAccount token for $SA" sa_token
cat >"$WORK/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "$APISERVER_URL", certificate-authority: "$CP/pki/ca.crt"}
users:
- name: $SA
  user: {token: "$(sa_token)"}
contexts:
- name: e2e
  context: {cluster: e2e, user: $SA, namespace: $NS}
current-context: e2e
EOF
chmod 600 "$WORK/operator.kubeconfig"
printf '%s\n' "$USER_TOKEN" >"$WORK/user-tokens"
printf '%s\n' "$RUNNER_TOKEN" >"$WORK/runner-token"

# A callback receiver on loopback, and the secret that signs callbacks.
python3 "$HERE/callback-receiver.py" "$WORK/callback.port" "$WORK/callbacks.log" &
RECEIVER_PID=$!
wait_for 10 "the callback receiver listening" test -s "$WORK/callback.port"
CB_URL=http://127.0.0.1:$(cat "$WORK/callback.port")
mkdir -p "$WORK/callback-secrets"
printf 'e2e-hmac-key\n' >"$WORK/callback-secrets/ci"

PORT=$(cp_free_port)
API=http://127.0.0.1:$PORT
start_operator() {
    KUBECONFIG=$WORK/operator.kubeconfig RUST_LOG=${RUST_LOG:-info,kube=warn} \
        "$OPERATOR" run --namespace "$NS" --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
        --token-file "$WORK/user-tokens" --runner-token-file "$WORK/runner-token" \
        --lease-ttl "$LEASE_TTL" --runner-pod-template "$WORK/runner-pod/pod.yaml" \
        --allow-local-artifacts "$FIXTURES" \
        --callback-secret-dir "$WORK/callback-secrets" --allow-callback-net 127.0.0.0/8 \
        --server-url "$API" >>"$WORK/operator.log" 2>&1 &
    OPERATOR_PID=$!
    wait_for 30 "operator ready on $API" curl -fsS --max-time 2 "$API/readyz"
}
start_operator

python3 "$HERE/fake-kubelet.py" --kubeconfig "$CP/kubeconfig" --namespace "$NS" \
    --selector app.kubernetes.io/component=runner --runner-bin "$RUNNER" --work "$WORK/kubelet" \
    >"$WORK/kubelet.log" 2>&1 &
KUBELET_PID=$!

# The chart's examples (lib.sh's `example`) read the local fixtures as file:// URLs.
# Called directly (never through bash -c, whose own command line would match the pattern).
qemu_running() { pgrep -f "qemu-system.*$WORK/kubelet" >/dev/null; }
no_qemu() { ! qemu_running; }

# --- 1. invalid BootJobs: refused by the schema, or Error with a clear condition ---------------

if job bad-arch vax poweroff | k apply -f - >/dev/null 2>"$WORK/bad-arch.err"; then
    fail "a BootJob with arch vax was accepted"
fi
grep -q 'spec.arch' "$WORK/bad-arch.err" || fail "schema rejection does not name spec.arch: $(cat "$WORK/bad-arch.err")"
log "ok: arch vax rejected by the CRD schema"
job bad-smp x86_64 poweroff "  smp: 1000" | k apply -f - >/dev/null
k wait --for=condition=Valid=false bootjob/bad-smp --timeout=30s >/dev/null || fail "bad-smp never got Valid=False"
phase_is bad-smp Error || fail "bad-smp is not in phase Error"
msg=$(jsonpath bootjob/bad-smp '{.status.conditions[?(@.type=="Valid")].message}')
[[ $msg == *spec.smp* ]] || fail "the Valid condition does not name spec.smp: $msg"
log "ok: smp 1000 ends in Error: $msg"
wait_for 20 "a Warning Event InvalidSpec on bad-smp" \
    bash -c "kubectl --kubeconfig '$CP/kubeconfig' -n $NS get events --field-selector involvedObject.name=bad-smp 2>/dev/null | grep -q InvalidSpec"

# --- 2. the chart's examples boot; scale-up creates runner pods --------------------------------

EXAMPLES=()
for f in "$CHART"/examples/bootjob-*.yaml; do
    example "$(basename "$f")" | k apply -f - >/dev/null || fail "kubectl apply -f $(basename "$f") failed"
    EXAMPLES+=("bootjob/$(example "$(basename "$f")" | awk '/^  name:/ {print $2; exit}')")
done
((${#EXAMPLES[@]} >= 4)) || fail "expected at least 4 example BootJobs, found ${#EXAMPLES[@]}"
X86=$(example bootjob-x86_64.yaml | awk '/^  name:/ {print $2; exit}')
ARM=$(example bootjob-arm64.yaml | awk '/^  name:/ {print $2; exit}')
wait_for 30 "runner pods created for the x86_64 and arm64 pools" \
    bash -c "(( \$(kubectl --kubeconfig '$CP/kubeconfig' -n $NS get pods -l bootfarm.dev/pool=tcg-x86-64 -o name 2>/dev/null | wc -l) >= 1 &&
               \$(kubectl --kubeconfig '$CP/kubeconfig' -n $NS get pods -l bootfarm.dev/pool=tcg-arm64 -o name 2>/dev/null | wc -l) >= 1 ))"
pod=pod/$(k get pods -l bootfarm.dev/pool=tcg-x86-64 -o 'jsonpath={.items[0].metadata.name}')
owner=$(k get "$pod" -o 'jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
[[ $owner == RunnerPool/tcg-x86-64 ]] || fail "$pod is owned by '$owner', not RunnerPool/tcg-x86-64"
k wait --for=condition=Succeeded "${EXAMPLES[@]}" --timeout=300s >/dev/null ||
    fail "the example jobs did not all succeed"
log "ok: kubectl wait --for=condition=Succeeded ${EXAMPLES[*]}"

# A kernel that panics is a Failed job (never retried).
job panics x86_64 panic | k apply -f - >/dev/null
k wait --for=condition=Failed bootjob/panics --timeout=180s >/dev/null || fail "the panicking kernel did not end Failed"
[[ $(jsonpath bootjob/panics '{.status.attempts}') == 1 ]] || fail "a kernel failure was retried"
log "ok: the panicking kernel ends Failed after one attempt"

# `kubectl get bootjobs`: the printer columns show the real fields.
k get bootjobs >"$WORK/get.txt"
sed -n 1p "$WORK/get.txt" | grep -Eq '^NAME +ARCH +PHASE +RESULT +STAGE +RUNNER +AGE' ||
    fail "unexpected columns: $(head -n1 "$WORK/get.txt")"
grep -Eq "^$X86 +x86_64 +Succeeded +pass +[a-z_]+ +tcg-x86-64-[a-z0-9]+ " "$WORK/get.txt" ||
    fail "kubectl get bootjobs does not show $X86 as Succeeded/pass: $(cat "$WORK/get.txt")"
grep -Eq "^panics +x86_64 +Failed +fail +[a-z_]+ +tcg-x86-64-" "$WORK/get.txt" ||
    fail "kubectl get bootjobs does not show panics as Failed/fail: $(cat "$WORK/get.txt")"
grep -Eq "^bad-smp +x86_64 +Error " "$WORK/get.txt" || fail "bad-smp not shown as Error"
log "ok: kubectl get bootjobs columns:"
sed 's/^/    /' "$WORK/get.txt" >&2

# The same job over the HTTP API (user token), and its console log.
code=$(curl -s -o /dev/null -w '%{http_code}' "$API/api/v1/bootjobs/$X86")
[[ $code == 401 ]] || fail "GET without a token answered $code, not 401"
# (Outputs are saved first: with pipefail, grep -q closing the pipe early would fail the check.)
curl -fsS -H "Authorization: Bearer $USER_TOKEN" "$API/api/v1/bootjobs/$X86" >"$WORK/x86.json" || fail "GET $X86 over HTTP"
grep -q '"phase":"Succeeded"' "$WORK/x86.json" ||
    fail "the API does not show $X86 Succeeded"
curl -fsS -H "Authorization: Bearer $USER_TOKEN" "$API/api/v1/bootjobs/$X86/log" >"$WORK/x86.log" || fail "GET $X86/log"
grep -q 'bootfarm: userspace up' "$WORK/x86.log" ||
    fail "the console log of $X86 lacks the userspace marker"
log "ok: the HTTP API serves the job and its console log"

# The web UI and its pools view in Kubernetes mode: the same page, the RunnerPools' own scaling.
curl -fsS "$API/" >"$WORK/ui.html" || fail "GET / (the web UI)"
grep -q 'src="/ui/app.js"' "$WORK/ui.html" || fail "GET / is not the web UI's page"
curl -fsS -H "Authorization: Bearer $USER_TOKEN" "$API/api/v1/pools" >"$WORK/pools.json" || fail "GET /api/v1/pools"
python3 - "$WORK/pools.json" <<'PY' || fail "the pools view does not show both RunnerPools with their scale-up: $(cat "$WORK/pools.json")"
import json, sys
pools = {p["name"]: p for p in json.load(open(sys.argv[1]))["items"]}
assert {"tcg-x86-64", "tcg-arm64"} <= set(pools), pools.keys()
for p in pools.values():
    assert p["arches"] and any(d["create"] >= 1 for d in p["decisions"]), p
PY
log "ok: the web UI is served, and /api/v1/pools shows each RunnerPool's runners and scale decisions"

# The scaling signals reach /metrics: runner start-up times, runners by state, desired runners.
curl -fsS "$API/metrics" >"$WORK/metrics.txt" || fail "GET /metrics"
for m in 'bootfarm_runner_startup_seconds_count{pool="tcg-x86-64"}' 'bootfarm_runners_desired{pool="tcg-x86-64"}' \
    'bootfarm_runners{pool="tcg-x86-64",state="idle"}' 'bootfarm_queue_depth{arch="x86_64",pool="tcg-x86-64"}'; do
    grep -qF "$m" "$WORK/metrics.txt" || fail "/metrics lacks $m"
done
awk '/^bootfarm_runner_startup_seconds_count\{pool="tcg-x86-64"\}/ {found = ($2 >= 1)} END {exit !found}' "$WORK/metrics.txt" ||
    fail "no runner start-up time recorded for tcg-x86-64"
# Both controllers' reconciles were timed (the jobs above went through them).
for c in bootjob runnerpool; do
    awk -v c="$c" '$1 ~ "^bootfarm_reconcile_duration_seconds_count\\{controller=\"" c "\",outcome=\"ok\"\\}" {found = ($2 >= 1)} END {exit !found}' \
        "$WORK/metrics.txt" || fail "no successful $c reconcile timed in /metrics"
done
log "ok: /metrics has runner start-up times, runners by state, desired runners, queue depth and reconcile times"

# A submission over HTTP is a BootJob like any other (the operator creates it with its own RBAC).
job via-http x86_64 poweroff | "$PY" -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))' >"$WORK/via-http.json"
code=$(curl -s -o "$WORK/via-http.out" -w '%{http_code}' -H "Authorization: Bearer $USER_TOKEN" \
    -H 'Content-Type: application/json' --data-binary "@$WORK/via-http.json" "$API/api/v1/bootjobs")
[[ $code == 201 ]] || fail "POST /api/v1/bootjobs answered $code: $(cat "$WORK/via-http.out")"
k wait --for=condition=Succeeded bootjob/via-http --timeout=180s >/dev/null || fail "the job submitted over HTTP did not succeed"
log "ok: a job submitted over HTTP is a BootJob that succeeds"

# A finished job past ttlSecondsAfterFinished is deleted with its console log and result.
job short-lived x86_64 poweroff "  ttlSecondsAfterFinished: 3" | k apply -f - >/dev/null
k wait --for=condition=Succeeded bootjob/short-lived --timeout=180s >/dev/null || fail "short-lived did not succeed"
[[ -n $(find "$WORK/data" -path '*short-lived*' -name console.log) ]] || fail "no console log kept for short-lived"
wait_for 30 "short-lived deleted after its TTL" bash -c "! kubectl --kubeconfig '$CP/kubeconfig' -n $NS get bootjob short-lived >/dev/null 2>&1"
[[ -z $(find "$WORK/data" -path '*short-lived*') ]] || fail "the files of short-lived outlived it"
log "ok: the TTL removed short-lived and its files"

# The admission status write relies on the server honouring resourceVersion in a server-side
# apply: a stale one must be refused, or a late admission could undo a claim.
stale=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CP/pki/ca.crt" -H "Authorization: Bearer $(cat "$CP/admin.token")" \
    -X PATCH -H 'Content-Type: application/apply-patch+yaml' \
    "$APISERVER_URL/apis/bootfarm.dev/v1alpha1/namespaces/$NS/bootjobs/bad-smp/status?fieldManager=e2e&force=true" \
    --data-binary '{"apiVersion":"bootfarm.dev/v1alpha1","kind":"BootJob","metadata":{"name":"bad-smp","resourceVersion":"1"},"status":{"phase":"Queued"}}')
[[ $stale == 409 ]] || fail "a server-side apply with a stale resourceVersion answered $stale, not 409"
phase_is bad-smp Error || fail "the refused apply changed bad-smp"
log "ok: a server-side apply with a stale resourceVersion is refused (409)"

# Fixing the invalid job's spec (a new generation) gets it judged again, and it runs.
job bad-smp x86_64 poweroff "  smp: 1" | k apply -f - >/dev/null
k wait --for=condition=Succeeded bootjob/bad-smp --timeout=180s >/dev/null || fail "bad-smp, fixed, did not succeed"
log "ok: the fixed bad-smp was admitted again and succeeded"

# --- 2b. a BootPlan: kubectl apply expands it into owned BootJobs; wait --plan; compare ---------

cli() { BOOTFARM_TOKEN=$USER_TOKEN timeout 600 "$OPERATOR" "$@" --server "$API"; }
example bootplan.yaml | k apply -f - >/dev/null || fail "kubectl apply -f bootplan.yaml failed"
PLAN=$(example_name bootplan.yaml)
wait_for 30 "the BootJobs of plan $PLAN created" count_is 2 bootjobs -l "bootfarm.dev/plan=$PLAN"
owner=$(jsonpath "bootjob/$PLAN-mainline-x86-64" '{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
[[ $owner == BootPlan/$PLAN ]] || fail "$PLAN-mainline-x86-64 is owned by '$owner', not BootPlan/$PLAN"
cli wait --plan "$PLAN" --timeout 400 >"$WORK/plan-wait.out" 2>"$WORK/plan-wait.err" ||
    fail "wait --plan $PLAN failed: $(cat "$WORK/plan-wait.out" "$WORK/plan-wait.err")"
grep -q "^$PLAN: Succeeded (2 jobs: 2 pass)" "$WORK/plan-wait.out" || fail "wait --plan said: $(cat "$WORK/plan-wait.out")"
plan_done() { [[ $(jsonpath "bootplan/$PLAN" '{.status.phase} {.status.finished}/{.status.jobs}') == "Succeeded 2/2" ]]; }
wait_for 30 "BootPlan $PLAN status Succeeded 2/2" plan_done
k get bootplans >"$WORK/plans.txt"
grep -Eq "^$PLAN +Succeeded +2 +2 +0 " "$WORK/plans.txt" || fail "kubectl get bootplans: $(cat "$WORK/plans.txt")"
log "ok: BootPlan $PLAN expanded into 2 owned BootJobs, wait --plan exit 0, kubectl get bootplans shows it Succeeded"
# The candidate over HTTP: the same matrix cell with a panicking init, the arm64 cell dropped.
printf '%s\n' 'apiVersion: bootfarm.dev/v1alpha1' 'kind: BootPlan' 'metadata: {name: candidate}' 'spec:' \
    '  arches: [x86_64]' \
    "  defaults: {initrd: {url: \"$FIXTURE_URL/{arch}/initrd-panic.cpio.gz\"}, timeouts: {total: 300}," \
    "             callback: {url: \"$CB_URL/job\", secretName: ci}}" \
    "  kernels: [{name: mainline, url: \"$FIXTURE_URL/{arch}/kernel\"}]" \
    "  callback: {url: \"$CB_URL/plan\", secretName: ci}" >"$WORK/candidate.yaml"
cli submit --plan "$WORK/candidate.yaml" >/dev/null || fail "submit --plan candidate.yaml"
rc=0
cli wait --plan candidate --timeout 400 >"$WORK/cand-wait.out" 2>&1 || rc=$?
((rc == 1)) || fail "wait --plan candidate exited $rc, not 1: $(cat "$WORK/cand-wait.out")"
rc=0
cli compare "$PLAN" candidate --json >"$WORK/compare.json" || rc=$?
((rc == 1)) || fail "compare exited $rc, not 1 (a regression): $(cat "$WORK/compare.json")"
"$PY" - "$WORK/compare.json" <<'PY' || fail "compare does not report the regressions: $(cat "$WORK/compare.json")"
import json, sys
r = json.load(open(sys.argv[1]))
got = {(c["key"], c["subject"], c["candidate"]) for c in r["regressions"]}
assert ("mainline/x86_64", "boot", "fail") in got, got
assert ("mainline/arm64", "job", "missing") in got, got
assert r["matched"] == 1, r
PY
log "ok: compare $PLAN candidate: mainline/x86_64 pass -> fail and mainline/arm64 missing, exit 1"
# The callbacks of the candidate: each job's and the plan's, signed (checked with Python's hmac).
wait_for 30 "the candidate's callbacks delivered" bash -c "(( \$(grep -c . '$WORK/callbacks.log' 2>/dev/null || echo 0) >= 2 ))"
"$PY" - "$WORK/callbacks.log" <<'PY' || fail "the callbacks are not as sent: $(cat "$WORK/callbacks.log")"
import hashlib, hmac, json, sys
got = [json.loads(l) for l in open(sys.argv[1])]
key = b"e2e-hmac-key"
for g in got:
    want = "sha256=" + hmac.new(key, g["body"].encode(), hashlib.sha256).hexdigest()
    assert g["headers"]["x-bootfarm-signature-256"] == want, g
    assert "authorization" not in g["headers"], g
jobs = [json.loads(g["body"]) for g in got if g["path"] == "/job"]
plans = [json.loads(g["body"]) for g in got if g["path"] == "/plan"]
assert len(jobs) == 1 and jobs[0]["name"] == "candidate-mainline-x86-64" and jobs[0]["phase"] == "Failed", jobs
assert len(plans) == 1 and plans[0]["plan"]["status"]["phase"] == "Failed", plans
PY
log "ok: the candidate's job and plan callbacks arrived once each, signed, without the farm's token"

# A bisection over four builds (the last two carry a real panic in their modules), two per round.
printf 'apiVersion: bootfarm.dev/v1alpha1\nkind: BootJob\nmetadata: {name: template}\nspec:\n  arch: x86_64\n  kernel: {url: file:///replaced}\n  initrd: {url: "%s/x86_64/initrd-poweroff.cpio.gz"}\n  timeouts: {total: 300}\n' \
    "$FIXTURE_URL" >"$WORK/bisect-template.yaml"
{
    for i in 0 1; do echo "b$i $FIXTURE_URL/x86_64/kernel"; done
    for i in 2 3; do echo "b$i $FIXTURE_URL/x86_64/kernel modules=$FIXTURE_URL/x86_64/initrd-panic.cpio.gz"; done
} >"$WORK/series.txt"
cli bisect --kernels "$WORK/series.txt" --template "$WORK/bisect-template.yaml" --name e2e-bisect \
    --parallel 2 --json >"$WORK/bisect.json" 2>"$WORK/bisect.err" ||
    fail "bisect failed: $(cat "$WORK/bisect.json" "$WORK/bisect.err")"
"$PY" - "$WORK/bisect.json" <<'PY' || fail "bisect did not find b2: $(cat "$WORK/bisect.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["state"] == "found" and r["firstBad"]["name"] == "b2" and r["lastGood"]["name"] == "b1", r
assert len(r["rounds"]) == 2 and r["boots"] == 4, r
PY
[[ $(count bootjobs -l bootfarm.dev/bisect=e2e-bisect) == 4 ]] ||
    fail "the bisection's boots are not 4 BootJobs labelled bootfarm.dev/bisect=e2e-bisect"
log "ok: bisect over 4 builds found b2 in 2 rounds of 2 boots, each a BootJob on the cluster"

# Deleting the plan deletes its jobs (owner references, the garbage collector).
k delete bootplan "$PLAN" --timeout=30s >/dev/null || fail "deleting BootPlan $PLAN"
wait_for 60 "the BootJobs of plan $PLAN deleted with it" count_is 0 bootjobs -l "bootfarm.dev/plan=$PLAN"

# --- 3. deleting a BootJob cancels its boot ----------------------------------------------------

job cancel-me x86_64 silent | k apply -f - >/dev/null
wait_for 60 "cancel-me running" phase_is cancel-me Running
wait_for 30 "QEMU of cancel-me started" qemu_running
k delete bootjob cancel-me --timeout=30s >/dev/null || fail "deleting cancel-me blocked"
wait_for 20 "QEMU of cancel-me stopped after the delete" no_qemu

# --- 4. a runner pod deleted mid-boot: the job is retried --------------------------------------

job retry-me x86_64 silent | k apply -f - >/dev/null
wait_for 60 "retry-me running" phase_is retry-me Running
victim=$(jsonpath bootjob/retry-me '{.status.runner}')
# A busy runner is off limits to node autoscalers; an idle one is not.
busy_annotations() {
    [[ $(jsonpath "pod/$1" '{.metadata.annotations.cluster-autoscaler\.kubernetes\.io/safe-to-evict} {.metadata.annotations.karpenter\.sh/do-not-disrupt}') == "false true" ]]
}
wait_for 10 "busy runner $victim annotated safe-to-evict=false, do-not-disrupt=true" busy_annotations "$victim"
k delete pod "$victim" --wait=false >/dev/null
wait_for $((LEASE_TTL + 60)) "retry-me running again on another runner (attempt 2)" \
    bash -c "[[ \$(kubectl --kubeconfig '$CP/kubeconfig' -n $NS get bootjob retry-me -o 'jsonpath={.status.phase} {.status.attempts}' 2>/dev/null) == 'Running 2' ]]"
[[ $(jsonpath bootjob/retry-me '{.status.runner}') != "$victim" ]] || fail "retry-me went back to the deleted runner"

# A runner that dies without a word (kill -9: OOM, node loss): its lease expires, the job is
# retried, and the dead runner's Failed pod is replaced rather than blocking capacity.
victim=$(jsonpath bootjob/retry-me '{.status.runner}')
runner_pid=$(pgrep -f -- "--runner-id $victim" | head -n1 || true)
[[ -n $runner_pid ]] || fail "no runner process for $victim"
kill -KILL "$runner_pid"
wait_for $((LEASE_TTL + 60)) "retry-me running again after its runner's lease expired (attempt 3)" \
    bash -c "[[ \$(kubectl --kubeconfig '$CP/kubeconfig' -n $NS get bootjob retry-me -o 'jsonpath={.status.phase} {.status.attempts}' 2>/dev/null) == 'Running 3' ]]"
wait_for 30 "the dead runner's pod $victim removed" bash -c "! kubectl --kubeconfig '$CP/kubeconfig' -n $NS get pod $victim >/dev/null 2>&1"

# --- 5. operator restart loses nothing ---------------------------------------------------------

kill -KILL "$OPERATOR_PID" # no chance to tidy up
wait "$OPERATOR_PID" 2>/dev/null || true
job during-restart x86_64 poweroff | k apply -f - >/dev/null
sleep 2
start_operator
k wait --for=condition=Succeeded bootjob/during-restart --timeout=180s >/dev/null ||
    fail "the job submitted while the operator was down did not succeed"
phase_is retry-me Running || fail "retry-me is no longer Running after the restart"
for j in "$X86" "$ARM"; do
    phase_is "$j" Succeeded || fail "$j changed after the restart"
    [[ $(jsonpath "bootjob/$j" '{.status.attempts}') == 1 ]] || fail "$j ran twice"
done
log "ok: after an operator restart nothing was lost and nothing ran twice"
k delete bootjob retry-me --timeout=30s >/dev/null

# --- 6. idle runners are scaled down after the idle timeout ------------------------------------

wait_for $((IDLE_TIMEOUT + 60)) "idle runner pods deleted (pools back to zero)" \
    bash -c "(( \$(kubectl --kubeconfig '$CP/kubeconfig' -n $NS get pods -l app.kubernetes.io/component=runner -o name 2>/dev/null | wc -l) == 0 ))"

# --- 7. pending pods beyond demand are removed -------------------------------------------------

kill -USR1 "$KUBELET_PID" # the kubelet pauses: new pods stay Pending
job pending-1 arm64 silent | k apply -f - >/dev/null
job pending-2 arm64 silent | k apply -f - >/dev/null
wait_for 30 "two Pending arm64 runner pods" bash -c "(( \$(kubectl --kubeconfig '$CP/kubeconfig' -n $NS get pods -l bootfarm.dev/pool=tcg-arm64 --field-selector=status.phase=Pending -o name 2>/dev/null | wc -l) == 2 ))"
sleep 3
[[ $(pool_pods tcg-arm64) == 2 ]] || fail "pending pods were over-provisioned: $(pool_pods tcg-arm64) pods for 2 jobs"
k delete bootjob pending-1 pending-2 --timeout=30s >/dev/null
wait_for 20 "Pending pods beyond demand removed" bash -c "(( \$(kubectl --kubeconfig '$CP/kubeconfig' -n $NS get pods -l bootfarm.dev/pool=tcg-arm64 -o name 2>/dev/null | wc -l) == 0 ))"
kill -USR2 "$KUBELET_PID"

log "PASS in $((SECONDS - E2E_STARTED))s"
