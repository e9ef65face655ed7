#!/usr/bin/env bash
# End to end on a real node (a contract: checks outside the repository run exactly this path).
#
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a real kubelet (v1.20.2, built by
# control-plane.sh from Debian's source package) with Debian's containerd and runc, all inside a
# network namespace made here with only loopback in it, so nothing started here can reach beyond this
# machine (and a pid and mount namespace, so nothing outlives the test). The chart is installed with
# `helm install` and the images scripts/images builds (imported with `ctr -n k8s.io images import`,
# imagePullPolicy Never); the operator runs as the chart's Deployment and creates runner pods that
# boot real x86_64 and arm64 kernels under TCG in their containers. Pods use host networking (no
# kube-proxy, no cluster DNS here); the fixtures are served over HTTP on loopback inside the namespace.
#
# Covers: the examples Succeed/Fail via `kubectl wait`; `kubectl get bj` columns; `kubectl logs` of a
# runner pod; scale-up to Running pods and idle scale-down to zero; a runner pod deleted mid-boot,
# gracefully and with --grace-period=0 --force (retried, Succeeded once, attempts 2); the operator pod
# deleted mid-boot (nothing lost or finished twice); `helm upgrade` during a boot (the boot survives);
# `helm uninstall` (no pods left; BootJobs kept); a kernel URL the runner cannot reach (Error, reason
# in a condition); a runner image that does not exist (the pool's condition says so, jobs stay Queued
# with the reason, the operator does not restart); a KVM pool on a node whose /dev/kvm the container
# may not open (the runner says so and boots with TCG); operator non-root, read-only root, no shell.
#
# Usage: tests/cluster/e2e-node.sh      (root; env: BOOTFARM_CACHE, BOOTFARM_FIXTURES, E2E_KEEP=1 keeps
#        the work dir, E2E_NODE_TIMEOUT bounds the whole run, default 1800 s)
# Every wait is bounded. Whatever happens (failure, Ctrl-C, TERM) it stops every process, removes the
# kubelet's cgroups, mounts, state dirs and any iptables chain it made, and checks that it did.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CHART=$ROOT/charts/bootfarm
# shellcheck source=tests/cluster/control-plane.sh
source "$HERE/control-plane.sh"
# shellcheck source=tests/cluster/lib.sh
source "$HERE/lib.sh"
set -euo pipefail

E2E_NAME=e2e-node
BOOTFARM_CACHE=${BOOTFARM_CACHE:-$HOME/.cache/bootfarm}
FIXTURES=${BOOTFARM_FIXTURES:-$BOOTFARM_CACHE/fixtures}
NS=bootfarm
RELEASE=bf
NODE=127.0.0.1
# The operator's API on the node's network (the namespace's loopback).
API=http://127.0.0.1:8080
USER_TOKEN=e2e-node-user-token-0123456789abcdef
RUNNER_TOKEN=e2e-node-runner-token-0123456789abcdef
# The chart's default: an operator pod replaced (deleted, upgraded) comes back well within it.
LEASE_TTL=60
IDLE_TIMEOUT=20
# Paths the kubelet (and containerd's shims) use whatever their flags say; removed afterwards when
# this test made them.
KUBELET_FIXED_DIRS=(/var/lib/kubelet /var/log/pods /var/log/containers /usr/libexec/kubernetes /run/containerd)
# One node test per machine: cgroups (kubepods) and the dirs above are global.
LOCK=/run/bootfarm-e2e-node.lock
TIMEOUT=${E2E_NODE_TIMEOUT:-1800}

# --- helpers shared by both halves ---------------------------------------------------------------

# Directories of every cgroup v1 hierarchy (or the v2 root) named kubepods: the kubelet's.
kubepods_cgroups() { find /sys/fs/cgroup -maxdepth 2 -name kubepods -type d 2>/dev/null || true; }

# Mount points under the work dir or the kubelet's fixed dirs, deepest first.
our_mounts() {
    local roots=("${WORK:-/nonexistent}" "${KUBELET_FIXED_DIRS[@]}")
    awk '{print $5}' /proc/self/mountinfo | while read -r m; do
        local r
        for r in "${roots[@]}"; do [[ $m == "$r" || $m == "$r"/* ]] && echo "$m"; done
    done | sort -r -u
}

# ================================================================================================
# Outer half: on the host. Builds what the test needs, runs the inner half in new namespaces, then
# removes and checks what the node may have left on the host.
# ================================================================================================

INNER_PID=""

outer_cleanup() {
    local rc=$? leftovers=()
    set +e
    trap - INT TERM HUP
    if [[ -n $INNER_PID ]] && kill -0 "$INNER_PID" 2>/dev/null; then
        log "stopping the test namespace (bounded: 120 s)"
        kill -TERM "$(pgrep -P "$INNER_PID" | head -n1)" 2>/dev/null
        local deadline=$((SECONDS + 120))
        while kill -0 "$INNER_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
        # unshare --kill-child: its death kills the namespace's init, and with it every process inside.
        kill -KILL "$INNER_PID" 2>/dev/null
        wait "$INNER_PID" 2>/dev/null
    fi
    # Nothing of this run may survive its pid namespace; say so if something did, and end it.
    local pids
    pids=$(pgrep -f -- "$WORK" || true)
    if [[ -n $pids ]]; then
        leftovers+=("processes: $(echo "$pids" | tr '\n' ' ')")
        # shellcheck disable=SC2086 # one pid per word
        kill -KILL $pids 2>/dev/null
    fi
    local m
    while read -r m; do
        [[ -n $m ]] || continue
        leftovers+=("mount $m")
        umount -l "$m" 2>/dev/null
    done < <(our_mounts)
    # The kubelet's cgroups (empty once its pods are gone): rmdir from the leaves up.
    local cg
    for cg in $(kubepods_cgroups); do
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
        [[ ! -d $cg ]] || leftovers+=("cgroup $cg (not empty: $(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | tr '\n' ' '))")
    done
    local d
    for d in "${KUBELET_FIXED_DIRS[@]}"; do
        if [[ -e $d ]] && grep -qxF "$d" "$WORK/created-dirs" 2>/dev/null; then rm -rf "$d"; fi
    done
    # The kubelet ran in the test's network namespace: its iptables rules died with it. Check the host's.
    if [[ -f $WORK/iptables.before ]]; then
        iptables_rules >"$WORK/iptables.after"
        if ! diff -q "$WORK/iptables.before" "$WORK/iptables.after" >/dev/null; then
            leftovers+=("iptables changed on the host: $(diff "$WORK/iptables.before" "$WORK/iptables.after" | grep '^>' | head -n5 | tr '\n' ' ')")
            remove_new_kube_chains
        fi
    fi
    if ((${#leftovers[@]})); then
        printf '%s: FAIL: left behind (now removed): %s\n' "$E2E_NAME" "${leftovers[@]}" >&2
        ((rc == 0)) && rc=1
    else
        log "clean: no process, mount, kubepods cgroup, kubelet dir or iptables change left behind"
    fi
    if [[ -n ${E2E_KEEP:-} ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}

iptables_rules() {
    local t
    for t in filter nat mangle; do iptables-save -t "$t" 2>/dev/null | grep -v -e '^#' -e '^:.*\[[0-9]*:[0-9]*\]$' -e '^COMMIT'; done
    for t in filter nat mangle; do iptables-save -t "$t" 2>/dev/null | awk '/^:/ {print $1}'; done
}

# Only chains named KUBE-* that were not there before the test.
remove_new_kube_chains() {
    local t c
    for t in filter nat mangle; do
        for c in $(iptables-save -t "$t" 2>/dev/null | awk '/^:KUBE-/ {print substr($1, 2)}'); do
            grep -qx ":$c" "$WORK/iptables.before" && continue
            iptables -t "$t" -F "$c" 2>/dev/null
        done
        for c in $(iptables-save -t "$t" 2>/dev/null | awk '/^:KUBE-/ {print substr($1, 2)}'); do
            grep -qx ":$c" "$WORK/iptables.before" && continue
            iptables -t "$t" -X "$c" 2>/dev/null
        done
    done
}

# Leftovers of a run that was killed outright (SIGKILL of this script): no kubelet may run.
remove_stale_node() {
    local m cg d
    if pgrep -x kubelet >/dev/null; then
        fail "a kubelet is already running on this machine (pid $(pgrep -x kubelet | tr '\n' ' ')): refusing to share its cgroups and dirs"
    fi
    # A system containerd (a package's service) may run: it keeps /run/containerd, this test's
    # containerd has its own socket, root and state beside it.
    local system_containerd=""
    pgrep -x containerd >/dev/null && system_containerd=1
    while read -r m; do [[ -n $m ]] && umount -l "$m" 2>/dev/null; done < <(our_mounts)
    for cg in $(kubepods_cgroups); do
        log "removing a stale kubepods cgroup tree $cg"
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ ! -d $cg ]] || fail "stale cgroup $cg still has processes: $(find "$cg" -name cgroup.procs -exec cat {} + | tr '\n' ' ')"
    done
    for d in "${KUBELET_FIXED_DIRS[@]}"; do
        [[ $d == /run/containerd && -n $system_containerd ]] && continue
        if [[ -e $d ]]; then
            log "removing $d left by an earlier node test"
            rm -rf "$d"
        fi
    done
}

# The pod sandbox image: the static pause binary control-plane.sh builds, alone (cached by content).
# A docker-archive: `ctr images import` gives its name the fully qualified form the CRI looks up.
pause_image() {
    local bin=$CP_BIN/pause sum out c
    sum=$(sha256sum "$bin" | cut -c1-16)
    out=$BOOTFARM_CACHE/images/pause-$sum.docker.tar
    if [[ ! -s $out ]]; then
        local store=$BOOTFARM_CACHE/containers bh=(buildah --storage-driver vfs)
        bh+=(--root "$store/storage" --runroot "$store/run")
        mkdir -p "$BOOTFARM_CACHE/images" "$store"
        (
            # The buildah storage is scripts/images's: take its lock.
            flock -w 900 8 || exit 1
            c=$("${bh[@]}" from --pull-never scratch) || exit 1
            "${bh[@]}" copy "$c" "$bin" /pause >/dev/null &&
                "${bh[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$c" &&
                "${bh[@]}" commit --quiet --rm "$c" "bootfarm/pause:v$K8S_VERSION" >/dev/null &&
                "${bh[@]}" push --quiet "bootfarm/pause:v$K8S_VERSION" \
                    "docker-archive:$out.tmp:bootfarm/pause:v$K8S_VERSION" && mv "$out.tmp" "$out"
        ) 8>"$store/images.lock" || return 1
    fi
    echo "$out"
}

outer_main() {
    [[ $(id -u) == 0 ]] || fail "must run as root (containerd, the kubelet, cgroups, namespaces)"
    local t
    for t in containerd containerd-shim-runc-v2 runc ctr buildah unshare ip iptables-save mknod kubectl python3 curl flock; do
        command -v "$t" >/dev/null || fail "$t not found: run scripts/setup-host"
    done
    [[ -x /usr/lib/cni/loopback ]] || fail "no CNI loopback plugin in /usr/lib/cni: run scripts/setup-host"
    require_fixtures x86_64 arm64
    exec 7>"$LOCK"
    flock -w 900 7 || fail "another tests/cluster/e2e-node.sh holds $LOCK"
    remove_stale_node

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/bootfarm-e2e-node.XXXXXX")
    # Pods run as 65532: they must traverse to the PersistentVolume's host directory below.
    chmod 0711 "$WORK"
    export WORK
    local d
    for d in "${KUBELET_FIXED_DIRS[@]}"; do [[ -e $d ]] || echo "$d" >>"$WORK/created-dirs"; done
    iptables_rules >"$WORK/iptables.before"
    trap outer_cleanup EXIT
    trap 'exit 130' INT TERM HUP
    # The node directory of artifacts.allowLocal: where uid 65532 can reach it (not under /root).
    LOCAL_FIXTURES=$WORK/fixtures
    mkdir -m 0755 "$LOCAL_FIXTURES"
    cp -rl "$FIXTURES/." "$LOCAL_FIXTURES/" 2>/dev/null || cp -r "$FIXTURES/." "$LOCAL_FIXTURES/"
    chmod -R a+rX "$LOCAL_FIXTURES"
    export LOCAL_FIXTURES

    log "building bootfarm (cargo), the images (scripts/images) and the node (control-plane.sh)"
    (cd "$ROOT" && cargo build -q --locked -p bootfarm-operator -p bootfarm-runner) || fail "cargo build"
    local t0=$SECONDS
    # The archives scripts/images keeps (target/images): rebuilt only when a binary or Dockerfile changed.
    IMAGES=$("$ROOT/scripts/images" | tail -n1) || fail "scripts/images"
    log "images ready in $((SECONDS - t0)) s: $(tr '\n' ';' <"$IMAGES/sizes.txt")"
    cp_build >/dev/null || fail "control plane and kubelet build"
    HELM=$("$ROOT/scripts/helm") || fail "scripts/helm"
    PAUSE_ARCHIVE=$(pause_image) || fail "building the pause image"
    export HELM PAUSE_ARCHIVE IMAGES CP_BIN FIXTURES BOOTFARM_CACHE
    export E2E_STARTED

    # Network, pid and mount namespaces: only loopback; everything started inside dies with the
    # namespace's init; mounts made inside (containers, volumes) vanish with the namespace.
    log "entering a new network namespace (loopback only), pid and mount namespace"
    E2E_NODE_INNER=1 unshare --net --pid --mount --fork --kill-child --mount-proc --propagation private -- \
        "$BASH" "$0" &
    INNER_PID=$!
    local rc=0
    # The namespace's init ignores SIGINT (started in the background, as bash starts `&` commands):
    # a Ctrl-C or TERM reaching this shell is passed on to it as TERM, and it stops everything.
    trap 'kill -TERM "$(pgrep -P "$INNER_PID" | head -n1)" 2>/dev/null || true' INT TERM HUP
    while :; do
        wait "$INNER_PID" && rc=0 || rc=$?
        kill -0 "$INNER_PID" 2>/dev/null || break
    done
    INNER_PID=""
    trap 'exit 130' INT TERM HUP
    ((rc == 0)) || fail "the test inside the namespace failed (exit $rc)"
}

# ================================================================================================
# Inner half: pid 1 of new network, pid and mount namespaces.
# ================================================================================================

CD=""
CTR_SOCK=""
KVM_BOUND=""
CP=""
E2E_KUBECONFIG=""

ctr_() { timeout 120 ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

spawn() { # spawn NAME CMD...: in the background, its own process group, output to logs/NAME.log
    local name=$1
    shift
    setsid "$@" >"$WORK/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$WORK/pids/$name.pid"
}
pid_of() { cat "$WORK/pids/$1.pid" 2>/dev/null || true; }

inner_cleanup() {
    local rc=$?
    set +e
    trap - INT TERM
    if ((rc != 0)); then
        echo "$E2E_NAME: --- state at failure ---" >&2
        k get bootjobs,runnerpools,pods,deploy -o wide >&2 2>/dev/null
        k get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 25 >&2
        echo "$E2E_NAME: --- operator log (tail) ---" >&2
        k logs "deploy/$RELEASE-bootfarm" --tail=40 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' >&2
        echo "$E2E_NAME: --- kubelet log (tail) ---" >&2
        grep -v '^I' "$WORK/logs/kubelet.log" 2>/dev/null | tail -n 8 | cut -c1-400 >&2
        echo "$E2E_NAME: --- containerd log (errors, tail) ---" >&2
        grep -i 'level=error' "$WORK/logs/containerd.log" 2>/dev/null | tail -n 5 | cut -c1-400 >&2
    fi
    log "stopping the node"
    stop_pid "$(pid_of fixtures)" 5
    stop_pid "$(pid_of kubelet)" 20
    # The kubelet is gone: stop every container (pod sandboxes too) through containerd.
    if [[ -S $CTR_SOCK ]]; then
        local task
        for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$task" >/dev/null 2>&1; done
        local deadline=$((SECONDS + 20))
        while ctr_ tasks ls 2>/dev/null | grep -q RUNNING && ((SECONDS < deadline)); do sleep 0.5; done
        for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete "$task" >/dev/null 2>&1; done
    fi
    stop_pid "$(pid_of containerd)" 15
    [[ -n $CP ]] && cp_stop "$CP" >/dev/null 2>&1
    # Whatever else still runs in this pid namespace (shims, QEMUs) is ours: end it by pid. (ps runs
    # as this shell's direct child, so its output lists no subshell of ours but ps itself.)
    local p rest=()
    others_in_namespace() {
        ps -e -o pid=,comm=,args= >"$WORK/ps.txt" 2>/dev/null
        rest=()
        while read -r p comm _; do
            [[ $p == 1 || $comm == ps ]] || rest+=("$p")
        done <"$WORK/ps.txt"
    }
    others_in_namespace
    for p in "${rest[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 1
    others_in_namespace
    if ((${#rest[@]})); then
        log "still running after TERM, killing: $(grep -v -e '^ *1 ' -e ' ps ' "$WORK/ps.txt" | tr -s ' ' | tr '\n' ';')"
        for p in "${rest[@]}"; do kill -KILL "$p" 2>/dev/null; done
    fi
    local m
    while read -r m; do [[ -n $m ]] && umount -l "$m" 2>/dev/null; done < <(our_mounts)
    [[ -n $KVM_BOUND ]] && umount /dev/kvm 2>/dev/null
    exit "$rc"
}

# Writes containerd's config: its own root, state and socket under $CD; the CRI plugin with the
# settings this machine needs (environment.md: restrict_oom_score_adj, no AppArmor, cgroupfs), the
# loopback-only CNI config and the local pause image.
containerd_config() {
    mkdir -p "$CD/root" "$CD/state" "$CD/opt" "$WORK/cni/net.d"
    cat >"$WORK/cni/net.d/10-loopback.conflist" <<'EOF'
{"cniVersion": "0.4.0", "name": "loopback", "plugins": [{"type": "loopback"}]}
EOF
    cat >"$CD/config.toml" <<EOF
version = 2
root = "$CD/root"
state = "$CD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.grpc.v1.cri.tracing"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CD/containerd.sock.ttrpc"
[debug]
  address = "$CD/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "bootfarm/pause:v$K8S_VERSION"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CD/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/cni/net.d"
EOF
}

kubelet_config() {
    cat >"$WORK/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
# A test node on a shared machine: evict only when really out of room, never collect our images.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
volumePluginDir: $WORK/kubelet/volume-plugins
serializeImagePulls: false
maxPods: 30
containerLogMaxSize: 10Mi
EOF
}

node_ready() { [[ $(k get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; }
node_untainted() { [[ -z $(k get node "$NODE" -o 'jsonpath={.spec.taints}' 2>/dev/null) ]]; }

start_node() {
    mkdir -p "$WORK/logs" "$WORK/pids" "$WORK/kubelet/pki" "$WORK/pv"
    ip link set lo up
    [[ $(ip -o link show | wc -l) == 1 ]] || fail "the test's network namespace has more than loopback: $(ip -o link show)"
    log "network namespace: $(ip -o addr show | awk '{print $2, $4}' | tr '\n' ' ')"

    CD=$WORK/containerd
    CTR_SOCK=$CD/containerd.sock
    containerd_config
    spawn containerd containerd --config "$CD/config.toml"
    wait_for 30 "containerd answers" ctr_ version
    local archive ref pause prefix
    for archive in "$PAUSE_ARCHIVE" "$IMAGES/operator.oci.tar" "$IMAGES/runner.oci.tar"; do
        ctr_ images import "$archive" >/dev/null || fail "ctr images import $archive"
    done
    # The CRI resolves a pod's `bootfarm/runner:TAG` to its fully qualified (default registry) form,
    # which `ctr import` gives a docker-archive's names but leaves an OCI archive's names as written.
    # The pause image shows what that form is; the OCI images get it as a second name.
    pause=$(ctr_ images ls -q | grep "/bootfarm/pause:v$K8S_VERSION\$" | grep -v '^bootfarm/' | head -n1)
    [[ -n $pause ]] || fail "the pause image did not import under a qualified name: $(ctr_ images ls -q | tr '\n' ' ')"
    prefix=${pause%/bootfarm/pause:*}
    for ref in $(ctr_ images ls -q | grep -E '^bootfarm/(operator|runner):'); do
        ctr_ images tag --force "$ref" "$prefix/$ref" >/dev/null || fail "ctr images tag $ref"
    done
    ctr_ images ls -q >"$WORK/images.txt"
    log "images in containerd: $(grep -v '^sha256:' "$WORK/images.txt" | tr '\n' ' ')"

    CP=$WORK/cp
    CP_NODE=1 cp_start "$CP" >/dev/null 2>&1 || { tail -n 20 "$CP"/logs/*.log >&2; fail "control plane start"; }
    # shellcheck source=/dev/null
    source "$CP/ports.env"
    E2E_KUBECONFIG=$CP/kubeconfig
    export KUBECONFIG=$CP/kubeconfig

    kubelet_config
    # The cloud credential providers must not try the metadata address (nor could they, from here).
    AWS_EC2_METADATA_DISABLED=true spawn kubelet "$CP_BIN/kubelet" \
        --config="$WORK/kubelet/config.yaml" --kubeconfig="$CP/kubeconfig" \
        --container-runtime=remote --container-runtime-endpoint="unix://$CTR_SOCK" \
        --image-service-endpoint="unix://$CTR_SOCK" --runtime-request-timeout=5m \
        --root-dir="$WORK/kubelet/root" --cert-dir="$WORK/kubelet/pki" \
        --hostname-override="$NODE" --node-labels=bootfarm.dev/kvm=true \
        --logtostderr=true --v=1
    wait_for 120 "node $NODE Ready" node_ready
    wait_for 60 "node $NODE without taints" node_untainted
    local info
    info=$(k get node "$NODE" -o 'jsonpath={.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion} {.status.addresses[?(@.type=="InternalIP")].address}')
    log "node: kubelet, runtime, InternalIP: $info"
    [[ $info == "v$K8S_VERSION containerd://"*" $NODE" ]] || fail "unexpected node: $info"

    # The artifact server runners fetch kernels from: loopback, inside the namespace.
    local port
    port=$(cp_free_port)
    spawn fixtures python3 -m http.server --bind 127.0.0.1 --directory "$FIXTURES" "$port"
    FIXTURE_URL=http://127.0.0.1:$port
    wait_for 10 "fixture server on $FIXTURE_URL" curl -fsS -o /dev/null "$FIXTURE_URL/x86_64/kernel-version"
}

# The values a user on such a node would give (host networking, no Service routing, no pulls).
write_values() {
    cat >"$WORK/values.yaml" <<EOF
operator:
  image: {pullPolicy: Never}
  hostNetwork: true
  leaseTtlSeconds: $LEASE_TTL
  logLevel: info,kube=warn
  # No kube-proxy here: the Service address of the API server leads nowhere; this is its endpoint.
  extraEnv:
    - {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
    - {name: KUBERNETES_SERVICE_PORT, value: "$APISERVER_PORT"}
runner:
  image: {pullPolicy: Never}
  hostNetwork: true
  serverURL: $API
artifacts:
  allowLocal: [$LOCAL_FIXTURES]
  allowNet: [127.0.0.1/32]
runnerPools:
  tcg:
    arches: [x86_64, arm64]
    maxRunners: 2
    idleTimeoutSeconds: $IDLE_TIMEOUT
    startupTimeoutSeconds: 120
    resources:
      requests: {cpu: 250m, memory: 256Mi}
      limits: {memory: 1Gi}
auth:
  userTokens: [$USER_TOKEN]
  runnerToken: $RUNNER_TOKEN
EOF
    # What the upgrade changes: the operator's log level (its pod is replaced), a pool's size, and
    # the chart's KVM pool on nodes labelled for it. (Unpinned x86_64 jobs then go to the KVM pool,
    # the first by name that serves the arch.)
    cat >"$WORK/values-upgrade.yaml" <<EOF
operator:
  logLevel: debug,kube=warn,hyper=info,tower=info
runnerPools:
  tcg:
    maxRunners: 3
  kvm:
    enabled: true
    useDevicePlugin: false
    nodeSelector: {bootfarm.dev/kvm: "true"}
    maxRunners: 1
    idleTimeoutSeconds: $IDLE_TIMEOUT
    startupTimeoutSeconds: 120
    resources:
      requests: {cpu: 250m, memory: 256Mi}
      limits: {memory: 1Gi}
EOF
    # The chart's PersistentVolumeClaim binds to this volume (a directory on the node).
    chown 65532:65532 "$WORK/pv"
    chmod 0750 "$WORK/pv"
    cat >"$WORK/pv.yaml" <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: bootfarm-e2e-node-data}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  claimRef: {namespace: $NS, name: $RELEASE-bootfarm-data}
  hostPath: {path: "$WORK/pv", type: Directory}
EOF
}

helm_() { timeout 300 "$HELM" --kubeconfig "$CP/kubeconfig" "$@"; }
api() { curl -fsS --max-time 10 -H "Authorization: Bearer $USER_TOKEN" "$API/api/v1/$1"; }
operator_pod() { k get pods -l app.kubernetes.io/component=operator -o 'jsonpath={.items[0].metadata.name}' 2>/dev/null; }
operator_ready() {
    [[ $(k get pods -l app.kubernetes.io/component=operator -o 'jsonpath={range .items[*]}{.metadata.deletionTimestamp}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null) == True ]]
}
# Lines of the current operator's log matching PATTERN (colour codes dropped).
operator_log_count() {
    k logs "deploy/$RELEASE-bootfarm" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -c -- "$1" || true
}
# The host pid of a pod's container (its containerd task).
container_pid() {
    local id
    id=$(jsonpath "pod/$1" '{.status.containerStatuses[0].containerID}')
    id=${id#containerd://}
    [[ -n $id ]] || return 1
    ctr_ tasks ls 2>/dev/null | awk -v id="$id" '$1 == id {print $2}'
}
job_log_has() { api "bootjobs/$1/log" 2>/dev/null | grep -q -- "$2"; }
running_on() { # running_on JOB: Running, and its console shows the kernel booting
    phase_is "$1" Running && job_log_has "$1" "Linux version"
}

inner_main() {
    trap inner_cleanup EXIT
    trap 'exit 130' INT TERM
    # The whole run is bounded: past E2E_NODE_TIMEOUT this namespace's init is told to stop.
    (
        trap 'exit 0' TERM
        sleep "$TIMEOUT" &
        wait $! && echo "$E2E_NAME: FAIL: still running after ${TIMEOUT}s" >&2 && kill -TERM 1
    ) &
    start_node
    write_values

    # --- 1. helm install: the operator runs as the chart's Deployment ----------------------------

    k apply -f "$WORK/pv.yaml" >/dev/null || fail "PersistentVolume"
    local t0=$SECONDS
    helm_ install "$RELEASE" "$CHART" --namespace "$NS" --create-namespace -f "$WORK/values.yaml" \
        --wait --timeout 180s >"$WORK/helm-install.txt" 2>&1 || { cat "$WORK/helm-install.txt" >&2; fail "helm install"; }
    log "ok: helm install --wait in $((SECONDS - t0)) s"
    [[ $(jsonpath "pvc/$RELEASE-bootfarm-data" '{.status.phase}') == Bound ]] || fail "the data PVC is not Bound"
    local op pid
    op=$(operator_pod)
    [[ $(jsonpath "pod/$op" '{.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}') == "true 0" ]] ||
        fail "operator pod $op not ready or restarted"
    pid=$(container_pid "$op") || fail "no containerd task for $op"
    [[ $(awk '/^Uid:/ {print $2, $3}' "/proc/$pid/status") == "65532 65532" ]] || fail "the operator does not run as uid 65532"
    awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo" | grep -qE '(^|,)ro(,|$)' || fail "the operator's root filesystem is writable"
    if k exec "$op" -- /bin/sh -c true >/dev/null 2>&1; then fail "the operator image has a shell"; fi
    [[ $(curl -fsS --max-time 5 "$API/readyz") == ready ]] || fail "/readyz on the node's port 8080"
    log "ok: operator $op: Ready (probes), uid 65532, read-only root, no shell, API on $API"

    # --- 2. the chart's examples; scale-up creates Running runner pods ---------------------------

    local f examples=() x86 arm
    for f in "$CHART"/examples/bootjob-*.yaml; do
        example "$(basename "$f")" | k apply -f - >/dev/null || fail "kubectl apply -f $(basename "$f")"
        examples+=("bootjob/$(example_name "$(basename "$f")")")
    done
    ((${#examples[@]} >= 4)) || fail "expected at least 4 example BootJobs, found ${#examples[@]}"
    x86=$(example_name bootjob-x86_64.yaml)
    arm=$(example_name bootjob-arm64.yaml)
    wait_for 90 "runner pods Running in the x86_64 pool" count_at_least 1 pods -l bootfarm.dev/pool=tcg-x86-64 --field-selector=status.phase=Running
    wait_for 90 "runner pods Running in the arm64 pool" count_at_least 1 pods -l bootfarm.dev/pool=tcg-arm64 --field-selector=status.phase=Running
    local rpod
    rpod=$(k get pods -l bootfarm.dev/pool=tcg-x86-64 -o 'jsonpath={.items[0].metadata.name}')
    pid=$(container_pid "$rpod") || fail "no containerd task for $rpod"
    [[ $(awk '/^Uid:/ {print $2}' "/proc/$pid/status") == 65532 ]] || fail "runner $rpod does not run as uid 65532"
    log "ok: runner pod $rpod runs as uid 65532"
    k wait --for=condition=Succeeded "${examples[@]}" --timeout=420s >/dev/null || fail "the example jobs did not all succeed"
    log "ok: kubectl wait --for=condition=Succeeded ${examples[*]}"
    local j
    for j in "$x86" "$arm"; do
        [[ $(jsonpath "bootjob/$j" '{.status.result.accel} {.status.attempts}') == "tcg 1" ]] || fail "$j: not one TCG attempt"
    done

    job panics x86_64 panic | k apply -f - >/dev/null
    k wait --for=condition=Failed bootjob/panics --timeout=240s >/dev/null || fail "the panicking kernel did not end Failed"
    [[ $(jsonpath bootjob/panics '{.status.attempts}') == 1 ]] || fail "a kernel failure was retried"
    log "ok: the panicking kernel ends Failed after one attempt"

    k get bootjobs >"$WORK/get.txt"
    sed -n 1p "$WORK/get.txt" | grep -Eq '^NAME +ARCH +PHASE +RESULT +STAGE +RUNNER +AGE' ||
        fail "unexpected columns: $(head -n1 "$WORK/get.txt")"
    grep -Eq "^$x86 +x86_64 +Succeeded +pass +[a-z_]+ +tcg-x86-64-[a-z0-9]+ " "$WORK/get.txt" || fail "get bj: $x86 not Succeeded/pass"
    grep -Eq "^$arm +arm64 +Succeeded +pass +[a-z_]+ +tcg-arm64-[a-z0-9]+ " "$WORK/get.txt" || fail "get bj: $arm not Succeeded/pass"
    grep -Eq "^panics +x86_64 +Failed +fail +[a-z_]+ +tcg-x86-64-" "$WORK/get.txt" || fail "get bj: panics not Failed/fail"
    log "ok: kubectl get bootjobs:"
    sed 's/^/    /' "$WORK/get.txt" >&2

    # kubectl logs of the runner pod that booted the x86_64 example (still there: not idle long).
    rpod=$(jsonpath "bootjob/$x86" '{.status.runner}')
    k logs "$rpod" 2>"$WORK/logs.err" | sed 's/\x1b\[[0-9;]*m//g' >"$WORK/runner.log" || fail "kubectl logs $rpod: $(cat "$WORK/logs.err")"
    { grep -q "Starting job.*job=$x86" "$WORK/runner.log" && grep -q "Boot finished.*job=$x86 result=\"\?pass" "$WORK/runner.log"; } ||
        fail "kubectl logs $rpod does not show its work on $x86: $(tail -n 5 "$WORK/runner.log") $(cat "$WORK/logs.err")"
    log "ok: kubectl logs $rpod: $(grep -c 'Boot finished' "$WORK/runner.log") boots, e.g. $(grep "Boot finished.*job=$x86" "$WORK/runner.log" | head -n1 | sed 's/^.*Boot finished/Boot finished/')"

    # The console logs are on the operator's volume (the PersistentVolume's directory on the node).
    [[ -n $(find "$WORK/pv" -path "*$x86*" -name console.log -size +1k) ]] || fail "no console log of $x86 on the operator's volume"
    api "bootjobs/$x86/log" | grep -q 'bootfarm: userspace up' || fail "the API does not serve $x86's console log"
    log "ok: console logs on the operator's volume and served by its API"

    # --- 3. bad input: an unreachable kernel URL; a runner image that does not exist ------------

    job bad-url x86_64 poweroff "  maxAttempts: 1" | sed "s#$FIXTURE_URL/x86_64/kernel#http://127.0.0.1:9/no-such-kernel#" |
        k apply -f - >/dev/null
    k wait --for=condition=Error bootjob/bad-url --timeout=180s >/dev/null || fail "a kernel URL nobody serves did not end in Error"
    local msg
    msg=$(jsonpath bootjob/bad-url '{.status.conditions[?(@.type=="Error")].message}')
    [[ $msg == *127.0.0.1:9* ]] || fail "the Error condition does not say what failed: $msg"
    log "ok: unreachable kernel URL: Error: $msg"

    # The farm's artifact rules, set by the chart's values: the fixture directory is
    # artifacts.allowLocal (a read-only hostPath in the runner pods), 127.0.0.1/32 artifacts.allowNet.
    job local-files x86_64 poweroff | sed "s#$FIXTURE_URL/#file://$LOCAL_FIXTURES/#g" | k apply -f - >/dev/null
    job host-file x86_64 poweroff | sed "s#$FIXTURE_URL/x86_64/kernel#file:///etc/passwd#" | k apply -f - >/dev/null
    job other-loopback x86_64 poweroff "  maxAttempts: 1" |
        sed "s#$FIXTURE_URL/x86_64/kernel#http://127.0.0.2:${FIXTURE_URL##*:}/x86_64/kernel#" | k apply -f - >/dev/null
    k wait --for=condition=Succeeded bootjob/local-files --timeout=240s >/dev/null ||
        fail "a BootJob on files of an allowed node directory did not succeed"
    k wait --for=condition=Error bootjob/host-file bootjob/other-loopback --timeout=180s >/dev/null ||
        fail "a host file or a loopback address outside artifacts.allowNet did not end in Error"
    msg=$(jsonpath bootjob/host-file '{.status.conditions[?(@.type=="Error")].message}')
    [[ $msg == *"/etc/passwd refused"* && $(jsonpath bootjob/host-file '{.status.attempts}') =~ ^0?$ ]] ||
        fail "file:///etc/passwd not refused at admission: $(jsonpath bootjob/host-file '{.status}')"
    local msg2
    msg2=$(jsonpath bootjob/other-loopback '{.status.conditions[?(@.type=="Error")].message}')
    [[ $msg2 == *127.0.0.2* && $msg2 == *refused* ]] || fail "127.0.0.2 not refused by the runner: $msg2"
    log "ok: artifacts.allowLocal boots from the node's files; refused: $msg; $msg2"

    cat <<EOF | k apply -f - >/dev/null || fail "RunnerPool with a missing image"
apiVersion: bootfarm.dev/v1alpha1
kind: RunnerPool
metadata: {name: x86-64-missing-image}
spec:
  arches: [x86_64]
  maxRunners: 1
  startupTimeoutSeconds: 300
  template: {image: "bootfarm/no-such-runner:0", imagePullPolicy: Never}
EOF
    job stuck x86_64 poweroff "  pool: x86-64-missing-image" | k apply -f - >/dev/null
    k wait --for=condition=RunnersCanStart=false runnerpool/x86-64-missing-image --timeout=120s >/dev/null ||
        fail "the pool with a missing image does not say so in a condition"
    msg=$(jsonpath runnerpool/x86-64-missing-image '{.status.conditions[?(@.type=="RunnersCanStart")].reason}: {.status.conditions[?(@.type=="RunnersCanStart")].message}')
    [[ $msg == ErrImageNeverPull:*no-such-runner* ]] || fail "unexpected pool condition: $msg"
    log "ok: pool condition RunnersCanStart=False $msg"
    queued_with_reason() {
        [[ $(jsonpath bootjob/stuck '{.status.phase} {.status.conditions[?(@.type=="Queued")].reason}') == "Queued RunnersCannotStart" ]]
    }
    wait_for 60 "job 'stuck' Queued with reason RunnersCannotStart" queued_with_reason
    log "    $(jsonpath bootjob/stuck '{.status.conditions[?(@.type=="Queued")].message}')"
    { [[ $(jsonpath "pod/$op" '{.status.containerStatuses[0].restartCount}') == 0 ]] && operator_ready; } ||
        fail "the operator restarted or is not ready"
    log "ok: the operator neither crashed nor restarted"
    k delete bootjob stuck --timeout=60s >/dev/null
    k delete runnerpool x86-64-missing-image --timeout=60s >/dev/null
    wait_for 90 "the x86-64-missing-image pool's pod gone" count_is 0 pods -l bootfarm.dev/pool=x86-64-missing-image

    # --- 4. runner pods deleted mid-boot, gracefully and forcibly: retried, Succeeded once ------

    local slow="  expect: shell
  commands: [\"sleep 20\"]"
    job retry-graceful x86_64 shell "$slow" | k apply -f - >/dev/null
    job retry-force x86_64 shell "$slow" | k apply -f - >/dev/null
    wait_for 180 "retry-graceful booting" running_on retry-graceful
    wait_for 180 "retry-force booting" running_on retry-force
    local victim1 victim2
    victim1=$(jsonpath bootjob/retry-graceful '{.status.runner}')
    victim2=$(jsonpath bootjob/retry-force '{.status.runner}')
    k delete pod "$victim1" --wait=false >/dev/null
    k delete pod "$victim2" --grace-period=0 --force >/dev/null 2>&1
    log "deleted $victim1 (gracefully) and $victim2 (--grace-period=0 --force) mid-boot"
    k wait --for=condition=Succeeded bootjob/retry-graceful bootjob/retry-force --timeout=$((LEASE_TTL + 300))s >/dev/null ||
        fail "the jobs whose runner pods were deleted did not succeed"
    for j in retry-graceful retry-force; do
        [[ $(jsonpath "bootjob/$j" '{.status.attempts}') == 2 ]] || fail "$j: $(jsonpath "bootjob/$j" '{.status.attempts}') attempts, not 2"
        [[ $(jsonpath "bootjob/$j" '{.status.runner}') != "$victim1" && $(jsonpath "bootjob/$j" '{.status.runner}') != "$victim2" ]] ||
            fail "$j finished on a deleted runner"
        [[ $(operator_log_count "Job finished job=$j ") == 1 ]] || fail "$j finished $(operator_log_count "Job finished job=$j ") times"
    done
    log "ok: both retried on other runners: Succeeded once, attempts 2"

    # --- 5. the operator pod deleted mid-boot ------------------------------------------------------

    local before
    before=$(for j in "${examples[@]}" bootjob/panics; do jsonpath "$j" '{.metadata.name} {.status.phase} {.status.attempts} {.status.completionTime}{"\n"}'; done)
    job during-restart x86_64 shell "$slow" | k apply -f - >/dev/null
    wait_for 180 "during-restart booting" running_on during-restart
    local runner
    runner=$(jsonpath bootjob/during-restart '{.status.runner}')
    local t_del=$SECONDS
    k delete pod "$op" --wait=false >/dev/null
    job while-down x86_64 poweroff | k apply -f - >/dev/null
    old_operator_gone() { [[ $(k get pods -l app.kubernetes.io/component=operator -o 'jsonpath={.items[*].metadata.name}' 2>/dev/null) != *"$op"* ]]; }
    wait_for 120 "the old operator pod $op gone" old_operator_gone
    local t_gone=$((SECONDS - t_del))
    wait_for 120 "a new operator pod Ready" operator_ready
    log "    the old pod was gone after $t_gone s, the new one Ready after $((SECONDS - t_del)) s"
    op=$(operator_pod)
    k wait --for=condition=Succeeded bootjob/during-restart bootjob/while-down --timeout=300s >/dev/null ||
        fail "jobs running or submitted across the operator restart did not succeed"
    [[ $(jsonpath bootjob/during-restart '{.status.attempts} {.status.runner}') == "1 $runner" ]] ||
        fail "during-restart was retried: $(jsonpath bootjob/during-restart '{.status.attempts} {.status.runner}')"
    local after
    after=$(for j in "${examples[@]}" bootjob/panics; do jsonpath "$j" '{.metadata.name} {.status.phase} {.status.attempts} {.status.completionTime}{"\n"}'; done)
    [[ $before == "$after" ]] || fail "finished jobs changed across the operator restart: $before / $after"
    api "bootjobs/$x86/log" | grep -q 'bootfarm: userspace up' || fail "$x86's console log was lost with the operator pod"
    log "ok: operator pod replaced ($op): the running boot finished on its runner (1 attempt), nothing lost or finished twice"

    # --- 6. helm upgrade while a boot runs ---------------------------------------------------------

    job during-upgrade x86_64 shell "$slow" | k apply -f - >/dev/null
    wait_for 180 "during-upgrade booting" running_on during-upgrade
    runner=$(jsonpath bootjob/during-upgrade '{.status.runner}')
    t0=$SECONDS
    helm_ upgrade "$RELEASE" "$CHART" --namespace "$NS" -f "$WORK/values.yaml" -f "$WORK/values-upgrade.yaml" \
        --wait --timeout 180s >"$WORK/helm-upgrade.txt" 2>&1 || { cat "$WORK/helm-upgrade.txt" >&2; fail "helm upgrade"; }
    log "ok: helm upgrade --wait in $((SECONDS - t0)) s"
    [[ $(jsonpath runnerpool/tcg-x86-64 '{.spec.maxRunners}') == 3 ]] || fail "the upgrade did not reach the RunnerPool"
    [[ $(jsonpath runnerpool/kvm-x86-64 '{.spec.kvm}') == true ]] || fail "the upgrade did not add the KVM pool"
    k wait --for=condition=Succeeded bootjob/during-upgrade --timeout=300s >/dev/null || fail "the boot across helm upgrade did not succeed"
    [[ $(jsonpath bootjob/during-upgrade '{.status.attempts} {.status.runner}') == "1 $runner" ]] ||
        fail "the upgrade killed the boot: $(jsonpath bootjob/during-upgrade '{.status.attempts} {.status.runner}')"
    log "ok: the boot running across helm upgrade finished on its runner, first attempt"

    # --- 7. the chart's KVM pool (enabled by the upgrade): /dev/kvm as udev usually makes it (0666) --

    # The host's node is root-only; over it, in this private mount namespace only, a 0666 node of
    # the same device, so what stops the pod is the container's device cgroup, not the file mode.
    if [[ -c /dev/kvm ]]; then
        # (stat prints the device numbers in hex.)
        mknod -m 0666 "$WORK/kvm" c "$((0x$(stat -c '%t' /dev/kvm)))" "$((0x$(stat -c '%T' /dev/kvm)))"
        mount --bind "$WORK/kvm" /dev/kvm
        KVM_BOUND=1
        job kvm-denied x86_64 poweroff "  pool: kvm-x86-64" | k apply -f - >/dev/null
        k wait --for=condition=Succeeded bootjob/kvm-denied --timeout=240s >/dev/null || fail "the KVM pool's job did not succeed with TCG"
        local reason
        reason=$(api bootjobs/kvm-denied/result | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["accel"], r["accel_reason"])')
        [[ $reason == "tcg /dev/kvm: present but not permitted in this container"* ]] ||
            fail "the runner did not report the device cgroup: $reason"
        log "ok: KVM pool, hostPath /dev/kvm: $reason"
        umount /dev/kvm
        KVM_BOUND=""
    else
        fail "no /dev/kvm on this machine: the KVM pool case cannot be checked"
    fi

    # --- 8. idle runners scale down to zero --------------------------------------------------------

    wait_for $((IDLE_TIMEOUT + 90)) "idle runner pods deleted (every pool at zero)" count_is 0 pods -l app.kubernetes.io/component=runner

    # --- 9. helm uninstall -------------------------------------------------------------------------

    local jobs
    jobs=$(count bootjobs)
    helm_ uninstall "$RELEASE" --namespace "$NS" --wait --timeout 120s >/dev/null || fail "helm uninstall"
    wait_for 120 "no pods left in $NS after helm uninstall" count_is 0 pods
    [[ $(count bootjobs) == "$jobs" ]] || fail "helm uninstall removed BootJobs ($jobs before, $(count bootjobs) after)"
    [[ $(count runnerpools) == 0 ]] || fail "RunnerPools outlived the release"
    log "ok: helm uninstall: no pods, no RunnerPools; the $jobs BootJobs (not part of the release) are kept"

    log "PASS in $((SECONDS - E2E_STARTED))s"
}

if [[ ${E2E_NODE_INNER:-0} == 1 ]]; then
    inner_main
else
    outer_main
fi
