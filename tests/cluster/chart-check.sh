#!/usr/bin/env bash
# Static checks of charts/bootfarm, no cluster needed:
#   - helm lint (default values and the "everything on" values);
#   - helm template renders; every built-in manifest (and the runner Pod the operator will create, with and
#     without KVM) passes kubernetes-validate --strict for each Kubernetes version in $KUBE_VERSIONS;
#   - negative cases that must fail: unknown values keys, a KVM pool with nothing to select KVM nodes;
#   - every bootfarm_* metric the Grafana dashboard queries is listed in dashboards/METRICS.md;
#   - the images' Dockerfiles pass scripts/lint-dockerfiles (they ship with the chart's release).
# Exits non-zero on the first failure with a message saying what failed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CHART=$ROOT/charts/bootfarm
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.29.0 1.33.0"}
HELM=$("$ROOT/scripts/helm")
KV=$("$ROOT/scripts/helm" --validate)
PY=$(dirname "$KV")/python # the validator's venv has PyYAML
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bootfarm-chart-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

fail() {
    echo "chart-check: FAIL: $*" >&2
    exit 1
}
step() { echo "chart-check: $*"; }

# name → extra helm args
declare -A VARIANTS=(
    [default]=""
    [full]="--set runnerPools.kvm.enabled=true --set runnerPools.kvm.deviceGroupId=108 --set watchAllNamespaces=true --set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true"
    [nodeselector-kvm]="--set runnerPools.kvm.enabled=true --set runnerPools.kvm.useDevicePlugin=false --set-string runnerPools.kvm.nodeSelector.bootfarm\.dev/kvm=true --set persistence.enabled=false --set networkPolicy.enabled=false"
    [hostnet]="--set operator.hostNetwork=true --set runner.hostNetwork=true --set runner.serverURL=http://192.0.2.10:8080 --set runner.logLevel=debug --set artifacts.allowLocal={/srv/kernels} --set artifacts.allowNet={10.20.0.0/16}"
)

for v in default full nodeselector-kvm hostnet; do
    # shellcheck disable=SC2086 # word-split the flag list on purpose
    "$HELM" lint --strict "$CHART" ${VARIANTS[$v]} >"$WORK/lint-$v.txt" 2>&1 ||
        { cat "$WORK/lint-$v.txt" >&2; fail "helm lint ($v values)"; }
    # shellcheck disable=SC2086
    "$HELM" template bf "$CHART" --namespace bootfarm ${VARIANTS[$v]} >"$WORK/$v.yaml" 2>"$WORK/template-$v.err" ||
        { cat "$WORK/template-$v.err" >&2; fail "helm template ($v values)"; }
    step "lint + template ok ($v)"

    # Split into built-in kinds (validated offline) and custom resources (counted, checked by shape).
    "$PY" - "$WORK/$v.yaml" "$WORK/$v" <<'EOF' || fail "splitting the $v render"
import sys, yaml
src, out = sys.argv[1], sys.argv[2]
custom = {"bootfarm.dev/v1alpha1", "monitoring.coreos.com/v1"}
builtin, crs, pods = [], [], []
for doc in yaml.safe_load_all(open(src)):
    if not doc:
        continue
    (crs if doc["apiVersion"] in custom else builtin).append(doc)
    if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-runner-pod"):
        pod = yaml.safe_load(doc["data"]["pod.yaml"])
        pods.append(pod)
        # The KVM variant, assembled the way the operator does.
        kvm = yaml.safe_load(doc["data"]["kvm.yaml"])
        import copy
        k = copy.deepcopy(pod)
        k["metadata"]["generateName"] = "kvm-runner-"
        k["spec"]["volumes"].append(kvm["volume"])
        k["spec"]["containers"][0]["volumeMounts"].append(kvm["volumeMount"])
        pods.append(k)
yaml.safe_dump_all(builtin, open(out + ".builtin.yaml", "w"))
yaml.safe_dump_all(crs, open(out + ".custom.yaml", "w"))
yaml.safe_dump_all(pods, open(out + ".pods.yaml", "w"))
print(f"chart-check: {len(builtin)} built-in objects, {len(crs)} custom resources, {len(pods)} runner pods")
EOF
    for k in $KUBE_VERSIONS; do
        for part in builtin pods; do
            "$KV" --strict --quiet -k "$k" "$WORK/$v.$part.yaml" >"$WORK/kv.txt" 2>&1 ||
                { cat "$WORK/kv.txt" >&2; fail "kubernetes-validate --strict -k $k ($v values, $part)"; }
            ! grep -q "Couldn't find schema" "$WORK/kv.txt" || { cat "$WORK/kv.txt" >&2; fail "unvalidated built-in kind ($v, $part)"; }
        done
    done
    step "kubernetes-validate --strict ok for $KUBE_VERSIONS ($v)"
done

# Facts the defaults promise.
"$PY" - "$WORK" <<'EOF' || fail "rendered manifests do not match what the chart promises"
import sys, yaml
w = sys.argv[1]
def docs(name):
    return [d for d in yaml.safe_load_all(open(f"{w}/{name}.yaml")) if d]
def kinds(ds, kind):
    return [d for d in ds if d["kind"] == kind]
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

d = docs("default")
pools = kinds(d, "RunnerPool")
arches = sorted(a for p in pools for a in p["spec"]["arches"])
check(arches == sorted(["x86_64", "i386", "arm64", "armv7", "riscv64", "ppc64le", "s390x"]),
      f"default TCG pools cover every arch once, got {arches}")
shape = {"arches", "minIdle", "maxRunners", "idleTimeoutSeconds", "startupTimeoutSeconds", "scaleUpBurst", "kvm", "template"}
tshape = {"image", "imagePullPolicy", "resources", "nodeSelector", "tolerations", "extraEnv"}
for p in pools:
    check(set(p["spec"]) == shape, f"RunnerPool {p['metadata']['name']} spec keys {sorted(p['spec'])}")
    check(set(p["spec"]["template"]) <= tshape, f"RunnerPool {p['metadata']['name']} template keys")
    check(p["spec"]["kvm"] is False, f"TCG pool {p['metadata']['name']} must not ask for KVM")
check(not kinds(d, "ClusterRole") and len(kinds(d, "Role")) == 1, "namespaced by default: one Role, no ClusterRole")
check(not kinds(d, "ServiceMonitor"), "no ServiceMonitor by default")
dep = kinds(d, "Deployment")[0]["spec"]["template"]["spec"]
c = dep["containers"][0]
check(c["args"][:2] == ["run", "--namespace=bootfarm"], f"operator args {c['args']}")
check(c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
      and c["securityContext"]["allowPrivilegeEscalation"] is False, "operator container hardening")
check(dep["securityContext"]["runAsNonRoot"] and dep["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
      "operator pod hardening")
check(c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz", "probes")
sas = {s["metadata"]["name"]: s for s in kinds(d, "ServiceAccount")}
runner_sa = sas.get("bf-bootfarm-runner")
check(runner_sa is not None and runner_sa.get("automountServiceAccountToken") is False, "runner SA without token")
bound = {s["name"] for b in kinds(d, "RoleBinding") for s in b["subjects"]}
check("bf-bootfarm-runner" not in bound, "runner SA must have no RoleBinding")
role = kinds(d, "Role")[0]
verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
check(("", "secrets") not in verbs and ("", "pods/exec") not in verbs, "operator must not read secrets or exec into pods")
check(all("*" not in v for v in verbs.values()), "no wildcard verbs")
for pod in docs("default.pods"):
    s = pod["spec"]
    check(s["automountServiceAccountToken"] is False and s["securityContext"]["runAsNonRoot"], "runner pod security")
    rc = s["containers"][0]["securityContext"]
    check(rc["readOnlyRootFilesystem"] and not rc["allowPrivilegeEscalation"] and not rc.get("privileged"), "runner container security")
    mounts = {m["mountPath"] for m in s["containers"][0]["volumeMounts"]}
    check({"/tmp", "/var/cache/bootfarm"} <= mounts, f"runner mounts {mounts}")
    check(not any("secret" in v for v in s["volumes"]), "runner pods mount no Secret (the token is in the environment)")
    token = [e for e in s["containers"][0]["env"] if e["name"] == "BOOTFARM_TOKEN"]
    check(token == [{"name": "BOOTFARM_TOKEN", "valueFrom": {"secretKeyRef": {"name": "bf-bootfarm-runner-token", "key": "token"}}}],
          f"runner token from the Secret in the environment: {token}")
    check("--token-file" not in s["containers"][0]["args"], "no runner token file")
    host = [v for v in s["volumes"] if "hostPath" in v]
    kvm = pod["metadata"]["generateName"].startswith("kvm")
    check(host == ([{"name": "kvm", "hostPath": {"path": "/dev/kvm", "type": "CharDevice"}}] if kvm else []),
          f"only KVM pods mount a host path, and only /dev/kvm: {host}")

f = docs("full")
check(len(kinds(f, "ClusterRole")) == 1 and len(kinds(f, "ClusterRoleBinding")) == 1 and not kinds(f, "Role"),
      "watchAllNamespaces: ClusterRole + binding, no Role")
check(len(kinds(f, "ServiceMonitor")) == 1, "serviceMonitor.enabled renders a ServiceMonitor")
check(not kinds(d, "PrometheusRule"), "no PrometheusRule by default")
rules = kinds(f, "PrometheusRule")
check(len(rules) == 1 and sorted(r["alert"] for g in rules[0]["spec"]["groups"] for r in g["rules"])
      == ["BootfarmLeaseExpirationsSpiking", "BootfarmOperatorDown", "BootfarmQueueStuck", "BootfarmRunnersNotStarting"],
      "prometheusRule.enabled renders the four alerts (tests/metrics/alerts.sh tests them with promtool)")
dep = kinds(f, "Deployment")[0]["spec"]["template"]["spec"]
check(not any(a.startswith("--namespace") for a in dep["containers"][0]["args"]), "watchAllNamespaces drops --namespace")
kvm = [p for p in kinds(f, "RunnerPool") if p["spec"]["kvm"]]
check(len(kvm) == 1 and kvm[0]["spec"]["arches"] == ["x86_64"], "one KVM pool for x86_64")
check(kvm and kvm[0]["spec"]["template"]["resources"]["limits"].get("devices.kubevirt.io/kvm") == "1",
      "KVM pool requests the KubeVirt device")
n = docs("nodeselector-kvm")
kvm = [p for p in kinds(n, "RunnerPool") if p["spec"]["kvm"]]
check(kvm and kvm[0]["spec"]["template"]["nodeSelector"] == {"bootfarm.dev/kvm": "true"}
      and "devices.kubevirt.io/kvm" not in kvm[0]["spec"]["template"]["resources"].get("limits", {}),
      "nodeSelector KVM pool")
check(not kinds(n, "PersistentVolumeClaim") and not kinds(n, "NetworkPolicy"), "persistence/networkPolicy off")

def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}
# Host networking and the runners' operator URL: off and the Service's DNS name by default.
dep = kinds(d, "Deployment")[0]["spec"]["template"]["spec"]
check("hostNetwork" not in dep and "dnsPolicy" not in dep, "no host networking by default (operator)")
check(env_of(dep["containers"][0])["BOOTFARM_SERVER_URL"] == "http://bf-bootfarm.bootfarm.svc:8080",
      "runners reach the operator at the Service by default")
for pod in docs("default.pods"):
    check("hostNetwork" not in pod["spec"], "no host networking by default (runner pods)")
    c = pod["spec"]["containers"][0]
    check(c["args"][c["args"].index("--server") + 1] == "http://bf-bootfarm.bootfarm.svc:8080", "runner --server default")
    check(env_of(c).get("RUST_LOG") == "info", "runner pods log at info by default (kubectl logs shows their jobs)")
h = docs("hostnet")
dep = kinds(h, "Deployment")[0]["spec"]["template"]["spec"]
check(dep.get("hostNetwork") is True and dep.get("dnsPolicy") == "ClusterFirstWithHostNet", "operator.hostNetwork")
check(env_of(dep["containers"][0])["BOOTFARM_SERVER_URL"] == "http://192.0.2.10:8080", "runner.serverURL reaches the operator's env")
for pod in docs("hostnet.pods"):
    check(pod["spec"].get("hostNetwork") is True and pod["spec"].get("dnsPolicy") == "ClusterFirstWithHostNet",
          "runner.hostNetwork")
    c = pod["spec"]["containers"][0]
    check(c["args"][c["args"].index("--server") + 1] == "http://192.0.2.10:8080", "runner.serverURL in the runner's --server")
    check(env_of(c).get("RUST_LOG") == "debug", "runner.logLevel")
# Local artifacts: the node directory read-only at the same path in the operator and every runner
# pod; the operator is told both rules (and passes them to the runner pods it creates).
local = {"name": "local-artifacts-0", "hostPath": {"path": "/srv/kernels", "type": "Directory"}}
mount = {"name": "local-artifacts-0", "mountPath": "/srv/kernels", "readOnly": True}
args = dep["containers"][0]["args"]
check("--allow-local-artifacts=/srv/kernels" in args and "--allow-artifact-net=10.20.0.0/16" in args,
      f"artifacts.allowLocal/allowNet reach the operator's args: {args}")
for spec in [dep] + [p["spec"] for p in docs("hostnet.pods")]:
    check(local in spec["volumes"] and mount in spec["containers"][0]["volumeMounts"],
          "artifacts.allowLocal mounted read-only from the node")
dep = kinds(d, "Deployment")[0]["spec"]["template"]["spec"]
check(not any(a.startswith("--allow-") for a in dep["containers"][0]["args"]), "no artifact exceptions by default")
for e in errors:
    print("  -", e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
step "rendered manifests keep the chart's promises"

# Values that must be rejected.
"$HELM" template bf "$CHART" --set operator.nosuchkey=1 >/dev/null 2>&1 && fail "values.schema.json accepted an unknown key"
"$HELM" template bf "$CHART" --set metrics.prometheusRule.enabled=true >/dev/null 2>&1 &&
    fail "a PrometheusRule without a ServiceMonitor or a selector rendered (BootfarmOperatorDown would always fire)"
"$HELM" template bf "$CHART" --set metrics.prometheusRule.enabled=true --set-string 'metrics.prometheusRule.selector=job="bootfarm"' \
    --set metrics.prometheusRule.queueStuckFor=1h30m >/dev/null || fail "a PrometheusRule with its own selector did not render"
"$HELM" template bf "$CHART" --set runnerPools.tcg.arches='{mips}' >/dev/null 2>&1 && fail "values.schema.json accepted an unknown arch"
"$HELM" template bf "$CHART" --set runner.serverURL=bootfarm:8080 >/dev/null 2>&1 && fail "values.schema.json accepted a serverURL that is not http(s)"
"$HELM" template bf "$CHART" --set runnerPools.kvm.enabled=true --set runnerPools.kvm.useDevicePlugin=false \
    >/dev/null 2>&1 && fail "a KVM pool with no way to select KVM nodes rendered"
"$HELM" template bf "$CHART" --set 'artifacts.allowLocal={srv/kernels}' >/dev/null 2>&1 && fail "values.schema.json accepted a relative artifacts.allowLocal"
"$HELM" template bf "$CHART" --set 'artifacts.allowLocal={/srv/../etc}' >/dev/null 2>&1 && fail "values.schema.json accepted '..' in artifacts.allowLocal"
"$HELM" template bf "$CHART" --set 'artifacts.allowNet={anywhere}' >/dev/null 2>&1 && fail "values.schema.json accepted a CIDR that is not one"
step "bad values rejected"

# Tokens: generated when not given, taken verbatim when given.
"$HELM" template bf "$CHART" --set 'auth.userTokens={aaaaaaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbbbbbb}' --set auth.runnerToken=cccccccccccccccccccc \
    --show-only templates/secret.yaml >"$WORK/secret.yaml"
"$PY" - "$WORK/secret.yaml" <<'EOF' || fail "token Secrets"
import base64, sys, yaml
s = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
assert base64.b64decode(s["bf-bootfarm-api-tokens"]["data"]["tokens"]).decode() == "aaaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbb\n"
assert base64.b64decode(s["bf-bootfarm-runner-token"]["data"]["token"]).decode() == "cccccccccccccccccccc"
EOF
step "token Secrets ok"

# Dashboard: valid JSON, and every metric it queries is documented (and so registered).
"$PY" - "$CHART/dashboards/bootfarm.json" "$CHART/dashboards/METRICS.md" <<'EOF' || fail "dashboard metrics"
import json, re, sys
dash = json.load(open(sys.argv[1]))
documented = set(re.findall(r"^\| `(bootfarm_[a-z0-9_]+)` \|", open(sys.argv[2]).read(), re.M))
kinds = dict(re.findall(r"^\| `(bootfarm_[a-z0-9_]+)` \| (\w+) \|", open(sys.argv[2]).read(), re.M))
exprs = []
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                exprs.append(v)
            walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(dash)
queried, bad = set(), []
for e in exprs:
    for m in re.findall(r"bootfarm_[a-z0-9_]+", e):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        if base != m and kinds.get(base) != "histogram":
            bad.append(f"{m}: {base} is not a documented histogram")
        queried.add(base)
        if "histogram_quantile" in e and m.endswith("_bucket") is False and kinds.get(base) == "histogram":
            bad.append(f"{m}: histogram used without _bucket in histogram_quantile")
missing = sorted(queried - documented)
bad += [f"{m}: queried by the dashboard but not in METRICS.md" for m in missing]
unused = sorted(documented - queried)
if unused:
    print("chart-check: note: documented metrics not on the dashboard:", ", ".join(unused))
assert len(exprs) >= 10, f"only {len(exprs)} queries found"
for b in bad:
    print("  -", b, file=sys.stderr)
if bad:
    sys.exit(1)
print(f"chart-check: {len(queried)} metrics in {len(exprs)} dashboard queries, all documented")
EOF

# The ConfigMap carries the dashboard byte for byte.
"$HELM" template bf "$CHART" --show-only templates/dashboard-configmap.yaml | "$PY" -c '
import json, sys, yaml
cm = yaml.safe_load(sys.stdin)
assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
assert json.loads(cm["data"]["bootfarm.json"]) == json.load(open(sys.argv[1]))
' "$CHART/dashboards/bootfarm.json" || fail "dashboard ConfigMap does not carry dashboards/bootfarm.json"

# Examples are BootJobs in the contract's shape.
"$PY" - "$CHART"/examples/*.yaml <<'EOF' || fail "examples"
import sys, yaml
allowed = {"arch", "kernel", "initrd", "rootfs", "modules", "overlays", "dtb", "bootArgs", "machine", "cpu", "memory", "smp",
           "accel", "expect", "login", "commands", "expectTests", "failOn", "ignore", "failurePatterns",
           "timeouts", "priority", "maxAttempts", "pool", "ttlSecondsAfterFinished"}
plan_fields = {"arches", "kernels", "variants", "defaults", "labels", "repeat", "priority"}
n = 0
for path in sys.argv[1:]:
    for d in yaml.safe_load_all(open(path)):
        if not d:
            continue
        assert d["apiVersion"] == "bootfarm.dev/v1alpha1", path
        if d["kind"] == "BootPlan":
            assert set(d["spec"]) <= plan_fields, f"{path}: unknown plan keys {set(d['spec']) - plan_fields}"
            assert set(d["spec"].get("defaults", {})) <= allowed - {"arch", "kernel"}, path
            assert d["spec"]["arches"] and d["spec"]["kernels"], path
            continue
        n += 1
        assert d["kind"] == "BootJob", path
        assert set(d["spec"]) <= allowed, f"{path}: unknown spec keys {set(d['spec']) - allowed}"
        assert d["spec"]["arch"] in {"x86_64", "i386", "arm64", "armv7", "riscv64", "ppc64le", "s390x"}, path
        assert d["spec"]["kernel"]["url"], path
assert n >= 4, f"only {n} example BootJobs"
print(f"chart-check: {n} example BootJobs ok")
EOF
"$ROOT/scripts/lint-dockerfiles" || fail "Dockerfile lint"

echo "chart-check: all checks passed"
