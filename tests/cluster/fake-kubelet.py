#!/usr/bin/env python3
"""A kubelet stand-in for runner pods, for tests against a real kube-apiserver with no nodes.

It does for pods matching a label selector what a kubelet (and the scheduler) would: registers a
Node, binds each new pod to it, materialises its Secret/ConfigMap/emptyDir volumes as local directories, starts
the runner container's command as a local process (`--runner-bin ARGS`, env from the pod spec, paths
under mount points rewritten to the local volume directories), reports the pod phase through the
status subresource (Running, then Succeeded/Failed when the process exits), and when a pod is deleted
stops the process (SIGTERM, then SIGKILL after the grace period) and removes the pod with grace
period 0. Only kubectl is needed.

Usage: fake-kubelet.py --kubeconfig F --namespace NS --selector L --runner-bin PATH --work DIR
SIGTERM/SIGINT: stops every process it started, then exits. SIGUSR1 pauses it and SIGUSR2 resumes
it (tests use that to keep pods Pending). Not SIGSTOP: a stopped process in a process group whose
parent has gone (as under a CI harness that starts the run in its own session) makes the kernel
hang up the whole group.
"""

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time

NODE = "fake-kubelet"
POLL = 0.5


def log(msg):
    print(f"fake-kubelet: {msg}", file=sys.stderr, flush=True)


class Kubelet:
    def __init__(self, args):
        self.args = args
        self.procs = {}  # pod uid -> (name, Popen)
        self.started = set()  # uids ever started (never restarted: restartPolicy Never)
        self.stopping = False
        self.paused = False

    def kubectl(self, *argv, stdin=None, check=True):
        cmd = ["kubectl", "--kubeconfig", self.args.kubeconfig, "-n", self.args.namespace, *argv]
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            log(f"kubectl {' '.join(argv[:3])}: {r.stderr.strip()[:300]}")
        return r

    def pods(self):
        r = self.kubectl("get", "pods", "-l", self.args.selector, "-o", "json")
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)["items"]

    def patch_status(self, name, status):
        self.kubectl(
            "patch", "pod", name, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}), check=False,
        )

    def bind(self, name):
        binding = {
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": self.args.namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
        }
        path = f"/api/v1/namespaces/{self.args.namespace}/pods/{name}/binding"
        return self.kubectl("create", "--raw", path, "-f", "-", stdin=json.dumps(binding)).returncode == 0

    def volumes(self, pod, root):
        """Local directories for the pod's volumes: name -> path."""
        out = {}
        for v in pod["spec"].get("volumes", []):
            d = os.path.join(root, "volumes", v["name"])
            os.makedirs(d, exist_ok=True)
            data = {}
            if "secret" in v:
                r = self.kubectl("get", "secret", v["secret"]["secretName"], "-o", "json")
                if r.returncode != 0:
                    return None  # a kubelet waits for the Secret
                data = {k: base64.b64decode(s) for k, s in json.loads(r.stdout).get("data", {}).items()}
            elif "configMap" in v:
                r = self.kubectl("get", "configmap", v["configMap"]["name"], "-o", "json")
                if r.returncode != 0:
                    return None
                data = {k: s.encode() for k, s in json.loads(r.stdout).get("data", {}).items()}
            elif "hostPath" in v:
                out[v["name"]] = v["hostPath"]["path"]
                continue
            for k, b in data.items():
                with open(os.path.join(d, k), "wb") as f:
                    f.write(b)
            out[v["name"]] = d
        return out

    def start(self, pod):
        meta, spec = pod["metadata"], pod["spec"]
        name, uid = meta["name"], meta["uid"]
        container = next((c for c in spec["containers"] if c["name"] == "runner"), spec["containers"][0])
        root = os.path.join(self.args.work, name)
        vols = self.volumes(pod, root)
        if vols is None:
            return
        mounts = sorted(
            ((m["mountPath"], vols[m["name"]]) for m in container.get("volumeMounts", []) if m["name"] in vols),
            key=lambda m: -len(m[0]),
        )

        def local(value):
            for mount, d in mounts:
                if value == mount or value.startswith(mount.rstrip("/") + "/"):
                    return d + value[len(mount.rstrip("/")):]
            return value

        env = dict(os.environ)
        env["HOSTNAME"] = name
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = local(e["value"])
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                r = self.kubectl("get", "secret", ref["name"], "-o", "json")
                if r.returncode != 0:
                    return  # a kubelet waits for the Secret
                env[e["name"]] = base64.b64decode(json.loads(r.stdout)["data"][ref["key"]]).decode()
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = name
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[e["name"]] = meta.get("namespace", "")
        argv = [self.args.runner_bin] + [local(a) for a in container.get("command", [])[1:]] + \
            [local(a) for a in container.get("args", [])]
        if not self.bind(name):
            return
        logf = open(os.path.join(root, "runner.log"), "ab")
        p = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=root,
                             start_new_session=True)
        self.procs[uid] = (name, p)
        self.started.add(uid)
        log(f"started {name} (pid {p.pid}): {' '.join(argv[1:])}")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.patch_status(name, {
            "phase": "Running", "startTime": now, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{
                "name": container["name"], "image": container.get("image", ""), "imageID": "",
                "ready": True, "restartCount": 0, "started": True,
                "state": {"running": {"startedAt": now}},
            }],
        })

    def stop(self, uid, grace):
        name, p = self.procs.pop(uid)
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        log(f"stopped {name} (exit {p.returncode})")
        return name

    def step(self):
        pods = self.pods()
        if pods is None:
            return
        seen = set()
        for pod in pods:
            meta = pod["metadata"]
            uid, name = meta["uid"], meta["name"]
            seen.add(uid)
            if meta.get("deletionTimestamp"):
                grace = min(int(meta.get("deletionGracePeriodSeconds") or 0), self.args.max_grace)
                if uid in self.procs:
                    self.stop(uid, grace)
                self.kubectl("delete", "pod", name, "--grace-period=0", "--force", "--wait=false", check=False)
                shutil.rmtree(os.path.join(self.args.work, name), ignore_errors=True)
                continue
            if uid not in self.started:
                self.start(pod)
            elif uid in self.procs:
                n, p = self.procs[uid]
                if p.poll() is not None:
                    del self.procs[uid]
                    phase = "Succeeded" if p.returncode == 0 else "Failed"
                    log(f"{n} exited {p.returncode}: {phase}")
                    self.patch_status(n, {"phase": phase})
        # Pods removed without a graceful phase (force-deleted): kill what is left.
        for uid in [u for u in self.procs if u not in seen]:
            self.stop(uid, 0)

    def register_node(self):
        # Pods bound to a node that does not exist are force-deleted as orphans by the
        # controller-manager's pod GC: the node must exist, as a real kubelet's would.
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }
        r = subprocess.run(["kubectl", "--kubeconfig", self.args.kubeconfig, "apply", "-f", "-"],
                           input=json.dumps(node), capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            log(f"registering node {NODE} failed: {r.stderr.strip()[:300]}")
            sys.exit(1)

    def run(self):
        def on_signal(_sig, _frame):
            self.stopping = True

        def on_pause(sig, _frame):
            self.paused = sig == signal.SIGUSR1
            log("paused" if self.paused else "resumed")
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGUSR1, on_pause)
        signal.signal(signal.SIGUSR2, on_pause)
        os.makedirs(self.args.work, exist_ok=True)
        self.register_node()
        while not self.stopping:
            try:
                if not self.paused:
                    self.step()
            except Exception as e:  # one bad pod or a slow apiserver must not end the kubelet
                log(f"step failed: {e!r}")
            time.sleep(POLL)
        for uid in list(self.procs):
            self.stop(uid, 5)
        log("exiting")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--selector", default="app.kubernetes.io/component=runner")
    ap.add_argument("--runner-bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--max-grace", type=int, default=10)
    Kubelet(ap.parse_args()).run()


if __name__ == "__main__":
    main()
