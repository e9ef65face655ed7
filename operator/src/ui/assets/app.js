// bootfarm web UI. Plain JavaScript over the farm's JSON API: no framework, no build step, no
// outside asset. Views are paths (/, /jobs/NAME, /pools) so a job page, and a console line on it
// (/jobs/NAME#L412), is a link that can be pasted into a report.
"use strict";

const PAGE = 50;            // jobs per page
const POLL_MS = 1500;       // how often live views refresh
const OVERSCAN = 40;        // console lines rendered beyond the visible ones
const MAX_PX = 8e6;         // tallest scroll area used; longer logs map scroll position to line
const PHASES = ["Pending", "Queued", "Running", "Succeeded", "Failed", "Error", "Canceled"];
const FINISHED = new Set(["Succeeded", "Failed", "Error", "Canceled"]);
// The label a plan puts on its jobs (the plan filter of the jobs view).
const PLAN_LABEL = "bootfarm.dev/plan";

// ---- small DOM helpers (text only: nothing from the API is ever parsed as HTML) ----

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    // Through the CSSOM: the page's CSP refuses style attributes.
    else if (k === "style") Object.assign(e.style, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function badge(word) {
  return word ? h("span", { class: `badge b-${word}` }, word) : "—";
}

function setText(node, text) {
  const t = text === undefined || text === null || text === "" ? "—" : String(text);
  if (node.textContent !== t) node.textContent = t;
}

function seconds(s) {
  if (s === undefined || s === null) return "—";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.floor(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

function since(iso, until) {
  if (!iso) return null;
  const end = until ? Date.parse(until) : Date.now();
  return Math.max(0, (end - Date.parse(iso)) / 1000);
}

// ---- the API, with the login prompt when tokens are on ----

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let loginWaiter = null;

async function api(path, opts = {}) {
  for (;;) {
    const res = await fetch(path, {
      ...opts,
      credentials: "same-origin",
      headers: { "x-bootfarm-ui": "1", ...(opts.headers || {}) },
    });
    if (res.status !== 401) return res;
    await login();
  }
}

async function apiJson(path, opts) {
  const res = await api(path, opts);
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      msg = (await res.json()).error.message || msg;
    } catch (_) { /* not our JSON error */ }
    throw new ApiError(res.status, msg);
  }
  return res.json();
}

// Shows the token prompt (once, however many calls wait on it); resolves after a good login.
function login() {
  if (loginWaiter) return loginWaiter;
  const dialog = document.getElementById("login");
  const form = document.getElementById("login-form");
  const input = document.getElementById("login-token");
  const error = document.getElementById("login-error");
  loginWaiter = new Promise((resolve) => {
    error.textContent = "";
    const submit = async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      const res = await fetch("/ui/session", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-bootfarm-ui": "1" },
        body: JSON.stringify({ token: input.value }),
      });
      if (res.ok) {
        form.removeEventListener("submit", submit);
        input.value = "";
        dialog.close();
        loginWaiter = null;
        document.getElementById("logout").hidden = false;
        resolve();
      } else {
        let msg = "That token was refused.";
        try { msg = (await res.json()).error.message || msg; } catch (_) { /* keep */ }
        error.textContent = msg;
        input.select();
      }
    };
    form.addEventListener("submit", submit);
    // Escape would leave the page without data and without a way back: keep the prompt.
    dialog.addEventListener("cancel", (ev) => ev.preventDefault());
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return loginWaiter;
}

// ---- views and their lifetimes ----

let generation = 0;     // bumped on every navigation: stale timers and streams stop
const cleanups = [];

function alive(gen) {
  return gen === generation;
}

// Calls fn now and again every `ms` after it settles, while the view lives (paused while the tab
// is hidden); returns a function that runs it at once.
function every(gen, ms, fn) {
  let timer = null;
  const run = async () => {
    clearTimeout(timer);
    if (!alive(gen)) return;
    if (!document.hidden) {
      try {
        await fn();
        connected(true);
      } catch (e) {
        connected(false, e);
      }
    }
    if (alive(gen)) timer = setTimeout(run, ms);
  };
  cleanups.push(() => clearTimeout(timer));
  run();
  return run;
}

function connected(ok, err) {
  const s = document.getElementById("conn");
  setText(s, ok ? "live" : `not updating: ${err && err.message ? err.message : err}`);
}

function navigate(href) {
  history.pushState(null, "", href);
  route();
}

function route() {
  generation += 1;
  while (cleanups.length) cleanups.pop()();
  const main = document.getElementById("main");
  main.replaceChildren();
  const path = location.pathname;
  let m;
  let view = "jobs";
  if (path === "/" || path === "") jobsView(main, generation);
  else if ((m = path.match(/^\/jobs\/([^/]+)$/))) {
    view = null;
    jobView(main, generation, decodeURIComponent(m[1]));
  } else if (path === "/pools") {
    view = "pools";
    poolsView(main, generation);
  } else {
    view = null;
    main.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/", "data-nav": true }, "All jobs")));
  }
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

// ---- jobs ----

function jobsView(main, gen) {
  const q = new URLSearchParams(location.search);
  const page = Math.max(1, parseInt(q.get("page") || "1", 10) || 1);
  document.title = "Jobs · bootfarm";
  const phase = h("select", { name: "phase", id: "f-phase" },
    h("option", { value: "" }, "any"),
    PHASES.map((p) => h("option", { value: p, selected: q.get("phase") === p }, p)));
  const labels = h("input", { name: "labels", id: "f-labels", value: q.get("labels") || "", placeholder: "team=kernel", size: 24 });
  const plan = h("input", { name: "plan", id: "f-plan", value: q.get("plan") || "", placeholder: "plan name", size: 16 });
  const form = h("form", { class: "filters", role: "search" },
    h("label", {}, "Phase", phase),
    h("label", {}, "Labels", labels),
    h("label", {}, "Plan", plan),
    h("button", { type: "submit" }, "Filter"));
  const apply = (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    if (phase.value) next.set("phase", phase.value);
    if (labels.value.trim()) next.set("labels", labels.value.trim());
    if (plan.value.trim()) next.set("plan", plan.value.trim());
    navigate(`/${next.toString() ? "?" + next : ""}`);
  };
  form.addEventListener("submit", apply);
  phase.addEventListener("change", apply);

  const cols = [["Name"], ["Arch"], ["Phase"], ["Result"], ["Stage"], ["Kernel"], ["Runner"], ["Age", "num"], ["Duration", "num"]];
  const tbody = h("tbody", {});
  const table = h("table", { id: "jobs" },
    h("caption", { class: "muted" }, "Newest first; updates live."),
    h("thead", {}, h("tr", {}, cols.map(([c, cls]) => h("th", { scope: "col", class: cls }, c)))),
    tbody);
  const note = h("p", { class: "muted", id: "jobs-note" });
  const prev = h("a", { href: pageHref(q, page - 1), "data-nav": true, hidden: page <= 1 }, "← Newer");
  const next = h("a", { href: pageHref(q, page + 1), "data-nav": true, hidden: true }, "Older →");
  main.append(h("h1", {}, "Jobs"), form, table, note, h("div", { class: "pager" }, prev, h("span", {}, `Page ${page}`), next));

  const selector = [q.get("labels"), q.get("plan") ? `${PLAN_LABEL}=${q.get("plan")}` : null].filter(Boolean).join(",");
  const rows = new Map();
  every(gen, POLL_MS, async () => {
    const params = new URLSearchParams({ limit: String(Math.min(page * PAGE + 1, 5000)) });
    if (q.get("phase")) params.set("phase", q.get("phase"));
    if (selector) params.set("labelSelector", selector);
    const list = await apiJson(`/api/v1/bootjobs?${params}`);
    if (!alive(gen)) return;
    const items = list.items.slice((page - 1) * PAGE, page * PAGE);
    next.hidden = !(list.items.length > page * PAGE || list.metadata.truncated);
    setText(note, items.length ? `${(page - 1) * PAGE + 1}–${(page - 1) * PAGE + items.length} shown` : "No jobs match.");
    const keep = new Set();
    items.forEach((job, i) => {
      const name = job.metadata.name;
      keep.add(name);
      let row = rows.get(name);
      if (!row) {
        row = jobRow(name);
        rows.set(name, row);
      }
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
      fillRow(row, job);
    });
    for (const [name, row] of rows) {
      if (!keep.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
  });
}

function pageHref(q, page) {
  const p = new URLSearchParams(q);
  if (page <= 1) p.delete("page");
  else p.set("page", String(page));
  return `/${p.toString() ? "?" + p : ""}`;
}

function jobRow(name) {
  const cells = {};
  const tr = h("tr", { "data-job": name });
  for (const c of ["name", "arch", "phase", "result", "stage", "kernel", "runner", "age", "duration"]) {
    cells[c] = h("td", { "data-col": c, class: c === "age" || c === "duration" ? "num" : undefined });
    tr.append(cells[c]);
  }
  cells.name.append(h("a", { href: `/jobs/${encodeURIComponent(name)}`, "data-nav": true }, name));
  return { tr, cells, phase: null, verdict: null };
}

function fillRow(row, job) {
  const st = job.status || {};
  const res = st.result || {};
  const phase = st.phase || "Pending";
  if (row.phase !== phase) {
    row.cells.phase.replaceChildren(badge(phase));
    row.phase = phase;
  }
  if (row.verdict !== (res.result || null)) {
    row.cells.result.replaceChildren(badge(res.result));
    row.verdict = res.result || null;
  }
  setText(row.cells.arch, job.spec.arch);
  setText(row.cells.stage, res.stage);
  setText(row.cells.kernel, res.kernelVersion);
  setText(row.cells.runner, st.runner);
  setText(row.cells.age, seconds(since(job.metadata.creationTimestamp)));
  setText(row.cells.duration, st.startTime ? seconds(since(st.startTime, st.completionTime)) : null);
}

// ---- one job ----

function jobView(main, gen, name) {
  document.title = `${name} · bootfarm`;
  const base = `/api/v1/bootjobs/${encodeURIComponent(name)}`;
  const title = h("h1", {}, name, " ", h("span", { id: "job-phase" }));
  const cancel = h("button", { type: "button", class: "danger", id: "cancel", hidden: true }, "Cancel job");
  const links = h("div", { class: "links", id: "job-links" });
  const facts = h("dl", { class: "facts", id: "job-facts" });
  const conditions = h("tbody", {});
  const timeline = h("div", { id: "timeline" });
  const issues = h("div", { id: "issues" }, h("p", { class: "muted" }, "Known when the boot ends."));
  const tests = h("div", { id: "tests" });
  const consoleBox = h("section", { "aria-labelledby": "console-title" });
  main.append(title, links,
    h("div", { class: "cols" },
      h("section", {}, h("h2", {}, "Status"), facts),
      h("section", {}, h("h2", {}, "Timeline"), timeline, h("h2", {}, "Kernel issues"), issues, h("h2", {}, "Tests"), tests)),
    h("h2", { id: "console-title" }, "Console"), consoleBox,
    h("h2", {}, "Conditions"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Message", "Since"].map((c) => h("th", { scope: "col" }, c)))), conditions));

  const con = new Console(consoleBox, `${base}/log`, gen);
  cleanups.push(() => con.stop());
  let finishedShown = false;
  cancel.addEventListener("click", async () => {
    if (!confirm(`Cancel ${name}? Its boot stops within seconds.`)) return;
    cancel.disabled = true;
    try {
      await apiJson(base, { method: "DELETE" });
      refresh();
    } catch (e) {
      alert(`Cancel failed: ${e.message}`);
      cancel.disabled = false;
    }
  });

  const refresh = every(gen, POLL_MS, async () => {
    let job;
    try {
      job = await apiJson(base);
    } catch (e) {
      if (e.status === 404) {
        main.replaceChildren(h("h1", {}, "No such job"), h("p", {}, name, " is not on this farm (it may have expired). ", h("a", { href: "/", "data-nav": true }, "All jobs")));
        generation += 1;
        return;
      }
      throw e;
    }
    if (!alive(gen)) return;
    const st = job.status || {};
    const phase = st.phase || "Pending";
    document.getElementById("job-phase").replaceChildren(badge(phase));
    cancel.hidden = FINISHED.has(phase);
    renderFacts(facts, job);
    conditions.replaceChildren(...(st.conditions || []).map((c) => h("tr", {},
      h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason), h("td", {}, c.message),
      h("td", { title: c.lastTransitionTime }, seconds(since(c.lastTransitionTime)) + " ago"))));
    con.start(phase);
    if (FINISHED.has(phase) && !finishedShown) {
      finishedShown = true;
      let result = null;
      // Only a job with a verdict has a result document (a canceled one may not).
      if (st.result) {
        try {
          result = await apiJson(`${base}/result`);
        } catch (e) {
          if (e.status !== 404) throw e;
        }
      }
      if (!alive(gen)) return;
      renderLinks(links, base, result, cancel);
      renderTimeline(timeline, result);
      renderIssues(issues, result, con);
      renderTests(tests, result);
      con.reveal();
    } else if (!finishedShown) {
      renderLinks(links, base, null, cancel);
    }
  });
}

function renderFacts(dl, job) {
  const st = job.status || {};
  const res = st.result || {};
  const rows = [
    ["Arch", job.spec.arch],
    ["Result", res.result ? badge(res.result) : null],
    ["Reason", res.reason],
    ["First failure", res.firstFailure],
    ["Stage", res.stage],
    ["Kernel", res.kernelVersion],
    ["Accel", res.accel],
    ["Runner", st.runner],
    ["Pool", st.pool],
    ["Attempts", st.attempts],
    ["Queued", st.queuedAt ? `${seconds(since(st.queuedAt))} ago` : null],
    ["Ran for", st.startTime ? seconds(since(st.startTime, st.completionTime)) : null],
  ];
  const labels = Object.entries((job.metadata && job.metadata.labels) || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  if (labels) rows.push(["Labels", labels]);
  dl.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null || v === undefined || v === "" ? "—" : v)]));
}

function renderLinks(div, base, result, cancel) {
  const items = [h("a", { href: `${base}/log`, id: "link-log" }, "Raw log")];
  if (result) {
    items.push(h("a", { href: `${base}/result`, id: "link-result" }, "Result JSON"),
      h("a", { href: `${base}/junit`, id: "link-junit" }, "JUnit XML"),
      h("a", { href: `${base}/results.json?format=tuxrun`, id: "link-tuxrun" }, "TuxRun results"));
    if (result.qemu && result.qemu.argv && result.qemu.argv.length) {
      items.push(h("a", { href: `${base}/reproducer`, id: "link-reproducer" }, "Reproducer"));
    }
  }
  div.replaceChildren(...items, cancel);
}

function renderTimeline(div, result) {
  const d = (result && result.durations) || {};
  const total = d.total || d.to_prompt || d.to_userspace || d.to_kernel;
  if (!total) {
    div.replaceChildren(h("p", { class: "muted" }, "No timings."));
    return;
  }
  const marks = [["to kernel", d.to_kernel], ["to userspace", d.to_userspace], ["to prompt", d.to_prompt], ["total", d.total]]
    .filter(([, v]) => typeof v === "number");
  const bar = h("div", { class: "timeline", role: "img",
    "aria-label": marks.map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(", ") });
  let prev = 0;
  marks.forEach(([label, v], i) => {
    const left = (prev / total) * 100;
    const width = Math.max(0, ((v - prev) / total) * 100);
    bar.append(h("div", { class: `seg s${Math.min(i, 2)}`, style: { left: `${left}%`, width: `${width}%` }, title: `${label}: ${v.toFixed(2)} s` }));
    bar.append(h("span", { class: `mark m${i % 2}`, style: { left: `${(v / total) * 100}%` } }, `${label} ${v.toFixed(1)} s`));
    prev = v;
  });
  div.replaceChildren(bar);
}

function renderIssues(div, result, con) {
  const issues = (result && result.issues) || [];
  con.setIssues(issues);
  if (!issues.length) {
    div.replaceChildren(h("p", { class: "muted" }, result ? "None." : "No result."));
    return;
  }
  div.replaceChildren(h("ul", { class: "issues" }, issues.map((i) => h("li", { class: i.fatal ? "fatal" : undefined, "data-kind": i.kind },
    h("span", { class: "badge b-fail" }, i.kind), " ",
    h("strong", {}, i.title || i.summary),
    i.count > 1 ? ` (×${i.count})` : "",
    " · ", h("a", { href: `#L${i.line}`, class: "issue-link" }, `line ${i.line}`),
    i.function ? h("div", { class: "muted" }, `in ${i.function}`) : null))));
}

function renderTests(div, result) {
  const tests = (result && result.tests) || [];
  if (!tests.length) {
    div.replaceChildren(h("p", { class: "muted" }, "No tests."));
    return;
  }
  div.replaceChildren(h("table", { id: "tests-table" },
    h("thead", {}, h("tr", {}, ["Suite", "Name", "Result", "Measurement"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, tests.map((t) => h("tr", {},
      h("td", {}, t.suite), h("td", {}, t.name), h("td", {}, badge(t.result)),
      h("td", { class: "num" }, typeof t.measurement === "number" ? `${t.measurement}${t.units ? " " + t.units : ""}` : "—"))))));
}

// ---- the console: streamed, windowed, with issues marked in place ----

// Terminal control sequences and carriage returns: noise in a web page.
const CONTROL = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\r/g;

class Console {
  constructor(box, url, gen) {
    this.url = url;
    this.gen = gen;
    this.lines = [];
    this.partial = "";
    this.bytes = 0;
    this.issues = new Map();
    this.target = null;       // the line the URL names (#L412)
    this.pendingTarget = null; // named but not loaded yet
    this.streaming = false;
    this.started = false;   // the log is read once per page (read() reconnects itself)
    this.controller = null;
    this.scheduled = false;
    this.follow = h("input", { type: "checkbox", id: "follow" });
    this.count = h("span", { id: "console-count" }, "loading…");
    const bar = h("div", { class: "console-bar" }, this.count,
      h("label", {}, this.follow, " follow the end"));
    this.view = h("div", { class: "console", id: "console", tabindex: "0", role: "log", "aria-label": "Console log" });
    this.spacer = h("div", { class: "spacer" });
    this.win = h("div", { class: "window" });
    this.spacer.append(this.win);
    this.view.append(this.spacer);
    box.append(bar, this.view);
    this.lh = this.measure();
    this.view.addEventListener("scroll", () => {
      // Scrolling up stops following; reaching the end again resumes it.
      const atEnd = this.view.scrollTop + this.view.clientHeight >= this.view.scrollHeight - this.lh;
      if (this.streaming) this.follow.checked = atEnd;
      this.schedule();
    });
    this.follow.addEventListener("change", () => this.follow.checked && this.toEnd());
    this.onHash = () => this.targetFromHash(true);
    window.addEventListener("hashchange", this.onHash);
    this.targetFromHash(false);
  }

  stop() {
    window.removeEventListener("hashchange", this.onHash);
    if (this.controller) this.controller.abort();
  }

  measure() {
    const probe = h("div", { class: "ln" }, h("span", {}, "x"));
    this.win.append(probe);
    const px = probe.getBoundingClientRect().height || 18;
    probe.remove();
    return px;
  }

  targetFromHash(scroll) {
    const m = location.hash.match(/^#L(\d+)$/);
    this.target = m ? parseInt(m[1], 10) : null;
    if (this.target === null) return this.schedule();
    this.follow.checked = false;
    if (this.target <= this.lines.length) this.reveal();
    else this.pendingTarget = this.target;
    if (scroll) this.schedule();
  }

  // Starts reading the log once; a running job's log is followed until it ends.
  start(phase) {
    // Once: reconnects and the end are read()'s own (a second reader would race it).
    if (this.started) return;
    this.started = true;
    const running = !FINISHED.has(phase);
    if (running && this.target === null) this.follow.checked = true;
    this.read(running);
  }

  async read(following) {
    this.streaming = true;
    this.controller = new AbortController();
    const decoder = new TextDecoder("utf-8");
    try {
      const headers = this.bytes ? { Range: `bytes=${this.bytes}-` } : {};
      const res = await api(`${this.url}${following ? "?follow=true" : ""}`, { headers, signal: this.controller.signal });
      if (res.status === 204) {
        // The job ended and everything was read.
        this.streaming = false;
        this.finish();
        return;
      }
      if (res.status === 416) {
        // Nothing new since the last read: ask again shortly.
        this.streaming = false;
        if (following) setTimeout(() => alive(this.gen) && this.read(true), 1000);
        return;
      }
      if (!res.ok) throw new ApiError(res.status, `log: ${res.status}`);
      const reader = res.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !alive(this.gen)) break;
        this.bytes += value.length;
        this.append(decoder.decode(value, { stream: true }));
      }
      this.append(decoder.decode());
    } catch (e) {
      if (e.name === "AbortError") return;
      setText(this.count, `console: ${e.message}`);
    }
    this.streaming = false;
    if (!alive(this.gen)) return;
    // A follow ends when the job ends (or the stream was cut): the job's phase says which.
    const job = await apiJson(this.url.replace(/\/log$/, "")).catch(() => null);
    const phase = job && job.status ? job.status.phase : null;
    if (phase && !FINISHED.has(phase)) {
      setTimeout(() => alive(this.gen) && this.read(true), 500);
      return;
    }
    this.finish();
  }

  finish() {
    this.flush();
    this.follow.checked = false;
    this.schedule();
  }

  append(text) {
    if (!text) return;
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop();
    for (const p of parts) this.lines.push(p.replace(CONTROL, ""));
    if (this.pendingTarget !== null && this.pendingTarget <= this.lines.length) {
      this.pendingTarget = null;
      this.reveal();
    }
    this.schedule();
  }

  flush() {
    if (this.partial) this.lines.push(this.partial.replace(CONTROL, ""));
    this.partial = "";
    if (this.pendingTarget !== null) {
      // A link past the end lands on the last line.
      this.target = Math.min(this.pendingTarget, this.lines.length);
      this.pendingTarget = null;
      this.reveal();
    }
  }

  setIssues(issues) {
    this.issues = new Map(issues.map((i) => [i.line, i]));
    this.schedule();
  }

  // The rendered lines follow the scroll position on the next frame, never more than once per frame.
  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      if (alive(this.gen)) this.render();
    });
  }

  geometry() {
    const total = this.lines.length * this.lh;
    const height = Math.min(total, MAX_PX);
    const vh = this.view.clientHeight;
    return { total, height, vh, scrollRange: Math.max(1, height - vh), contentRange: Math.max(0, total - vh) };
  }

  // Content offset (px into the whole log) shown at the top of the view.
  offsetAt(scrollTop, g) {
    return g.total <= MAX_PX ? scrollTop : (scrollTop / g.scrollRange) * g.contentRange;
  }

  // Brings the console into the window's view, then the named line into the console's (again
  // after the page's layout moved, e.g. once the result's sections are drawn).
  reveal() {
    if (this.target === null || this.target > this.lines.length) return;
    this.view.scrollIntoView({ block: "start" });
    this.scrollToLine(this.target);
  }

  scrollToLine(n) {
    const g = this.geometry();
    this.spacer.style.height = `${g.height}px`;
    const want = Math.max(0, Math.min((n - 1) * this.lh - g.vh / 3, g.contentRange));
    this.view.scrollTop = g.total <= MAX_PX ? want : (want / Math.max(1, g.contentRange)) * g.scrollRange;
    this.schedule();
  }

  toEnd() {
    const g = this.geometry();
    this.spacer.style.height = `${g.height}px`;
    this.view.scrollTop = g.height;
  }

  render() {
    const n = this.lines.length;
    setText(this.count, `${n.toLocaleString("en")} lines${this.streaming ? " · following" : ""}`);
    const g = this.geometry();
    this.spacer.style.height = `${g.height}px`;
    if (this.follow.checked) this.view.scrollTop = g.height;
    const top = this.view.scrollTop;
    const offset = this.offsetAt(top, g);
    const first = Math.max(0, Math.floor(offset / this.lh) - OVERSCAN);
    const last = Math.min(n, Math.ceil((offset + g.vh) / this.lh) + OVERSCAN);
    // Place the window so that line `first` sits where the content offset puts it.
    this.win.style.top = `${top - (offset - first * this.lh)}px`;
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      const no = i + 1;
      const issue = this.issues.get(no);
      const cls = ["ln", issue ? "issue" : "", issue && issue.fatal ? "fatal" : "", this.target === no ? "target" : ""].filter(Boolean).join(" ");
      const row = h("div", { class: cls, "data-line": no },
        h("a", { href: `#L${no}`, "aria-label": `line ${no}` }, no),
        h("span", {}, this.lines[i]));
      if (issue) row.append(h("span", { class: "tag" }, `${issue.kind}: ${issue.title || issue.summary}`));
      frag.append(row);
    }
    this.win.replaceChildren(frag);
  }
}

// ---- pools ----

function poolsView(main, gen) {
  document.title = "Pools · bootfarm";
  const box = h("div", { id: "pools" });
  main.append(h("h1", {}, "Pools"), box);
  every(gen, POLL_MS, async () => {
    const list = await apiJson("/api/v1/pools");
    if (!alive(gen)) return;
    if (!list.items.length) {
      box.replaceChildren(h("p", { class: "muted" }, "No pool has been scaled yet."));
      return;
    }
    box.replaceChildren(...list.items.map(poolCard));
  });
}

// The order a runner goes through; states the API adds later follow.
const RUNNER_STATES = ["pending", "starting", "idle", "busy", "terminating", "failed"];

function poolCard(p) {
  const rank = (s) => (RUNNER_STATES.indexOf(s) + 1) || RUNNER_STATES.length + 1;
  const states = Object.entries(p.runners).sort(([a], [b]) => rank(a) - rank(b));
  const queued = Object.entries(p.queuedByArch).map(([a, n]) => `${a} ${n}`).join(", ");
  return h("section", { class: "pool", "data-pool": p.name, "aria-labelledby": `pool-${p.name}` },
    h("h2", { id: `pool-${p.name}` }, p.name),
    h("p", { class: "muted" }, `Arches: ${p.arches.length ? p.arches.join(", ") : "all"} · min idle ${p.minIdle} · max ${p.maxRunners} · seen ${seconds(since(p.updatedAt))} ago`),
    h("div", { class: "gauge" },
      h("div", {}, h("b", { "data-gauge": "desired" }, p.desired), "desired"),
      h("div", {}, h("b", { "data-gauge": "actual" }, p.actual), "actual"),
      h("div", {}, h("b", { "data-gauge": "queued" }, p.queued), "queued", queued ? h("div", { class: "muted" }, queued) : null)),
    h("table", {}, h("caption", { class: "muted" }, "Runners by state"),
      h("thead", {}, h("tr", {}, states.map(([s]) => h("th", { scope: "col", class: "num" }, s)))),
      h("tbody", {}, h("tr", {}, states.map(([s, n]) => h("td", { class: "num", "data-state": s }, n))))),
    h("h3", {}, "Last scale decisions"),
    p.decisions.length
      ? h("table", {}, h("thead", {}, h("tr", {}, [["When"], ["Desired", "num"], ["Supply", "num"], ["Queued", "num"], ["Started", "num"], ["Stopped"]].map(([c, cls]) => h("th", { scope: "col", class: cls }, c)))),
        h("tbody", {}, p.decisions.map((d) => h("tr", {},
          h("td", { title: d.at }, `${seconds(since(d.at))} ago`),
          h("td", { class: "num" }, d.desired), h("td", { class: "num" }, d.supply), h("td", { class: "num" }, d.queued),
          h("td", { class: "num" }, d.create),
          h("td", {}, d.delete.map((x) => `${x.runner} (${x.reason})`).join(", ") || "—")))))
      : h("p", { class: "muted" }, "None yet."));
}

// ---- start ----

document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a[data-nav]");
  if (!a || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  ev.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);
document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/ui/session", { method: "DELETE", credentials: "same-origin", headers: { "x-bootfarm-ui": "1" } });
  location.reload();
});

(async () => {
  try {
    const s = await (await fetch("/ui/session", { credentials: "same-origin" })).json();
    document.getElementById("logout").hidden = !s.authRequired || !s.authenticated;
    if (s.authRequired && !s.authenticated) await login();
  } catch (e) {
    connected(false, e);
  }
  route();
})();
