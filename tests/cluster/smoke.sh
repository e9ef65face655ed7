#!/usr/bin/env bash
# Proves the local control plane is a working Kubernetes API: builds (or reuses) it, starts it, and
# checks namespaces, a CRD with a status subresource, server-side apply, schema validation, RBAC with a
# ServiceAccount token, and garbage collection of an owned object. Stops everything whatever happens.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/control-plane.sh
source "$HERE/control-plane.sh"
set -euo pipefail

DIR=$(mktemp -d "${TMPDIR:-/tmp}/bootfarm-cp-smoke.XXXXXX")
cleanup() {
    cp_stop "$DIR" || true
    rm -rf "$DIR"
}
trap cleanup EXIT

fail() {
    echo "smoke: FAIL: $*" >&2
    exit 1
}
k() { timeout 30 kubectl --kubeconfig "$DIR/kubeconfig" "$@"; }

cp_build >/dev/null
cp_start "$DIR"

k get ns default kube-system >/dev/null || fail "namespaces"
[[ $(k get --raw /version | python3 -c 'import json,sys; print(json.load(sys.stdin)["gitVersion"])') == "v$K8S_VERSION" ]] ||
    fail "server version is not v$K8S_VERSION"

k apply -f - >/dev/null <<'EOF' || fail "CRD apply"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.bootfarm.dev
spec:
  group: smoke.bootfarm.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, required: [size], properties: {size: {type: integer, minimum: 1}}}
            status: {type: object, properties: {phase: {type: string}}}
EOF
k wait --for=condition=Established crd/widgets.smoke.bootfarm.dev --timeout=30s >/dev/null || fail "CRD not established"

# Server-side apply, then a status patch through the subresource (what the operator does).
printf 'apiVersion: smoke.bootfarm.dev/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n' |
    k apply --server-side --field-manager=smoke -f - >/dev/null || fail "server-side apply"
k patch widget w1 --subresource=status --type=merge -p '{"status":{"phase":"Ready"}}' >/dev/null || fail "status patch"
[[ $(k get widget w1 -o jsonpath='{.status.phase}') == Ready ]] || fail "status subresource did not store the phase"
[[ $(k get widget w1 -o jsonpath='{.spec.size}') == 3 ]] || fail "SSA object not stored"
[[ $(k get widget w1 -o jsonpath='{.metadata.managedFields[0].manager}') == smoke ]] || fail "SSA field manager not recorded"

# Schema validation rejects a bad object.
if printf 'apiVersion: smoke.bootfarm.dev/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 0}\n' | k apply -f - >/dev/null 2>&1; then
    fail "schema validation accepted size 0"
fi

# RBAC with a ServiceAccount token created by the controller-manager.
k create serviceaccount reader >/dev/null
k create role widget-reader --verb=get,list --resource=widgets.smoke.bootfarm.dev >/dev/null
k create rolebinding widget-reader --role=widget-reader --serviceaccount=default:reader >/dev/null
token=""
for _ in $(seq 60); do
    secret=$(k get sa reader -o jsonpath='{.secrets[0].name}' 2>/dev/null || true)
    [[ -n $secret ]] && token=$(k get secret "$secret" -o jsonpath='{.data.token}' | base64 -d) && [[ -n $token ]] && break
    sleep 0.5
done
[[ -n $token ]] || fail "no ServiceAccount token Secret"
sa() { timeout 30 kubectl --kubeconfig /dev/null --server "$(k config view -o jsonpath='{.clusters[0].cluster.server}')" \
    --certificate-authority "$DIR/pki/ca.crt" --token "$token" "$@"; }
sa get widgets >/dev/null || fail "SA cannot list widgets"
if sa get pods >/dev/null 2>&1; then fail "SA can list pods without permission"; fi

# Garbage collection of an owned object (the GC notices a new CRD type on its ~30 s resync).
uid=$(k get widget w1 -o jsonpath='{.metadata.uid}')
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  ownerReferences: [{apiVersion: smoke.bootfarm.dev/v1, kind: Widget, name: w1, uid: %s}]\n' "$uid" |
    k apply -f - >/dev/null
k delete widget w1 --wait=false >/dev/null
gone=""
for _ in $(seq 120); do
    if ! k get configmap owned >/dev/null 2>&1; then gone=1 && break; fi
    sleep 0.5
done
[[ -n $gone ]] || fail "garbage collector did not delete the owned ConfigMap within 60 s"

echo "smoke: control plane v$K8S_VERSION ok (namespaces, CRD, server-side apply, status, validation, RBAC, GC)"
