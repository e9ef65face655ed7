#!/usr/bin/env bash
# A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager v1.20.2) on loopback,
# built from Debian bookworm's packages. See tests/cluster/README.md.
#
#   control-plane.sh build          build or reuse the cached binaries (also kube-scheduler, kubelet
#                                   and a static pause binary for tests/cluster/e2e-node.sh); prints
#                                   the bin dir
#   control-plane.sh start DIR      start everything with all state under DIR; writes DIR/kubeconfig
#   control-plane.sh stop DIR       stop everything started under DIR
#   control-plane.sh env DIR        print `export KUBECONFIG=...` lines for eval
#   control-plane.sh sa-kubeconfig DIR NS SA
#                                   write a kubeconfig that authenticates as ServiceAccount NS/SA
#                                   (its token Secret); prints its path
#
# Sourcing this file defines the cp_* functions without running anything.

K8S_VERSION=1.20.2
K8S_SRC_PACKAGE=kubernetes
GO_PACKAGE_VERSION=1.19
BOOTFARM_CACHE=${BOOTFARM_CACHE:-$([[ $EUID == 0 ]] && echo /var/cache/bootfarm || echo "$HOME/.cache/bootfarm")}
CP_CACHE=$BOOTFARM_CACHE/k8s
CP_BIN=$CP_CACHE/v$K8S_VERSION/bin
# Bump when the build recipe changes so cached binaries are rebuilt.
# 3: kube-scheduler, kubelet and pause (the real node) beside the control plane.
CP_RECIPE=3
# What a complete build holds.
CP_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet pause)
# Bounds on every wait, in seconds.
CP_READY_TIMEOUT=${CP_READY_TIMEOUT:-90}
CP_STOP_TIMEOUT=${CP_STOP_TIMEOUT:-15}
# Components kill themselves after this long even if `stop` never runs (a crashed test).
CP_MAX_LIFETIME=${CP_MAX_LIFETIME:-14400}

cp_log() { echo "control-plane: $*" >&2; }
cp_die() { echo "control-plane: ERROR: $*" >&2; return 1; }

# --- build -------------------------------------------------------------------------------------

# Writes a private apt configuration (sources with deb and deb-src lines for every suite of the
# system's Debian sources) so the system's apt state stays untouched.
cp_apt_setup() {
    local apt=$1 sources=/etc/apt/sources.list.d/debian.sources
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$apt/prefs"
    [[ -r $sources ]] || { cp_die "$sources not found (need the Debian mirror URI)"; return 1; }
    # Each deb822 stanza: URIs + Suites + Components + Signed-By.
    awk '
        /^URIs:/ {uri=$2}
        /^Suites:/ {suites=""; for (i=2;i<=NF;i++) suites=suites" "$i}
        /^Components:/ {comps=""; for (i=2;i<=NF;i++) comps=comps" "$i}
        /^Signed-By:/ {key=$2}
        /^[[:space:]]*$/ {flush()}
        END {flush()}
        function flush(   n, s, i) {
            if (uri != "" && suites != "") {
                n = split(suites, s, " ")
                for (i=1;i<=n;i++) {
                    print "deb [signed-by=" key "] " uri " " s[i] comps
                    print "deb-src [signed-by=" key "] " uri " " s[i] comps
                }
            }
            uri=""; suites=""; comps=""; key=""
        }' "$sources" >"$apt/sources.list"
    [[ -s $apt/sources.list ]] || { cp_die "no URIs found in $sources"; return 1; }
    cat >"$apt/apt.conf" <<EOF
Dir::Etc::SourceList "$apt/sources.list";
Dir::Etc::SourceParts "$apt/parts";
Dir::Etc::PreferencesParts "$apt/prefs";
Dir::State::Lists "$apt/lists";
Dir::Cache "$apt/cache";
Dir::State::Status "/var/lib/dpkg/status";
EOF
}

cp_apt() { APT_CONFIG="$CP_APT/apt.conf" timeout 900 apt-get -q -o APT::Sandbox::User=root "$@"; }

# Runs in a subshell: the Go environment it exports must not leak into a script that sourced us.
cp_build() (
    mkdir -p "$CP_CACHE"
    # One build at a time (a test runner may start one in the background while another waits).
    exec 9>"$CP_CACHE/build.lock"
    timeout 3600 flock 9 || { cp_die "timed out waiting for $CP_CACHE/build.lock"; return 1; }
    local stamp=$CP_BIN/.complete
    local b have=1
    for b in "${CP_BINARIES[@]}"; do [[ -x $CP_BIN/$b ]] || have=0; done
    if ((have)) && grep -qx "recipe=$CP_RECIPE" "$stamp" 2>/dev/null; then
        cp_log "reusing cached binaries in $CP_BIN"
        echo "$CP_BIN"
        return 0
    fi
    local started=$SECONDS work=$CP_CACHE/work-v$K8S_VERSION
    CP_APT=$work/apt
    mkdir -p "$work/debs" "$work/root" "$work/src"
    cp_apt_setup "$CP_APT" || return 1
    cp_log "apt-get update (private state)"
    cp_apt update >&2 || { cp_die "apt-get update failed"; return 1; }
    command -v dpkg-source >/dev/null || {
        cp_log "installing dpkg-dev (dpkg-source)"
        DEBIAN_FRONTEND=noninteractive cp_apt install -y --no-install-recommends dpkg-dev >&2 || return 1
    }

    (cd "$work/debs" && cp_apt download "golang-$GO_PACKAGE_VERSION-go" "golang-$GO_PACKAGE_VERSION-src" \
        etcd-server golang-github-modern-go-reflect2-dev >&2) || { cp_die "apt-get download failed"; return 1; }
    local deb
    for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root" || return 1; done

    local srcdir
    # Markers, not mere existence, say a step finished: an interrupted step is redone from scratch.
    if [[ ! -f $work/src/.extracted ]]; then
        cp_log "fetching source package $K8S_SRC_PACKAGE"
        rm -rf "$work/src" "$work/gopath" && mkdir -p "$work/src"
        (cd "$work/src" && cp_apt source --download-only "$K8S_SRC_PACKAGE" >&2) || { cp_die "apt-get source failed"; return 1; }
        (cd "$work/src" && timeout 600 dpkg-source --no-check -x ./*.dsc >&2) || { cp_die "dpkg-source -x failed"; return 1; }
        touch "$work/src/.extracted"
    fi
    srcdir=$(find "$work/src" -maxdepth 1 -mindepth 1 -type d -name "$K8S_SRC_PACKAGE-*" | head -n1)
    [[ -f $srcdir/cmd/kube-apiserver/apiserver.go ]] || { cp_die "no kubernetes tree in $srcdir"; return 1; }
    grep -q "gitVersion.*v$K8S_VERSION\|$K8S_VERSION" "$srcdir/debian/changelog" 2>/dev/null ||
        cp_log "warning: debian/changelog does not mention $K8S_VERSION"

    # Go ≥1.18 crashes the vendored reflect2 1.0.1 (SIGSEGV in mapiterinit on the first CR write).
    local reflect2=$work/root/usr/share/gocode/src/github.com/modern-go/reflect2
    [[ -d $reflect2 ]] || { cp_die "reflect2 sources missing at $reflect2"; return 1; }
    rm -rf "$srcdir/vendor/github.com/modern-go/reflect2"
    cp -rL "$reflect2" "$srcdir/vendor/github.com/modern-go/reflect2"

    local gopath=$work/gopath
    mkdir -p "$gopath/src/k8s.io"
    ln -sfn "$srcdir" "$gopath/src/k8s.io/kubernetes"
    export GOROOT=$work/root/usr/lib/go-$GO_PACKAGE_VERSION
    export GOPATH=$gopath GO111MODULE=off CGO_ENABLED=0 GOFLAGS='' GOCACHE=$work/gocache GOTOOLCHAIN=local
    export PATH=$GOROOT/bin:$PATH
    [[ -x $GOROOT/bin/go ]] || { cp_die "no go in $GOROOT"; return 1; }
    cp_log "$(go version)"

    local kdir=$gopath/src/k8s.io/kubernetes
    if [[ ! -f $work/.openapi-generated ]]; then
        cp_log "generating pkg/generated/openapi with the vendored openapi-gen"
        (cd "$kdir" && nice -n 10 go build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen >&2) || return 1
        local dirs
        # The packages that ask for OpenAPI definitions, as import paths (vendor/X → X).
        dirs=$(cd "$kdir" && grep -rl --include='*.go' -e '+k8s:openapi-gen=' pkg/ vendor/k8s.io/*/ 2>/dev/null |
            grep -v -e '/testdata/' -e '/test/' -e '_test.go$' -e 'vendor/k8s.io/code-generator/' \
                -e 'vendor/k8s.io/sample-' -e 'vendor/k8s.io/kube-openapi/' -e 'vendor/k8s.io/gengo/' |
            xargs -n1 dirname | sort -u |
            sed -e 's#^vendor/##' -e 't' -e 's#^#k8s.io/kubernetes/#' | paste -sd, -)
        [[ -n $dirs ]] || { cp_die "found no +k8s:openapi-gen packages"; return 1; }
        (cd "$kdir" && nice -n 10 timeout 1200 "$work/openapi-gen" \
            --input-dirs "$dirs" \
            --output-package k8s.io/kubernetes/pkg/generated/openapi \
            --output-base "$gopath/src" \
            -O zz_generated.openapi \
            --go-header-file hack/boilerplate/boilerplate.generatego.txt \
            --report-filename "$work/openapi-violations.txt" >&2) || { cp_die "openapi-gen failed"; return 1; }
        touch "$work/.openapi-generated"
    fi

    # As hack/lib/version.sh: both version packages (/version is served from client-go's).
    local major minor vpkg ldflags="-s -w"
    IFS=. read -r major minor _ <<<"$K8S_VERSION"
    for vpkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        vpkg=k8s.io/kubernetes/vendor/$vpkg
        ldflags+=" -X $vpkg.gitVersion=v$K8S_VERSION -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
    done
    mkdir -p "$CP_BIN"
    local cmd
    for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
        cp_log "go build $cmd (nice 10)"
        (cd "$kdir" && nice -n 10 timeout 3000 go build -ldflags "$ldflags" -o "$CP_BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2) ||
            { cp_die "go build $cmd failed"; return 1; }
        mv "$CP_BIN/$cmd.tmp" "$CP_BIN/$cmd"
    done
    cp "$work/root/usr/bin/etcd" "$CP_BIN/etcd"
    # The pod sandbox ("pause") image's only file: upstream's pause.c, static, so the image needs no libc.
    cp_log "gcc -static build/pause/linux/pause.c"
    gcc -Os -static -o "$CP_BIN/pause.tmp" "$srcdir/build/pause/linux/pause.c" -DVERSION="v$K8S_VERSION-bootfarm" >&2 ||
        { cp_die "building pause failed (gcc and libc6-dev come from scripts/setup-host)"; return 1; }
    strip "$CP_BIN/pause.tmp" && mv "$CP_BIN/pause.tmp" "$CP_BIN/pause"
    printf 'recipe=%s\nbuilt in %s s on %s\n' "$CP_RECIPE" "$((SECONDS - started))" "$(date -u +%FT%TZ)" >"$stamp"
    cp_log "built in $((SECONDS - started)) s into $CP_BIN"
    echo "$CP_BIN"
)

# --- start / stop ------------------------------------------------------------------------------

# A free loopback TCP port (the kernel picks; a tiny race with other starters is acceptable here).
cp_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

cp_certs() {
    local pki=$1
    mkdir -p "$pki"
    (
        set -e
        cd "$pki"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=bootfarm-test-ca" \
            -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' >apiserver.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile apiserver.ext -out apiserver.crt 2>/dev/null
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        chmod 600 ./*.key
    )
}

cp_wait_ready() {
    local dir=$1 port=$2 deadline=$((SECONDS + CP_READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        local f
        for f in "$dir"/pids/*.pid; do
            kill -0 "$(cat "$f")" 2>/dev/null || { cp_die "$(basename "$f" .pid) died while starting (see $dir/logs)"; return 1; }
        done
        if [[ $(curl -sS --max-time 3 --cacert "$dir/pki/ca.crt" -H "Authorization: Bearer $(cat "$dir/admin.token")" \
            "https://127.0.0.1:$port/readyz" 2>/dev/null) == ok ]]; then
            return 0
        fi
        sleep 0.5
    done
    cp_die "apiserver not ready after ${CP_READY_TIMEOUT}s (see $dir/logs)"
}

# Starts one component in its own process group, recording its pid; bounded by CP_MAX_LIFETIME.
cp_spawn() {
    local dir=$1 name=$2
    shift 2
    setsid timeout -s KILL "$CP_MAX_LIFETIME" "$@" >"$dir/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/pids/$name.pid"
}

cp_start() {
    local dir=${1:?usage: start DIR}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [[ -x $CP_BIN/kube-apiserver ]] || { cp_die "no binaries in $CP_BIN: run '$0 build' first"; return 1; }
    local f
    for f in "$dir"/pids/*.pid; do
        [[ -f $f ]] || continue
        if kill -0 "$(cat "$f")" 2>/dev/null; then
            cp_die "$dir already has a running $(basename "$f" .pid): stop it first"
            return 1
        fi
    done
    # Always a fresh cluster: new keys would not match old ServiceAccount tokens in etcd.
    rm -rf "$dir/pids" "$dir/etcd" "$dir/certs" "$dir/pki" "$dir/kubeconfig" "$dir/ports.env"
    mkdir -p "$dir/logs" "$dir/pids" "$dir/etcd" "$dir/certs"
    cp_certs "$dir/pki" || { cp_die "certificate generation failed"; return 1; }
    local token
    token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "$token" >"$dir/admin.token"
    # token,user,uid,"groups"
    echo "$token,admin,admin-uid,\"system:masters\"" >"$dir/tokens.csv"
    chmod 600 "$dir/admin.token" "$dir/tokens.csv"

    # CP_NODE=1 (a real kubelet will join, tests/cluster/e2e-node.sh): the apiserver reaches kubelets
    # at their InternalIP and admits node taints and pod priorities; the controller-manager also runs
    # the node lifecycle (not-ready taints), PersistentVolume binding and protection controllers; a
    # kube-scheduler runs. Without it: no scheduler, and controllers that need no node.
    local admit="NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
    local no_admit="DefaultTolerationSeconds,StorageObjectInUseProtection,PersistentVolumeClaimResize,Priority,TaintNodesByCondition,CertificateApproval,CertificateSigning,CertificateSubjectRestriction,DefaultIngressClass,RuntimeClass"
    local controllers='*,-nodeipam,-nodelifecycle,-csrsigning,-bootstrapsigner,-tokencleaner,-cloud-node-lifecycle,-attachdetach,-persistentvolume-binder,-persistentvolume-expander,-pvc-protection,-pv-protection,-ttl'
    local node_flags=()
    if [[ ${CP_NODE:-0} == 1 ]]; then
        admit+=",DefaultTolerationSeconds,StorageObjectInUseProtection,Priority,TaintNodesByCondition"
        no_admit="PersistentVolumeClaimResize,CertificateApproval,CertificateSigning,CertificateSubjectRestriction,DefaultIngressClass,RuntimeClass"
        controllers='*,-nodeipam,-csrsigning,-bootstrapsigner,-tokencleaner,-cloud-node-lifecycle,-persistentvolume-expander'
        node_flags=(--kubelet-preferred-address-types=InternalIP)
    fi
    # (The volume controllers probe a FlexVolume dir, by default under /usr/libexec: keep it here.)
    local kcm_flags=(--flex-volume-plugin-dir="$dir/flexvolume")

    local etcd_port etcd_peer api_port kcm_port sched_port
    etcd_port=$(cp_free_port) etcd_peer=$(cp_free_port) api_port=$(cp_free_port) kcm_port=$(cp_free_port) sched_port=$(cp_free_port)
    cp_spawn "$dir" etcd "$CP_BIN/etcd" \
        --name bootfarm-test --data-dir "$dir/etcd" --unsafe-no-fsync \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-cluster "bootfarm-test=http://127.0.0.1:$etcd_peer" --log-level warn

    cp_spawn "$dir" kube-apiserver "$CP_BIN/kube-apiserver" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" --insecure-port=0 \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --cert-dir="$dir/certs" --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
        --client-ca-file="$dir/pki/ca.crt" \
        --token-auth-file="$dir/tokens.csv" --authorization-mode=RBAC --anonymous-auth=false \
        --service-account-key-file="$dir/pki/sa.pub" --service-account-signing-key-file="$dir/pki/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --api-audiences=https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range=10.0.0.0/24 \
        --enable-admission-plugins="$admit" --disable-admission-plugins="$no_admit" "${node_flags[@]}" \
        --allow-privileged=true --profiling=false --logtostderr=true --v=1

    if ! cp_wait_ready "$dir" "$api_port"; then
        cp_stop "$dir"
        return 1
    fi

    cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bootfarm-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $dir/pki/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: bootfarm-test
  context: {cluster: bootfarm-test, user: admin, namespace: default}
current-context: bootfarm-test
EOF
    chmod 600 "$dir/kubeconfig"

    # Garbage collection of owned objects; ServiceAccount token Secrets (1.20 still creates them when the
    # controller-manager has the SA private key and the root CA).
    cp_spawn "$dir" kube-controller-manager "$CP_BIN/kube-controller-manager" \
        --kubeconfig="$dir/kubeconfig" --bind-address=127.0.0.1 --secure-port="$kcm_port" --port=0 \
        --authentication-kubeconfig="$dir/kubeconfig" --authorization-kubeconfig="$dir/kubeconfig" \
        --use-service-account-credentials=false \
        --service-account-private-key-file="$dir/pki/sa.key" --root-ca-file="$dir/pki/ca.crt" \
        --controllers="$controllers" "${kcm_flags[@]}" \
        --leader-elect=false --logtostderr=true --v=1
    if [[ ${CP_NODE:-0} == 1 ]]; then
        [[ -x $CP_BIN/kube-scheduler ]] || { cp_die "no kube-scheduler in $CP_BIN: run '$0 build'"; cp_stop "$dir"; return 1; }
        cp_spawn "$dir" kube-scheduler "$CP_BIN/kube-scheduler" \
            --kubeconfig="$dir/kubeconfig" --bind-address=127.0.0.1 --secure-port="$sched_port" --port=0 \
            --authentication-kubeconfig="$dir/kubeconfig" --authorization-kubeconfig="$dir/kubeconfig" \
            --leader-elect=false --logtostderr=true --v=1
    fi

    cat >"$dir/ports.env" <<EOF
ETCD_PORT=$etcd_port
APISERVER_PORT=$api_port
APISERVER_URL=https://127.0.0.1:$api_port
KCM_PORT=$kcm_port
SCHEDULER_PORT=$sched_port
EOF
    # The controller-manager is part of "started": give it a bounded moment to prove it runs.
    local deadline=$((SECONDS + CP_READY_TIMEOUT))
    until KUBECONFIG=$dir/kubeconfig timeout 10 kubectl get secret -n default -o name 2>/dev/null | grep -q 'secret/default-token-'; do
        if ! kill -0 "$(cat "$dir/pids/kube-controller-manager.pid")" 2>/dev/null || ((SECONDS >= deadline)); then
            cp_die "kube-controller-manager did not create the default ServiceAccount token (see $dir/logs)"
            cp_stop "$dir"
            return 1
        fi
        sleep 0.5
    done
    cp_log "ready: KUBECONFIG=$dir/kubeconfig (apiserver https://127.0.0.1:$api_port)"
}

cp_stop() {
    local dir=${1:?usage: stop DIR} f pid name
    [[ -d $dir/pids ]] || return 0
    # Reverse start order: scheduler, controller-manager, apiserver, etcd.
    for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
        f=$dir/pids/$name.pid
        [[ -f $f ]] || continue
        pid=$(cat "$f")
        # setsid made each component a process-group leader: signal the whole group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        local deadline=$((SECONDS + CP_STOP_TIMEOUT))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            cp_log "$name ($pid) ignored TERM; killing"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
        fi
        rm -f "$f"
    done
    cp_log "stopped $dir"
}

# A kubeconfig for a ServiceAccount, from the token Secret the controller-manager creates (waits for
# it, bounded). For running a component "as its ServiceAccount" with exactly its RBAC.
cp_sa_kubeconfig() {
    local dir=${1:?usage: sa-kubeconfig DIR NS SA} ns=${2:?namespace} sa=${3:?serviceaccount}
    dir=$(cd "$dir" && pwd)
    local out=$dir/sa-$ns-$sa.kubeconfig secret="" token="" deadline=$((SECONDS + CP_READY_TIMEOUT))
    local kc=(timeout 10 kubectl --kubeconfig "$dir/kubeconfig" -n "$ns")
    while ((SECONDS < deadline)); do
        secret=$("${kc[@]}" get sa "$sa" -o jsonpath='{.secrets[0].name}' 2>/dev/null || true)
        if [[ -n $secret ]]; then
            token=$("${kc[@]}" get secret "$secret" -o jsonpath='{.data.token}' 2>/dev/null | base64 -d || true)
            [[ -n $token ]] && break
        fi
        sleep 0.5
    done
    [[ -n $token ]] || { cp_die "no token Secret for ServiceAccount $ns/$sa after ${CP_READY_TIMEOUT}s"; return 1; }
    local server
    server=$(sed -n 's/^ *server: //p' "$dir/kubeconfig")
    (
        umask 077
        cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bootfarm-test
  cluster:
    server: $server
    certificate-authority: $dir/pki/ca.crt
users:
- name: $ns-$sa
  user:
    token: $token
contexts:
- name: $ns-$sa
  context: {cluster: bootfarm-test, user: $ns-$sa, namespace: $ns}
current-context: $ns-$sa
EOF
    )
    echo "$out"
}

cp_env() {
    local dir=${1:?usage: env DIR}
    dir=$(cd "$dir" && pwd)
    echo "export KUBECONFIG=$dir/kubeconfig"
    sed 's/^/export /' "$dir/ports.env"
}

cp_main() {
    set -uo pipefail
    local cmd=${1:-}
    shift || true
    case $cmd in
    build) cp_build ;;
    start)
        # Interrupted mid-start: leave nothing running.
        trap 'cp_stop "${1:?}"; exit 130' INT TERM
        cp_start "$@"
        ;;
    stop) cp_stop "$@" ;;
    env) cp_env "$@" ;;
    sa-kubeconfig) cp_sa_kubeconfig "$@" ;;
    *)
        sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
        return 2
        ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    cp_main "$@"
    exit $?
fi
