"""What the Python tests that drive a real farm share: failures, free loopback ports, child
processes that cannot outlive the test, JSON over HTTP, and waiting with a deadline.

Import it with the tests/ directory on sys.path (the tests do this themselves):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pylib"))
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


class Failure(Exception):
    pass


def check(cond, msg):
    """Fails the test with msg unless cond."""
    if not cond:
        raise Failure(msg)


def free_ports(n):
    """n distinct free loopback ports (all held until all are chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def die_with_parent():
    """In the child: SIGKILL when this test's process dies, however it dies."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Processes:
    """Children in their own process groups, stopped (TERM, then KILL) whatever happens."""

    def __init__(self):
        self.procs = {}

    def start(self, name, argv, logfile):
        with open(logfile, "wb") as out:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                                preexec_fn=die_with_parent)
        return self.procs[name]

    def stop(self, name, grace=20):
        p = self.procs.get(name)
        if p is None:
            return
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        # Forgotten only once reaped: an interrupted stop is finished by stop_all.
        del self.procs[name]

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)


def http_json(url, data=None, timeout=10, token=None, method=None):
    """The JSON answer of a GET (or a POST of data, or `method`), with a bearer token if given."""
    headers = {"content-type": "application/json"} if data else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def wait_for(what, fn, timeout, every=0.25):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
            if last:
                return last
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = e
        time.sleep(every)
    raise Failure(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def run_test(name, deadline_s, out, body):
    """Runs body(procs, work) under a deadline, in a fresh work directory, and says PASS or FAIL.

    Whatever happens (a failure, a bug of the test, SIGTERM/SIGINT, the deadline), every process
    started through `procs` is stopped before this returns. Returns the exit status."""
    procs = Processes()
    # SIGTERM/SIGINT unwind through the finally below, so nothing started here outlives the test.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(2))
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(Failure(f"the test took over {deadline_s} s")))
    signal.alarm(deadline_s)
    with tempfile.TemporaryDirectory(prefix=f"bootfarm-{name}.") as work:
        try:
            body(procs, work)
        except Failure as e:
            print(f"{name}: FAIL: {e} (logs in {out})", file=sys.stderr)
            return 1
        except Exception:  # a bug of the test or a tool's timeout: still a failure, with its traceback
            import traceback

            traceback.print_exc()
            print(f"{name}: FAIL (logs in {out})", file=sys.stderr)
            return 1
        finally:
            signal.alarm(0)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            procs.stop_all()
    print(f"{name}: PASS", flush=True)
    return 0
