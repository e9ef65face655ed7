#!/usr/bin/env python3
"""The web UI in a real browser (Debian's headless Chromium, driven by Playwright) against a real
standalone farm booting real kernels, with tokens on. It checks that:

- the token prompt appears, refuses a wrong token and lets the right one in;
- the jobs table shows a job moving Queued -> Running -> Succeeded without a reload (every phase
  the row showed is recorded in the page as it changes);
- a panicking job's page highlights the panic line, where the result says it is;
- the issue's line link scrolls to that line, and the same link opened cold does too;
- cancel works on a running boot;
- the pools view shows the runner pool with its desired and actual counts and its decisions;
- a 64 MiB console log keeps the page responsive: only a window of lines is in the page, the
  line count is right, a deep line link lands, and no task blocks the page for long.

The 64 MiB log is posted through the runner protocol by this test on a second farm that has no
runners of its own: no real boot prints 64 MiB in CI time. Everything else is real boots.
Screenshots of each view are kept in --out.

Usage: ui.py --bin-dir DIR --fixtures DIR --chromium PATH --out DIR
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from farmtest import Failure, check, free_ports, http_json, run_test, wait_for  # noqa: E402

from playwright.sync_api import sync_playwright  # noqa: E402

USER_TOKEN = "ui-user-" + os.urandom(8).hex()
RUNNER_TOKEN = "ui-runner-" + os.urandom(8).hex()
FINAL = {"Succeeded", "Failed", "Error", "Canceled"}
BIG_LOG = 64 << 20
DEADLINE_S = 900
# The longest the page may be busy at once while it loads the 64 MiB log.
LONGEST_TASK_MS = 1500


def log(msg):
    print(f"ui: {msg}", flush=True)


def job_spec(fx, initrd, timeout=None, prefix="ui-"):
    spec = {"arch": "x86_64", "kernel": {"url": f"{fx}/x86_64/kernel"},
            "initrd": {"url": f"{fx}/x86_64/{initrd}"}, "bootArgs": "console=ttyS0 panic=-1",
            "accel": "tcg", "expect": "poweroff"}
    if timeout:
        spec["timeouts"] = {"boot": timeout, "total": timeout}
    return {"apiVersion": "bootfarm.dev/v1alpha1", "kind": "BootJob", "metadata": {"generateName": prefix}, "spec": spec}


class Farm:
    def __init__(self, url):
        self.url = url

    def submit(self, doc):
        return http_json(f"{self.url}/api/v1/bootjobs", data=json.dumps(doc).encode(), token=USER_TOKEN)["metadata"]["name"]

    def job(self, name):
        return http_json(f"{self.url}/api/v1/bootjobs/{name}", token=USER_TOKEN)

    def phase(self, name):
        return self.job(name).get("status", {}).get("phase")

    def raw(self, path, token=USER_TOKEN, data=None, content_type=None):
        headers = {"authorization": f"Bearer {token}"}
        if content_type:
            headers["content-type"] = content_type
        req = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read()

    def runner(self, path, body):
        return http_json(f"{self.url}/api/v1/runner/{path}", data=json.dumps(body).encode(), token=RUNNER_TOKEN, timeout=60)


def start_farm(procs, name, args, work, runners, extra=()):
    port = free_ports(1)[0]
    tokens = f"{work}/{name}.tokens"
    with open(tokens, "w") as f:
        f.write(f"user:{USER_TOKEN}\nrunner:{RUNNER_TOKEN}\n")
    procs.start(name, [
        f"{args.bin_dir}/bootfarm-operator", "standalone", "--data-dir", f"{work}/{name}",
        "--listen", f"127.0.0.1:{port}", "--max-runners", str(runners), "--idle-timeout", "30",
        "--token-file", tokens, "--runner-bin", f"{args.bin_dir}/bootfarm-runner",
        "--allow-local-artifacts", args.fixtures, *extra,
    ], f"{args.out}/{name}.log")
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{name}'s /readyz", lambda: urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200, 30)
    return Farm(url)


def in_view(page, selector):
    """Whether the element is inside the console's visible box, and that box in the window's."""
    return page.evaluate("""sel => {
        const e = document.querySelector(sel), v = document.getElementById('console');
        if (!e || !v) return false;
        const r = e.getBoundingClientRect(), b = v.getBoundingClientRect();
        return r.top >= b.top && r.bottom <= b.bottom && r.top >= 0 && r.bottom <= window.innerHeight;
    }""", selector)


def until(page, js, arg=None, timeout=30_000):
    """Waits for a JS predicate by polling page.evaluate: Playwright's wait_for_function compiles
    its predicate with eval, which the UI's Content-Security-Policy (kept on here) refuses."""
    end = time.monotonic() + timeout / 1000
    last = None
    while time.monotonic() < end:
        last = page.evaluate(js, arg)
        if last:
            return last
        time.sleep(0.1)
    raise Failure(f"timed out after {timeout / 1000:.0f} s waiting in the page for: {js} ({arg!r})")


def accessible(page, view):
    """axe-core (the engine of most accessibility checkers) finds no serious or critical problem:
    contrast, names of controls and links, labels, table headers, keyboard traps..."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    bad = [v for v in found if v.get("impact") in ("serious", "critical")]
    check(not bad, f"{view}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}" for v in bad))
    log(f"{view}: no serious accessibility problem (axe-core; {len(found)} minor)")


def shot(page, out, name):
    page.screenshot(path=f"{out}/{name}.png", full_page=False)
    log(f"screenshot {name}.png")


def run(args, procs, work, pw):
    fx = args.fixtures
    for initrd in ("initrd-poweroff.cpio.gz", "initrd-panic.cpio.gz", "initrd-silent.cpio.gz"):
        check(os.path.isfile(f"{fx}/x86_64/{initrd}"), f"fixture {fx}/x86_64/{initrd} missing (run scripts/fixtures)")
    farm = start_farm(procs, "farm", args, work, runners=1)
    try:
        urllib.request.urlopen(f"{farm.url}/api/v1/bootjobs", timeout=5)
        raise Failure("the API answered without a token: tokens are not on")
    except urllib.error.HTTPError as e:
        check(e.code == 401, f"no token: {e.code}, expected 401")

    browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
    errors = []
    try:
        ctx = browser.new_context(viewport={"width": 1360, "height": 900})
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.set_default_timeout(30_000)

        # -- the token prompt --
        resp = page.goto(f"{farm.url}/")
        csp = resp.headers.get("content-security-policy", "")
        check("script-src 'self'" in csp and "default-src 'none'" in csp, f"the page's CSP is {csp!r}")
        page.wait_for_selector("#login[open]")
        check(page.is_visible("#login-token"), "the token field is not visible")
        check(page.evaluate("() => document.activeElement?.id") == "login-token", "the token field does not have the focus")
        accessible(page, "the token prompt")
        shot(page, args.out, "login")
        page.fill("#login-token", "not-the-token")
        page.press("#login-token", "Enter")
        until(page, "() => document.getElementById('login-error')?.textContent.length > 0")
        check(page.is_visible("#login[open]"), "a wrong token closed the prompt")
        page.fill("#login-token", USER_TOKEN)
        page.click("#login-submit")
        page.wait_for_selector("#login:not([open])", state="attached")
        page.wait_for_selector("#jobs")
        # The 401s of the wrong token and of the first load are expected; nothing else may fail.
        errors.clear()
        log("token prompt: wrong token refused, right token accepted")

        # -- the jobs table, live --
        page.evaluate("""() => {
            window.__noReload = true;
            window.__phases = {};
            new MutationObserver(() => {
                for (const tr of document.querySelectorAll('#jobs tbody tr')) {
                    const p = tr.querySelector('[data-col=phase]').textContent;
                    const seen = (window.__phases[tr.dataset.job] ||= []);
                    if (seen[seen.length - 1] !== p) seen.push(p);
                }
            }).observe(document.getElementById('jobs'), {subtree: true, childList: true, characterData: true});
        }""")
        panic = farm.submit(job_spec(fx, "initrd-panic.cpio.gz", prefix="ui-panic-"))
        passing = farm.submit(job_spec(fx, "initrd-poweroff.cpio.gz", prefix="ui-pass-"))
        log(f"submitted {panic} (panics) then {passing} (passes), one runner: {passing} waits its turn")
        until(page,
            "name => { const r = document.querySelector(`#jobs tr[data-job='${name}'] [data-col=phase]`); return r && r.textContent === 'Succeeded'; }",
            arg=passing, timeout=300_000)
        seen = page.evaluate("name => window.__phases[name]", passing)
        check(page.evaluate("() => window.__noReload === true"), "the page reloaded")
        order = [p for p in seen if p in ("Queued", "Running", "Succeeded")]
        check(order == ["Queued", "Running", "Succeeded"], f"the row of {passing} showed {seen}, expected Queued, Running, Succeeded in turn")
        check(farm.phase(panic) == "Failed", f"{panic} is {farm.phase(panic)}, expected Failed")
        until(page,
            "name => document.querySelector(`#jobs tr[data-job='${name}'] [data-col=phase]`).textContent === 'Failed'", arg=panic)
        shot(page, args.out, "jobs")
        log(f"jobs table: {passing} went {' -> '.join(seen)} without a reload")

        # -- a panicking job's page --
        result = json.loads(farm.raw(f"/api/v1/bootjobs/{panic}/result"))
        issue = next((i for i in result["issues"] if i["kind"] == "panic"), None)
        check(issue is not None, f"{panic}'s result has no panic issue: {result['issues']}")
        line = issue["line"]
        # From the keyboard: Tab to the job's link (its focus ring drawn), Enter opens it.
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate("n => document.activeElement?.closest('tr')?.dataset.job === n", panic):
                break
        else:
            raise Failure(f"Tab never reached the link of {panic}")
        ring = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        check(ring not in ("", "none"), f"the focused link shows no focus ring (outline {ring!r})")
        accessible(page, "the jobs view")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/jobs/{panic}")
        page.wait_for_selector(f".issue-link[href='#L{line}']")
        check(page.evaluate("() => window.__noReload === true"), "following a job link reloaded the page")
        # The panic is near the end of the log: scrolled there, its line is marked.
        until(page, "() => document.getElementById('console-count')?.textContent.endsWith(' lines')")
        page.evaluate("() => { const v = document.getElementById('console'); v.scrollTop = v.scrollHeight; }")
        page.wait_for_selector(f".ln.issue[data-line='{line}']")
        marked = page.eval_on_selector_all(".ln.issue", "ls => ls.map(l => [Number(l.dataset.line), l.textContent])")
        check(any(n == line and "Kernel panic" in text for n, text in marked),
              f"line {line} (the panic, per the result) is not highlighted with its text; highlighted: {marked[:5]}")
        tag = page.text_content(f".ln.issue[data-line='{line}'] .tag")
        check(tag.startswith("panic:") and issue["title"] in tag, f"the highlight says {tag!r}, not the issue's kind and title")
        check(page.is_visible("#link-junit") and page.is_visible("#link-result") and page.is_visible("#link-reproducer"),
              "the result, JUnit or reproducer link is missing")
        check(not page.is_visible("#cancel"), "a finished job offers cancel")
        # The links are plain links: the session cookie opens them.
        junit = page.request.get(f"{farm.url}{page.get_attribute('#link-junit', 'href')}")
        check(junit.status == 200 and b"<testsuite" in junit.body(), f"the JUnit link answered {junit.status}")
        shot(page, args.out, "job-panic")
        accessible(page, "a failed job's page")

        # -- the issue's line link --
        page.evaluate("() => { document.getElementById('console').scrollTop = 0; }")
        page.click(f".issue-link[href='#L{line}']")
        page.wait_for_selector(f".ln.target[data-line='{line}']")
        check(page.evaluate("() => location.hash") == f"#L{line}", "the link did not set the line's address")
        wait_for("the panic line in view", lambda: in_view(page, f".ln[data-line='{line}']"), 5)
        cold = ctx.new_page()
        cold.goto(f"{farm.url}/jobs/{panic}#L{line}")
        cold.wait_for_selector(f".ln.target[data-line='{line}']")
        wait_for("the linked line in view on a fresh page", lambda: in_view(cold, f".ln[data-line='{line}']"), 10)
        shot(cold, args.out, "line-link")
        cold.close()
        log(f"panic at line {line}: highlighted, and #L{line} scrolls to it (in page and opened cold)")

        # -- cancel --
        stuck = farm.submit(job_spec(fx, "initrd-silent.cpio.gz", timeout=600, prefix="ui-cancel-"))
        page.goto(f"{farm.url}/jobs/{stuck}")
        until(page, "() => document.querySelector('#job-phase')?.textContent === 'Running'", timeout=120_000)
        until(page, "() => document.querySelectorAll('.ln').length > 5", timeout=120_000)
        page.once("dialog", lambda d: d.accept())
        page.click("#cancel")
        until(page, "() => document.querySelector('#job-phase')?.textContent === 'Canceled'", timeout=60_000)
        check(farm.phase(stuck) == "Canceled", f"{stuck} is {farm.phase(stuck)} after cancel")
        wait_for("the canceled boot's runner free again",
                 lambda: any(p["runners"]["busy"] == 0 for p in http_json(f"{farm.url}/api/v1/pools", token=USER_TOKEN)["items"]), 60, every=1)
        shot(page, args.out, "job-canceled")
        log(f"cancel: {stuck} Running -> Canceled from its page; its runner is free")

        # -- pools --
        page.click("nav a[data-view=pools]")
        page.wait_for_selector("section.pool[data-pool=local]")
        desired = int(page.text_content("[data-pool=local] [data-gauge=desired]"))
        actual = int(page.text_content("[data-pool=local] [data-gauge=actual]"))
        pools = http_json(f"{farm.url}/api/v1/pools", token=USER_TOKEN)["items"]
        check(len(pools) == 1 and pools[0]["name"] == "local", f"pools: {pools}")
        check(abs(desired - pools[0]["desired"]) <= 1 and abs(actual - pools[0]["actual"]) <= 1,
              f"the page shows desired {desired}, actual {actual}; the API {pools[0]['desired']}, {pools[0]['actual']}")
        decisions = page.eval_on_selector_all("[data-pool=local] h3 + table tbody tr", "rs => rs.length")
        check(decisions >= 1 and any(d["create"] >= 1 for d in pools[0]["decisions"]),
              f"no scale-up decision shown ({decisions} rows; API {pools[0]['decisions']})")
        shot(page, args.out, "pools")
        accessible(page, "the pools view")
        log(f"pools: desired {desired}, actual {actual}, {decisions} decisions shown")
        big_log(args, procs, ctx, result, farm.raw(f"/api/v1/bootjobs/{panic}/log"))
        check(not errors, f"the page logged errors: {errors}")
    except BaseException:
        # What the browser showed when it failed, for the report.
        for i, ctx in enumerate(browser.contexts):
            for j, pg in enumerate(ctx.pages):
                try:
                    pg.screenshot(path=f"{args.out}/failure-{i}-{j}.png")
                    log(f"failure-{i}-{j}.png: {pg.url}; page errors: {errors}")
                except Exception:  # the page may be gone; the failure itself matters more
                    pass
        raise
    finally:
        browser.close()


def big_log(args, procs, ctx, panic_result, real):
    """A 64 MiB console: real boot output, the real panic at its end."""
    farm = start_farm(procs, "bigfarm", args, args.work, runners=0, extra=("--console-limit", "96M", "--lease-ttl", "120"))
    name = farm.submit(job_spec(args.fixtures, "initrd-panic.cpio.gz", prefix="ui-big-"))
    claim = farm.runner("claim", {"runnerId": "ui-test-poster", "arches": ["x86_64"], "waitSeconds": 10})
    check(claim["job"]["metadata"]["name"] == name, f"claimed {claim['job']['metadata']['name']}, expected {name}")
    lease = claim["leaseId"]
    # The panic boot's own console, repeated: real kernel output at a real line length.
    check(len(real) > 1000, f"the real panic log has {len(real)} bytes")
    if not real.endswith(b"\n"):
        real += b"\n"  # QEMU may stop mid-line; each copy must start a line
    copies = BIG_LOG // len(real) + 1
    filler_lines = real.count(b"\n") * (copies - 1)
    chunk = 4 << 20
    body = real * copies
    for at in range(0, len(body), chunk):
        farm.raw(f"/api/v1/runner/jobs/{name}/log?leaseId={lease}", token=RUNNER_TOKEN, data=body[at:at + chunk],
                 content_type="application/octet-stream")
        farm.runner(f"jobs/{name}/heartbeat", {"leaseId": lease})
    total_lines = body.count(b"\n")
    result = json.loads(json.dumps(panic_result))
    for i in result["issues"]:
        i["line"] += filler_lines
    result["console"]["bytes"] = len(body)
    result["console"]["lines"] = total_lines
    farm.runner(f"jobs/{name}/complete", {"leaseId": lease, "result": result})
    check(farm.phase(name) == "Failed", f"{name} is {farm.phase(name)}")
    line = next(i["line"] for i in result["issues"] if i["kind"] == "panic")
    log(f"{name}: {len(body) >> 20} MiB, {total_lines} lines posted, the panic at line {line}")

    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script("""
        window.__longest = 0;
        new PerformanceObserver(l => { for (const e of l.getEntries()) window.__longest = Math.max(window.__longest, e.duration); })
            .observe({type: 'longtask', buffered: true});
    """)
    # Cookies are per host, not per port: the first farm's session (the same token) serves here.
    started = time.monotonic()
    page.goto(f"{farm.url}/jobs/{name}#L{line}")
    page.wait_for_selector(f".ln.target.issue[data-line='{line}']", timeout=120_000)
    loaded_s = time.monotonic() - started
    wait_for("the deep line in view", lambda: in_view(page, f".ln[data-line='{line}']"), 10)
    until(page, "n => document.getElementById('console-count')?.textContent.startsWith(n)", f"{total_lines:,} lines", timeout=60_000)
    rendered = page.eval_on_selector_all(".ln", "ls => ls.length")
    check(rendered < 400, f"{rendered} console lines are in the page: the log is not windowed")
    # Responsive: a jump to the middle shows the middle at once.
    page.evaluate("() => { const v = document.getElementById('console'); v.scrollTop = (v.scrollHeight - v.clientHeight) / 2; }")
    page.wait_for_timeout(300)
    mid = page.evaluate("""() => {
        const v = document.getElementById('console').getBoundingClientRect();
        const l = [...document.querySelectorAll('.ln')].find(e => e.getBoundingClientRect().top >= v.top);
        return l ? Number(l.dataset.line) : 0;
    }""")
    check(abs(mid - total_lines / 2) < total_lines * 0.01, f"the middle of the scroll shows line {mid} of {total_lines}")
    longest = page.evaluate("() => window.__longest")
    check(longest < LONGEST_TASK_MS, f"the page was blocked for {longest:.0f} ms at once while loading the log")
    check(not errors, f"the page logged errors: {errors}")
    shot(page, args.out, "big-log")
    log(f"64 MiB log: the deep link landed after {loaded_s:.1f} s, {rendered} lines in the page, "
        f"longest task {longest:.0f} ms, the middle of the scroll is line {mid}")
    page.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    for k in ("bin_dir", "fixtures", "out"):
        setattr(args, k, os.path.abspath(getattr(args, k)))
    os.makedirs(args.out, exist_ok=True)

    def body(procs, work):
        args.work = work
        with sync_playwright() as pw:
            run(args, procs, work, pw)

    return run_test("ui", DEADLINE_S, args.out, body)


if __name__ == "__main__":
    sys.exit(main())
