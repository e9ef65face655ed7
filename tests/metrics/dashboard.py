#!/usr/bin/env python3
"""The Grafana dashboard and the chart's alert rules against a real Prometheus.

A standalone farm (loopback only) boots a burst of real kernels on two runners while a real
Prometheus scrapes its /metrics every second with the chart's rules loaded. Then every PromQL
expression of every dashboard panel (and its template variables) is evaluated through Prometheus's
HTTP API over the burst, and must parse and return data; the numbers must agree with what the
farm's own API says happened (the queue rose and fell to zero, desired and actual runners met,
the percentiles lie within the jobs' own durations at the histogram's resolution, the pass rate is
the pass rate). The alert rules must evaluate cleanly, stay quiet on the healthy burst, and
BootfarmOperatorDown must go pending once the farm is stopped. The main panels are drawn from the
same data into a picture kept as a test artifact.

Usage: dashboard.py --bin-dir DIR --fixtures DIR --rules FILE --dashboard FILE --out DIR
"""

import argparse
import datetime
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from farmtest import Failure, check, free_ports, http_json, run_test, wait_for  # noqa: E402

SCRAPE_S = 2
STEP_S = 2
# Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval).
RATE_INTERVAL = f"{max(STEP_S + SCRAPE_S, 4 * SCRAPE_S)}s"
RUNNERS = 2
# (arch, initramfs, expected phase) of the burst: passes on two arches and real panics.
BURST = [("x86_64", "initrd-poweroff.cpio.gz", "Succeeded")] * 6 + [
    ("x86_64", "initrd-panic.cpio.gz", "Failed")
] * 2 + [("arm64", "initrd-poweroff.cpio.gz", "Succeeded")] * 2
CONSOLE = {"x86_64": "ttyS0", "arm64": "ttyAMA0"}
ALL_ARCHES = ["x86_64", "i386", "arm64", "armv7", "riscv64", "ppc64le", "s390x"]
# operator/src/metrics.rs: boot_buckets (1, 2, 4, ... 4096 s).
BOOT_BUCKETS = [2.0**i for i in range(13)]
FINAL = {"Succeeded", "Failed", "Error", "Canceled"}
DEADLINE_S = 900


def log(msg):
    print(f"dashboard: {msg}", flush=True)


class Prom:
    def __init__(self, url):
        self.url = url

    def api(self, path, **params):
        q = urllib.parse.urlencode(params, doseq=True)
        try:
            doc = http_json(f"{self.url}/api/v1/{path}?{q}", timeout=30)
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            raise Failure(f"Prometheus refused {path} {params}: {e.code} {body}") from None
        check(doc.get("status") == "success", f"Prometheus {path} {params}: {doc}")
        return doc["data"]

    def instant(self, expr, at):
        return self.api("query", query=expr, time=at)["result"]

    def scalar(self, expr, at):
        r = self.instant(expr, at)
        return float(r[0]["value"][1]) if r else None

    def series(self, expr, start, end):
        """{legend labels: [(t, v)]} with NaN points dropped."""
        data = self.api("query_range", query=expr, start=start, end=end, step=STEP_S)
        out = {}
        for s in data["result"]:
            pts = [(float(t), float(v)) for t, v in s["values"] if not math.isnan(float(v))]
            out[tuple(sorted(s["metric"].items()))] = pts
        return out


def dashboard_queries(path):
    """(panel title, legend, expr) for every target, with the template variables at "All"."""
    d = json.load(open(path))
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"].replace("$pool", ".*").replace("$arch", ".*").replace("$__rate_interval", RATE_INTERVAL)
            out.append((p["title"], t.get("legendFormat", ""), expr))
    variables = [v["query"]["query"] for v in d["templating"]["list"] if v["type"] == "query"]
    return out, variables


# The operator reads its clock for a metric after the write whose timestamp the API shows, so an
# observation is at or a little above the API's number (more on a loaded 2-core machine).
LATE_S = 1.0


def bucket_range(values):
    """The histogram's resolution around values: the bound at or below the least (0 below the first)
    and the bound at or above the greatest plus LATE_S."""
    lo = max([b for b in [0.0] + BOOT_BUCKETS if b <= min(values)])
    hi = min([b for b in BOOT_BUCKETS if b >= max(values) + LATE_S])
    return lo, hi


def histogram_quantile(q, values):
    """What Prometheus's histogram_quantile returns for these observations in bootfarm's buckets
    (promql/quantile.go: the rank's bucket, interpolated linearly from its lower bound)."""
    bounds = BOOT_BUCKETS + [math.inf]
    counts = [sum(1 for v in values if v <= b) for b in bounds]
    rank = q * counts[-1]
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    start, below = (0.0, 0) if b == 0 else (bounds[b - 1], counts[b - 1])
    return start + (bounds[b] - start) * (rank - below) / (counts[b] - below)


def quantile_range(q, values):
    """histogram_quantile of the observations, each as the API says or up to LATE_S later;
    monotonic in every observation, so the two ends bound it."""
    return histogram_quantile(q, values), histogram_quantile(q, [v + LATE_S for v in values])


def run(args, procs, work):
    fx = args.fixtures
    for arch, initrd, _ in BURST:
        check(os.path.isfile(f"{fx}/{arch}/kernel") and os.path.isfile(f"{fx}/{arch}/{initrd}"),
              f"fixture {fx}/{arch}/{initrd} missing (run scripts/fixtures)")
    farm_port, prom_port = free_ports(2)
    farm = f"http://127.0.0.1:{farm_port}"
    procs.start("farm", [
        f"{args.bin_dir}/bootfarm-operator", "standalone", "--data-dir", f"{work}/data",
        "--listen", f"127.0.0.1:{farm_port}", "--max-runners", str(RUNNERS), "--idle-timeout", "3",
        "--runner-bin", f"{args.bin_dir}/bootfarm-runner", "--allow-local-artifacts", fx,
    ], f"{args.out}/operator.log")
    wait_for("the farm's /readyz", lambda: urllib.request.urlopen(f"{farm}/readyz", timeout=2).status == 200, 30)

    # The scrape as the chart's ServiceMonitor makes it: job is the Service's name, plus namespace.
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [os.path.abspath(args.rules)],
        "scrape_configs": [{
            "job_name": "bf-bootfarm",
            "static_configs": [{"targets": [f"127.0.0.1:{farm_port}"], "labels": {"namespace": "bootfarm"}}],
        }],
    }
    with open(f"{work}/prometheus.yml", "w") as f:
        json.dump(config, f)  # JSON is YAML
    procs.start("prometheus", [
        "prometheus", f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/tsdb",
        f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn",
    ], f"{args.out}/prometheus.log")
    prom = Prom(f"http://127.0.0.1:{prom_port}")
    wait_for("Prometheus ready", lambda: urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2).status == 200, 60)
    # A few clean scrapes of the idle farm first, so every zero-started counter has its 0 sample.
    wait_for("three good scrapes of the farm",
             lambda: (prom.scalar('sum_over_time(up{job="bf-bootfarm"}[1m])', time.time()) or 0) >= 3, 60)
    t_start = time.time() - 2 * SCRAPE_S

    names = {}
    t_submit = time.time()
    for arch, initrd, want in BURST:
        spec = {"apiVersion": "bootfarm.dev/v1alpha1", "kind": "BootJob", "metadata": {"generateName": "dash-"},
                "spec": {"arch": arch, "kernel": {"url": f"{fx}/{arch}/kernel"}, "initrd": {"url": f"{fx}/{arch}/{initrd}"},
                         "bootArgs": f"console={CONSOLE[arch]} panic=-1", "accel": "tcg", "expect": "poweroff"}}
        doc = http_json(f"{farm}/api/v1/bootjobs", data=json.dumps(spec).encode())
        names[doc["metadata"]["name"]] = (arch, want)
    log(f"submitted {len(names)} jobs to 2 runners")

    def all_final():
        docs = {n: http_json(f"{farm}/api/v1/bootjobs/{n}") for n in names}
        return docs if all(d.get("status", {}).get("phase") in FINAL for d in docs.values()) else None

    jobs = wait_for("every job to finish", all_final, 600, every=1)
    for n, d in jobs.items():
        check(d["status"]["phase"] == names[n][1], f"{n} ({names[n][0]}) ended {d['status']['phase']}, expected {names[n][1]}")
    # Scale to zero, seen by Prometheus, then a few more scrapes for the tail of every graph.
    wait_for("desired and actual runners back to 0 in Prometheus", lambda: prom.scalar(
        'sum(bootfarm_runners_desired) + sum(bootfarm_runners{state!~"failed|terminating"})', time.time()) == 0, 90)
    time.sleep(3 * SCRAPE_S)
    t_end = time.time()
    log(f"burst scraped over {t_end - t_start:.0f} s")

    # What the farm's API says happened: the truth the dashboard must agree with.
    def ts(s):
        return datetime.datetime.fromisoformat(s).timestamp()

    ttv = [ts(d["status"]["completionTime"]) - ts(d["metadata"]["creationTimestamp"]) for d in jobs.values()]
    wait = [ts(d["status"]["startTime"]) - ts(d["status"]["queuedAt"]) for d in jobs.values()]
    dur = {}
    for n, d in jobs.items():
        dur.setdefault(names[n][0], []).append(ts(d["status"]["completionTime"]) - ts(d["status"]["startTime"]))
    passed = sum(1 for _, want in names.values() if want == "Succeeded")
    log("time to verdict " + ", ".join(f"{v:.1f}" for v in sorted(ttv)) + " s")

    queries, variables = dashboard_queries(args.dashboard)
    data = {}
    for title, legend, expr in queries:
        s = prom.series(expr, t_start, t_end)
        check(s and any(pts for pts in s.values()), f"panel {title!r} ({legend or expr}) returned no data: {expr}")
        data[(title, legend)] = s
    for v in variables:
        metric, label = v[len("label_values("):-1].split(", ")
        vals = prom.api(f"label/{label}/values", **{"match[]": metric})
        check(vals, f"template variable {v} has no values")
        if label == "pool":
            check(vals == ["local"], f"pool variable: {vals}")
        else:
            # The standalone farm serves every arch, so every arch is there from the start.
            check(set(vals) == set(ALL_ARCHES), f"arch variable: {vals}")
    log(f"{len(queries)} panel queries and {len(variables)} variables parse and return data")

    def only(title, legend=""):
        s = data[(title, legend)]
        check(len(s) == 1, f"{title}: expected one series, got {list(s)}")
        return next(iter(s.values()))

    def by(title, label, legend=None):
        s = data[(title, legend)] if legend is not None else next(v for (t, _), v in data.items() if t == title)
        return {dict(k).get(label): v for k, v in s.items()}

    def values(pts):
        return [v for _, v in pts]

    # The queue: empty before, at least the jobs the runners could not take at once, empty after.
    q = only("Queue depth per pool", "{{pool}}")
    check(q[0][1] == 0 and q[-1][1] == 0, f"queue depth not 0 before and after the burst: {q[0]} … {q[-1]}")
    check(max(values(q)) >= len(names) - RUNNERS, f"queue depth peaked at {max(values(q))}, expected >= {len(names) - RUNNERS}")
    stat = prom.scalar(next(e for t, _, e in queries if t == "Queued jobs"), t_end)
    check(stat == 0, f"the Queued jobs stat reads {stat} after the burst")

    phases = by("Jobs by phase", "phase")
    check(phases["Succeeded"][-1][1] == passed and phases["Failed"][-1][1] == len(names) - passed,
          f"jobs by phase at the end: Succeeded {phases['Succeeded'][-1]}, Failed {phases['Failed'][-1]}")
    check(1 <= max(values(phases["Running"])) <= RUNNERS, f"running jobs peaked at {max(values(phases['Running']))}")

    for title in ("Running jobs", "Busy runners"):
        peak = max(values(only(title)))
        check(peak == RUNNERS, f"the {title} stat peaked at {peak}, expected {RUNNERS}")
    busy = by("Runners by state", "state")["busy"]
    check(max(values(busy)) == RUNNERS, f"busy runners peaked at {max(values(busy))}, expected {RUNNERS}")
    desired = only("Desired vs actual runners", "desired {{pool}}")
    actual = only("Desired vs actual runners", "actual {{pool}}")
    check(max(values(desired)) == RUNNERS, f"desired runners peaked at {max(values(desired))}")
    met = [t for (t, d), (_, a) in zip(desired, actual) if d == a == RUNNERS]
    check(met, "desired and actual runners never met at the full count")
    check(desired[-1][1] == actual[-1][1] == 0, f"desired/actual at the end: {desired[-1]} / {actual[-1]}")
    ups = by("Scale decisions", "direction")
    check(max(values(ups["up"])) > 0 and max(values(ups["down"])) > 0, "scale decisions show no scale-up or no scale-down")

    rate = prom.scalar(next(e for t, _, e in queries if t.startswith("Pass rate")), t_end)
    check(rate is not None and abs(rate - passed / len(names)) < 0.02, f"pass rate stat {rate}, expected {passed / len(names)}")
    results = by("Results over time", "result")
    check(max(values(results["pass"])) > 0 and max(values(results["fail"])) > 0, "results over time miss pass or fail")

    # Percentiles: every point within the histogram's resolution of the jobs' own numbers.
    def within(title, legend, truth, what):
        lo, hi = bucket_range(truth)
        for labels, pts in data[(title, legend)].items():
            for t, v in pts:
                check(lo <= v <= hi, f"{title} {legend} {dict(labels)} = {v:.2f} at {t:.0f}, outside {what} [{lo}, {hi}]")

    for legend in ("p50", "p90", "p99"):
        within("Time to verdict (p50 / p90 / p99)", legend, ttv, "the jobs' times to verdict")
        within("Queue wait (p50 / p90 / p99)", legend, wait, "the jobs' queue waits")
    # Every arch has its (empty) series from the start; only the booted ones have values.
    p95_arches = {a: pts for a, pts in by("Job duration p95 by arch", "arch").items() if pts}
    check(set(p95_arches) == set(dur), f"job durations by arch: {sorted(p95_arches)}")
    for arch, pts in p95_arches.items():
        lo, hi = bucket_range(dur[arch])
        check(all(lo <= v <= hi for v in values(pts)), f"{arch} p95 duration {values(pts)} outside [{lo}, {hi}]")
    # And over the whole burst, the dashboard's expressions with one window spanning it: exactly
    # what the histogram makes of the jobs' own numbers.
    span = f"{math.ceil(t_end - t_start)}s"

    def over_burst(expr):
        return prom.instant(expr.replace(f"[{RATE_INTERVAL}]", f"[{span}]"), t_end)

    exprs = {(t, lg): e for t, lg, e in queries}
    for qv, legend in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        for title, truth in (("Time to verdict (p50 / p90 / p99)", ttv), ("Queue wait (p50 / p90 / p99)", wait)):
            r = over_burst(exprs[(title, legend)])
            got = float(r[0]["value"][1]) if len(r) == 1 else None
            lo, hi = quantile_range(qv, truth)
            check(got is not None and lo - 1e-6 <= got <= hi + 1e-6,
                  f"{title} {legend} over the burst {got}, the jobs' own numbers give [{lo:.3f}, {hi:.3f}]"
                  f" (+{LATE_S} s)")
    p95 = [s for s in over_burst(exprs[("Job duration p95 by arch", "{{arch}}")]) if not math.isnan(float(s["value"][1]))]
    check(len(p95) == 2, f"p95 duration over the burst: {p95}")
    for s in p95:
        arch = s["metric"]["arch"]
        lo, hi = quantile_range(0.95, dur[arch])
        got = float(s["value"][1])
        check(lo - 1e-6 <= got <= hi + 1e-6, f"{arch} p95 duration over the burst {got}, the jobs give [{lo:.3f}, {hi:.3f}]")
    for legend in ("p50", "p90"):
        for pts in data[("Runner startup time (p50 / p90)", f"{legend} {{{{pool}}}}")].values():
            check(all(0 < v <= 60 for v in values(pts)), f"runner startup {legend} {values(pts)}")

    for title in ("Infrastructure retries", "Lease expirations"):
        for pts in data[(title, "{{pool}}")].values():
            check(all(v == 0 for v in values(pts)), f"{title} not 0 on a healthy burst: {values(pts)}")
    routes = {dict(k).get("route") for k in data[("API requests by route and status", "{{route}} {{status}}")]}
    check({"/api/v1/bootjobs", "/api/v1/runner/claim"} <= routes, f"API routes seen: {routes}")
    for labels, pts in data[("API latency p99 by route", "{{route}}")].items():
        check(all(0 < v <= 40 for v in values(pts)), f"API p99 latency {dict(labels)}: {values(pts)}")
    log("the numbers agree with the farm's own record of the burst")

    # The alert rules: loaded, evaluated without error, quiet on the healthy farm.
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    check(len(rules) == 4 and all(r["health"] == "ok" for r in rules),
          f"alert rules: {[(r['name'], r['health'], r.get('lastError')) for r in rules]}")
    # Each rule's every selector must match the farm's real series: a renamed metric or label would
    # otherwise leave an alert that can never fire, and quiet.
    for r in rules:
        for sel in set(re.findall(r"\b(?:bootfarm_\w+|up)\{[^}]*\}", r["query"])):
            n = prom.scalar(f"count({sel})", t_end)
            check(n, f"{r['name']}: {sel} matches no series of the real farm")
    # Quiet once the farm has drained (a scrape slowed by the load may leave a pending alert for a
    # few evaluations).
    wait_for("no active alert on the drained, healthy farm", lambda: not prom.api("alerts")["alerts"], 20, every=1)
    draw(data, args.out, t_submit)
    # Stopping the farm: its scrape fails and BootfarmOperatorDown goes pending (it fires after 5m).
    procs.stop("farm")

    def pending():
        return [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == "BootfarmOperatorDown"
                and a["state"] == "pending" and a["labels"].get("namespace") == "bootfarm"]

    wait_for("BootfarmOperatorDown pending after the farm stopped", pending, 30, every=0.5)
    log("alert rules healthy, quiet on the healthy farm; BootfarmOperatorDown pending once it stopped")
    with open(f"{args.out}/queries.json", "w") as f:
        json.dump({f"{t} | {lg}": {json.dumps(dict(k)): v for k, v in s.items()} for (t, lg), s in data.items()}, f)


def draw(data, out, t0):
    """The main panels, as the dashboard shows them, from the real Prometheus data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("Queue depth per pool", ["{{pool}}"], "jobs"),
        ("Jobs by phase", ["{{phase}}"], "jobs"),
        ("Desired vs actual runners", ["desired {{pool}}", "actual {{pool}}"], "runners"),
        ("Runners by state", ["{{state}}"], "runners"),
        ("Time to verdict (p50 / p90 / p99)", ["p50", "p90", "p99"], "seconds"),
        ("Results over time", ["{{result}}"], "jobs"),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(12, 9), sharex=True)
    for ax, (title, legends, unit) in zip(axes.flat, panels):
        for legend in legends:
            for labels, pts in sorted(data[(title, legend)].items()):
                if not pts or (max(v for _, v in pts) == 0 and len(data[(title, legend)]) > 1):
                    continue
                name = legend
                for k, v in labels:
                    name = name.replace("{{" + k + "}}", v)
                ax.plot([t - t0 for t, _ in pts], [v for _, v in pts], label=name, linewidth=1.6,
                        drawstyle="steps-post" if unit != "seconds" else "default",
                        marker="o" if unit == "seconds" else None, markersize=3)
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("seconds since the burst was submitted")
    fig.suptitle(f"bootfarm dashboard: {len(BURST)} real boots on {RUNNERS} runners, scraped by Prometheus", fontsize=13)
    fig.tight_layout()
    fig.savefig(f"{out}/dashboard.png", dpi=80)
    plt.close(fig)
    log(f"panels drawn: {out}/dashboard.png")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    # The farm starts runners from another directory: every path must be absolute.
    for k in ("bin_dir", "fixtures", "rules", "dashboard", "out"):
        setattr(args, k, os.path.abspath(getattr(args, k)))
    os.makedirs(args.out, exist_ok=True)
    return run_test("dashboard", DEADLINE_S, args.out, lambda procs, work: run(args, procs, work))


if __name__ == "__main__":
    sys.exit(main())
