#!/usr/bin/env bash
# Installs the rendered chart into a real kube-apiserver (tests/cluster/control-plane.sh) and checks
# what only a server can: the CRDs are accepted, the default RunnerPools and example BootJobs are
# stored unchanged by the CRD schemas (nothing pruned), an invalid BootJob is rejected, and the
# operator's ServiceAccount has exactly the access it needs (namespaced by default, cluster-wide
# with watchAllNamespaces) while the runner ServiceAccount has none.
# Usage: chart-apply.sh [DIR]   (DIR: a control plane already started by control-plane.sh; else one is
# started and stopped here).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CHART=$ROOT/charts/bootfarm
# shellcheck source=tests/cluster/control-plane.sh
source "$HERE/control-plane.sh"
set -euo pipefail

HELM=$("$ROOT/scripts/helm")
# A Python with PyYAML: the kubernetes-validate venv has it.
PY=$(dirname "$("$ROOT/scripts/helm" --validate)")/python
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bootfarm-chart-apply.XXXXXX")
OWN_CP=""
DIR=${1:-}
cleanup() {
    [[ -n $OWN_CP ]] && cp_stop "$DIR"
    rm -rf "$WORK"
}
trap cleanup EXIT
if [[ -z $DIR ]]; then
    DIR=$WORK/cp OWN_CP=1
    cp_build >/dev/null
    cp_start "$DIR"
fi

fail() {
    echo "chart-apply: FAIL: $*" >&2
    exit 1
}
k() { timeout 60 kubectl --kubeconfig "$DIR/kubeconfig" "$@"; }
ok() { echo "chart-apply: $*"; }

compgen -G "$CHART/crds/*.yaml" >/dev/null || fail "no CRDs in $CHART/crds (bootfarm-operator crdgen writes them)"
k apply -f "$CHART/crds/" >/dev/null || fail "CRDs rejected"
k wait --for=condition=Established crd/bootjobs.bootfarm.dev crd/runnerpools.bootfarm.dev --timeout=60s >/dev/null ||
    fail "CRDs not established"
ok "CRDs established"

# install NAME NAMESPACE [helm args...]: render for this server's version and apply everything.
install() {
    local name=$1 ns=$2
    shift 2
    k create namespace "$ns" >/dev/null
    "$HELM" template "$name" "$CHART" --namespace "$ns" --kube-version "v$K8S_VERSION" "$@" >"$WORK/$name.yaml" ||
        fail "helm template $name"
    # ServiceMonitor needs prometheus-operator's CRD, which this cluster does not have.
    "$HELM" template "$name" "$CHART" --namespace "$ns" --kube-version "v$K8S_VERSION" "$@" |
        "$PY" -c '
import sys
docs = sys.stdin.read().split("\n---\n")
print("\n---\n".join(d for d in docs if "kind: ServiceMonitor" not in d))' >"$WORK/$name.apply.yaml"
    k apply --server-side --field-manager=helm -f "$WORK/$name.apply.yaml" >"$WORK/$name.applied" 2>&1 ||
        { cat "$WORK/$name.applied" >&2; fail "the cluster rejected the chart ($name)"; }
}

install bf farm
ok "chart applied in namespace farm ($(wc -l <"$WORK/bf.applied") objects)"

# What the server stored equals what the chart rendered: a field the CRD schema does not know
# would be pruned silently, and the operator would never see it.
k get runnerpools -n farm -o json >"$WORK/stored-pools.json"
"$PY" - "$WORK/bf.yaml" "$WORK/stored-pools.json" <<'EOF' || fail "RunnerPools changed on the way into the server"
import json, sys
import yaml  # noqa: provided by the kubernetes-validate venv or the system
rendered = {d["metadata"]["name"]: d["spec"] for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "RunnerPool"}
stored = {i["metadata"]["name"]: i["spec"] for i in json.load(open(sys.argv[2]))["items"]}
assert rendered.keys() == stored.keys(), (sorted(rendered), sorted(stored))
def norm(o):
    # Empty maps/lists and nulls are equivalent for the operator (serde defaults).
    if isinstance(o, dict):
        return {k: norm(v) for k, v in o.items() if v not in ({}, [], None)}
    if isinstance(o, list):
        return [norm(v) for v in o]
    return o
bad = [n for n in rendered if norm(rendered[n]) != norm(stored[n])]
for n in bad:
    print(f"  {n}: rendered {norm(rendered[n])}\n  {' ' * len(n)}  stored   {norm(stored[n])}", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
ok "$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$WORK/stored-pools.json") RunnerPools stored unchanged"

# The example BootJobs (and the BootPlan) apply as they are, and are stored unchanged.
for f in "$CHART"/examples/*.yaml; do
    k apply -n farm -f "$f" >/dev/null || fail "example $(basename "$f") rejected"
    read -r kind name < <("$PY" -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(d["kind"].lower(), d["metadata"]["name"])' "$f")
    k get "$kind" -n farm "$name" -o json >"$WORK/bj.json"
    "$PY" - "$f" "$WORK/bj.json" <<'EOF' || fail "example $(basename "$f") changed on the way into the server"
import json, sys, yaml
want = yaml.safe_load(open(sys.argv[1]))["spec"]
got = json.load(open(sys.argv[2]))["spec"]
missing = {k: v for k, v in want.items() if got.get(k) != v}
if missing:
    print(f"  pruned or changed: {missing}\n  stored: {got}", file=sys.stderr)
    sys.exit(1)
EOF
done
examples=("$CHART"/examples/*.yaml)
ok "${#examples[@]} examples (BootJobs, a BootPlan) applied and stored unchanged"

if printf 'apiVersion: bootfarm.dev/v1alpha1\nkind: BootJob\nmetadata: {name: bad-arch}\nspec: {arch: mips, kernel: {url: "http://x/k"}}\n' |
    k apply -n farm -f - >/dev/null 2>&1; then
    fail "a BootJob with arch mips was accepted"
fi
ok "invalid BootJob rejected by the schema"

# can NS SA VERB RESOURCE[/SUBRESOURCE] [TARGET_NS] → yes/no
can() {
    local res=${4%%/*} sub=()
    [[ $4 == */* ]] && sub=(--subresource "${4#*/}")
    k auth can-i --as "system:serviceaccount:$1:$2" "$3" "$res" "${sub[@]}" -n "${5:-$1}" 2>/dev/null || true
}
expect() {
    local want=$1
    shift
    local got
    got=$(can "$@")
    [[ $got == "$want" ]] || fail "can-i $* → '$got', want $want"
}
op=bf-bootfarm runner=bf-bootfarm-runner
for verb in get list watch create patch update delete; do expect yes farm $op $verb bootjobs.bootfarm.dev; done
for verb in get list watch patch update; do expect yes farm $op $verb runnerpools.bootfarm.dev; done
for verb in patch update; do
    expect yes farm $op $verb bootjobs.bootfarm.dev/status
    expect yes farm $op $verb runnerpools.bootfarm.dev/status
done
for verb in get list watch create delete patch; do expect yes farm $op $verb pods; done
expect yes farm $op create events
# Not more than needed.
expect no farm $op create runnerpools.bootfarm.dev
expect no farm $op delete runnerpools.bootfarm.dev
expect no farm $op get secrets
expect no farm $op create pods/exec
expect no farm $op update pods/status
expect no farm $op create deployments.apps
expect no farm $op list bootjobs.bootfarm.dev default
expect no farm $op list pods default
for verb in get list create; do
    expect no farm $runner $verb pods
    expect no farm $runner $verb bootjobs.bootfarm.dev
    expect no farm $runner $verb secrets
done
ok "operator RBAC is enough and not more (namespaced); runner ServiceAccount has no access"

# The real token of the operator's ServiceAccount works for what the operator does.
sa_kc=$(cp_sa_kubeconfig "$DIR" farm $op) || fail "no kubeconfig for the operator's ServiceAccount"
as_op() { timeout 60 kubectl --kubeconfig "$sa_kc" "$@"; }
as_op get runnerpools >/dev/null || fail "the operator's token cannot list RunnerPools"
as_op patch bootjob x86-64-poweroff --subresource=status --type=merge -p '{"status":{"phase":"Queued"}}' >/dev/null ||
    fail "the operator's token cannot patch BootJob status"
if as_op get secrets >/dev/null 2>&1; then fail "the operator's token can read Secrets"; fi
ok "operator ServiceAccount token works against the server"

# watchAllNamespaces: a ClusterRole instead.
install bfall farm-all --set watchAllNamespaces=true --set runnerPools.tcg.enabled=false \
    --set runnerPools.kvm.enabled=true --set metrics.serviceMonitor.enabled=true
expect yes farm-all bfall-bootfarm list bootjobs.bootfarm.dev default
expect yes farm-all bfall-bootfarm create pods default
expect no farm-all bfall-bootfarm get secrets default
expect no farm-all bfall-bootfarm-runner list pods default
[[ $(k get runnerpool -n farm-all kvm-x86-64 -o jsonpath='{.spec.kvm}/{.spec.template.resources.limits.devices\.kubevirt\.io/kvm}') == "true/1" ]] ||
    fail "the KVM RunnerPool was not stored as rendered"
ok "watchAllNamespaces: cluster-wide operator access, still no Secrets; KVM pool stored"

# A real `helm install` / `upgrade` / `uninstall`: CRDs already present, PDB apiVersion chosen from
# the server, generated tokens kept across an upgrade, Secrets and the log volume kept on uninstall.
hk() { KUBECONFIG=$DIR/kubeconfig timeout 180 "$HELM" "$@"; }
tokens() {
    echo "$(k get secret -n helm-farm hf-bootfarm-api-tokens -o jsonpath='{.data.tokens}')/$(k get secret -n helm-farm hf-bootfarm-runner-token -o jsonpath='{.data.token}')"
}
hk install hf "$CHART" -n helm-farm --create-namespace >"$WORK/helm-install.txt" 2>&1 ||
    { cat "$WORK/helm-install.txt" >&2; fail "helm install"; }
before=$(tokens)
[[ $before != / ]] || fail "helm install created no tokens"
[[ $(k get pdb -n helm-farm hf-bootfarm -o jsonpath='{.apiVersion}') == policy/v1beta1 ]] ||
    fail "PodDisruptionBudget apiVersion not chosen for Kubernetes $K8S_VERSION"
hk upgrade hf "$CHART" -n helm-farm --set runnerPools.tcg.maxRunners=3 >"$WORK/helm-upgrade.txt" 2>&1 ||
    { cat "$WORK/helm-upgrade.txt" >&2; fail "helm upgrade"; }
[[ $(tokens) == "$before" ]] || fail "helm upgrade changed the generated tokens"
[[ $(k get runnerpool -n helm-farm tcg-arm64 -o jsonpath='{.spec.maxRunners}') == 3 ]] || fail "helm upgrade did not update the pools"
hk uninstall hf -n helm-farm >/dev/null 2>&1 || fail "helm uninstall"
k get secret -n helm-farm hf-bootfarm-api-tokens hf-bootfarm-runner-token >/dev/null 2>&1 || fail "uninstall deleted the token Secrets"
k get pvc -n helm-farm hf-bootfarm-data >/dev/null 2>&1 || fail "uninstall deleted the log volume claim"
ok "helm install/upgrade/uninstall: tokens kept across upgrade; Secrets and logs kept on uninstall"

echo "chart-apply: all checks passed"
