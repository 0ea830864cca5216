"""Grafana dashboard, provisioning and Prometheus config; the live page's static checks and behaviour."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "bridge.json"
DATASOURCES = REPO_ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDERS = REPO_ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "bridge.yaml"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
LIVE_PAGE = REPO_ROOT / "bridge" / "server" / "static" / "index.html"
PROMTOOL = "/usr/bin/promtool"

DATASOURCE_UID = "bridge-prometheus"

# PromQL functions and aggregation operators the dashboard may use.
PROMQL_FUNCTIONS = {
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile",
    "rate", "irate", "increase", "delta", "histogram_quantile", "vector", "clamp_min", "clamp_max",
    "abs", "round", "label_values", "sort", "sort_desc",
}  # fmt: skip
PROMQL_KEYWORDS = {
    "by", "without", "or", "and", "unless", "on", "ignoring", "group_left", "group_right", "bool",
}  # fmt: skip


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def _exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(dash) for t in p.get("targets", []) if "expr" in t]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _metric_refs(expr: str) -> set[str]:
    """Series names referenced by a PromQL expression; fails on unknown functions."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_]+\s*\)", r"\1", text)
    refs: set[str] = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call:
            assert name in PROMQL_FUNCTIONS, f"unknown PromQL function {name!r} in {expr!r}"
        elif name not in PROMQL_KEYWORDS:
            refs.add(name)
    return refs


def _base_name(series: str, types: dict[str, str]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and types.get(series.removesuffix(suffix)) == "histogram":
            return series.removesuffix(suffix)
    return series


# --------------------------------------------------------------------------------------------------
# Dashboard JSON


def test_dashboard_identity() -> None:
    dash = _dashboard()
    assert dash["id"] is None
    assert dash["uid"] == "bridge-overview"
    assert 8 <= len(dash["uid"]) <= 40
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert "__inputs" not in dash
    assert "DS_PROMETHEUS" not in DASHBOARD.read_text(encoding="utf-8")


def test_metric_ref_parser() -> None:
    """The parser the next test relies on finds names and rejects what it does not know."""
    expr = (
        "histogram_quantile(0.95, sum by (le, instance) "
        '(rate(bridge_response_latency_seconds_bucket{instance=~"$instance", x="a(b)"}[$__rate_interval])))'
        " / on (instance) group_left sum(bridge_calls_active) or vector(0)"
    )
    assert _metric_refs(expr) == {"bridge_response_latency_seconds_bucket", "bridge_calls_active"}
    assert _metric_refs("label_values(bridge_workers_alive, instance)") == {"bridge_workers_alive"}
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        _metric_refs("bogus_fn(bridge_calls_active)")


def test_every_expression_uses_only_defined_metrics() -> None:
    types = metrics.metric_types()
    dash = _dashboard()
    exprs = _exprs(dash)
    assert len(exprs) >= 20
    used: set[str] = set()
    for expr in exprs:
        refs = _metric_refs(expr)
        assert refs, f"no metric in {expr!r}"
        for series in refs:
            base = _base_name(series, types)
            assert base in types, f"{series!r} in {expr!r} is not defined in bridge/metrics.py"
            if series != base:
                assert types[base] == "histogram"
            if types[base] == "gauge":
                assert not re.search(rf"(rate|increase)\(\s*{series}\b", expr), f"rate() over gauge: {expr!r}"
            if types[base] == "counter":
                assert re.search(rf"(rate|increase)\(\s*{series}\b", expr), f"raw counter plotted: {expr!r}"
            used.add(base)
    # the dashboard covers what the brief asks for
    for required in (
        "bridge_calls_active", "bridge_calls_started_total", "bridge_calls_ended_total",
        "bridge_call_duration_seconds", "bridge_response_latency_seconds", "bridge_barge_ins_total",
        "bridge_barge_in_reaction_seconds", "bridge_call_cost_per_minute_usd", "bridge_cost_usd_total",
        "bridge_tokens_total", "bridge_audio_errors_total", "bridge_protocol_errors_total",
        "bridge_model_errors_total", "bridge_frames_total", "bridge_workers_alive",
        "bridge_worker_restarts_total", "bridge_refused_total", "bridge_model_races_total",
    ):  # fmt: skip
        assert required in used, required


def test_error_panels_leave_out_harmless_races_and_refusals() -> None:
    panels = {p["title"]: p for p in _panels(_dashboard())}
    for title in ("Errors / min", "Model errors"):
        refs = set().union(*(_metric_refs(t["expr"]) for t in panels[title]["targets"]))
        assert "bridge_model_errors_total" in refs
        assert not refs & {"bridge_model_races_total", "bridge_refused_total"}, title
    races = set().union(*(_metric_refs(t["expr"]) for t in panels["Model races"]["targets"]))
    assert races == {"bridge_model_races_total"}


def test_histogram_quantiles_aggregate_by_le() -> None:
    for expr in _exprs(_dashboard()):
        for match in re.finditer(r"histogram_quantile\(\s*([0-9.]+)\s*,\s*sum by \(([^)]*)\)", expr):
            assert 0 < float(match.group(1)) < 1
            assert "le" in [label.strip() for label in match.group(2).split(",")], expr
        if "_bucket" in expr:
            assert "histogram_quantile(" in expr, expr


def test_datasource_references_use_the_variable() -> None:
    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds_var = variables["datasource"]
    assert ds_var["type"] == "datasource" and ds_var["query"] == "prometheus"
    assert ds_var["current"]["value"] == DATASOURCE_UID

    refs: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "datasource" in node:
                refs.append(node["datasource"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dash["panels"])
    walk([v for v in dash["templating"]["list"] if v["type"] != "datasource"])
    assert refs
    for ref in refs:
        assert ref == {"type": "prometheus", "uid": "${datasource}"}, ref
    for panel in _panels(dash):
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = list(_panels(_dashboard()))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]


# --------------------------------------------------------------------------------------------------
# Provisioning and Prometheus config (no PyYAML here: check the lines that matter)


def test_datasource_provisioning_has_the_uid_the_dashboard_expects() -> None:
    text = DATASOURCES.read_text(encoding="utf-8")
    assert re.search(r"^apiVersion:\s*1\s*$", text, re.M)
    assert re.search(r"^datasources:\s*$", text, re.M)
    assert re.search(rf"^\s+uid:\s*{DATASOURCE_UID}\s*$", text, re.M)
    assert re.search(r"^\s+type:\s*prometheus\s*$", text, re.M)
    assert _dashboard()["templating"]["list"][0]["current"]["value"] == DATASOURCE_UID


def test_dashboard_provider_points_at_the_dashboards_dir() -> None:
    text = PROVIDERS.read_text(encoding="utf-8")
    assert re.search(r"^apiVersion:\s*1\s*$", text, re.M)
    assert re.search(r"^\s+type:\s*file\s*$", text, re.M)
    assert re.search(r"^\s+path:\s*/var/lib/grafana/dashboards\s*$", text, re.M)


def test_prometheus_config_scrapes_the_admin_port() -> None:
    text = PROMETHEUS_CONFIG.read_text(encoding="utf-8")
    assert re.search(r"^\s+metrics_path:\s*/metrics\s*$", text, re.M)
    assert re.search(r"^\s+-\s*127\.0\.0\.1:8081\s*$", text, re.M)
    assert re.search(r"^\s*#\s*authorization:\s*$", text, re.M)
    assert re.search(r"^\s*#\s+credentials_file:", text, re.M)


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_config_and_every_expression(tmp_path: Path) -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    # Every panel expression, with Grafana's variables filled in, must be valid PromQL:
    # promtool parses them as recording rules.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(_exprs(_dashboard())):
        if expr.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        lines += [f"      - record: dashboard:expr_{i}", f"        expr: {json.dumps(concrete)}"]
    rules = tmp_path / "rules.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------
# Live page


def test_live_page_is_self_contained() -> None:
    html = LIVE_PAGE.read_text(encoding="utf-8")
    assert re.search(r'<table id="sessions"', html)
    assert "data-call-id" in html
    # nothing loaded from elsewhere: no external src/href, no @import or url() in CSS
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(", html, re.I)
    assert not re.search(r"<script[^>]*\bsrc=", html, re.I)
    assert not re.search(r"<link[^>]*stylesheet", html, re.I)
    assert "connect-src 'self'" in html and "default-src 'none'" in html  # CSP enforces the above
    # no HTML parsing of server data
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", html)
    assert "sessionStorage" in html and "Bearer " in html


@pytest.mark.skipif(not shutil.which("node"), reason="node not installed: live page behaviour test skipped")
def test_live_page_behaviour_in_node(tmp_path: Path) -> None:
    """Run the page's script against a fake DOM: 401 → token form, rows, escaping, End, errors."""
    harness = tmp_path / "harness.js"
    harness.write_text(NODE_HARNESS, encoding="utf-8")
    result = subprocess.run(
        ["node", str(harness), str(LIVE_PAGE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK "), result.stdout


NODE_HARNESS = r"""
"use strict";
// Runs the live page's inline script against a tiny fake DOM and scripted fetch responses.
const vm = require("vm");
const fs = require("fs");

const html = fs.readFileSync(process.argv[2], "utf8");
const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
if (scripts.length !== 1) throw new Error("expected exactly one inline script, got " + scripts.length);

let checks = 0;
function check(cond, what) {
  checks += 1;
  if (!cond) throw new Error("FAILED: " + what);
}

class El {
  constructor(tag, id) {
    this.tagName = tag.toUpperCase(); this.id = id || ""; this.children = []; this.parent = null;
    this.attrs = {}; this._text = ""; this.hidden = false; this.className = ""; this.listeners = {};
    this.disabled = false; this.value = ""; this.title = ""; this.type = "";
  }
  set innerHTML(v) { throw new Error("innerHTML assigned"); }
  get innerHTML() { throw new Error("innerHTML read"); }
  set outerHTML(v) { throw new Error("outerHTML assigned"); }
  insertAdjacentHTML() { throw new Error("insertAdjacentHTML used"); }
  appendChild(c) {
    if (c.parent) c.parent.removeChild(c);
    c.parent = this; this.children.push(c); return c;
  }
  removeChild(c) {
    const i = this.children.indexOf(c);
    if (i < 0) throw new Error("removeChild: not a child");
    this.children.splice(i, 1); c.parent = null; return c;
  }
  set textContent(v) { this.children = []; this._text = String(v); }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(""); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  getAttribute(k) { return Object.prototype.hasOwnProperty.call(this.attrs, k) ? this.attrs[k] : null; }
  addEventListener(t, f) { (this.listeners[t] = this.listeners[t] || []).push(f); }
  dispatch(t) {
    const ev = { type: t, defaultPrevented: false, preventDefault() { this.defaultPrevented = true; } };
    for (const f of this.listeners[t] || []) f(ev);
    return ev;
  }
  find(pred) {
    for (const c of this.children) {
      if (pred(c)) return c;
      const r = c.find(pred);
      if (r) return r;
    }
    return null;
  }
}

// Elements with an id in the page, with their initial `hidden`.
const byId = {};
for (const m of html.matchAll(/<(\w+)\s([^>]*?)\bid="([^"]+)"([^>]*)>/g)) {
  const e = new El(m[1], m[3]);
  e.hidden = /\bhidden\b/.test(m[2] + m[4]);
  byId[m[3]] = e;
}
for (const id of ["sessions", "sessions-body", "sessions-empty", "status", "error", "auth", "auth-token",
                  "auth-forget", "total-calls", "total-cost"]) {
  check(byId[id], "page has #" + id);
}
byId["sessions-body"].appendChild(byId["sessions-empty"]);

let now = 1_700_000_000_000;
class FakeDate extends Date {
  constructor(...a) { if (a.length === 0) super(now); else super(...a); }
  static now() { return now; }
}

const storage = new Map();
const timers = new Map();
const intervals = [];
let timerSeq = 0;
const requests = [];
let responder = null;
const confirms = [];
let confirmAnswer = true;

function response(status, body) {
  return Promise.resolve({
    status, ok: status >= 200 && status < 300,
    json: () => Promise.resolve(body),
  });
}

const sandbox = {
  document: {
    getElementById: (id) => byId[id] || null,
    createElement: (tag) => new El(tag),
  },
  sessionStorage: {
    getItem: (k) => (storage.has(k) ? storage.get(k) : null),
    setItem: (k, v) => storage.set(k, String(v)),
    removeItem: (k) => storage.delete(k),
  },
  fetch: (url, opts) => {
    const req = {
      url, method: (opts && opts.method) || "GET", headers: Object.assign({}, opts && opts.headers),
    };
    requests.push(req);
    return responder(req);
  },
  confirm: (msg) => { confirms.push(msg); return confirmAnswer; },
  setTimeout: (fn, ms) => { timerSeq += 1; timers.set(timerSeq, { fn, ms: ms || 0 }); return timerSeq; },
  clearTimeout: (id) => { timers.delete(id); },
  setInterval: (fn, ms) => { intervals.push({ fn, ms }); return 1000 + intervals.length; },
  Date: FakeDate,
  encodeURIComponent, isFinite, String, Math, Map, Set, Array, Error, Object, Promise,
};
sandbox.window = sandbox;

async function flush() { for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r)); }
function runTimers(maxMs) {
  const due = [...timers.entries()].filter(([, t]) => t.ms <= maxMs);
  for (const [id, t] of due) { timers.delete(id); t.fn(); }
  return due.length;
}
function dataRows() {
  return byId["sessions-body"].children.filter((c) => c.getAttribute("data-call-id") !== null);
}
function row(id) { return dataRows().find((r) => r.getAttribute("data-call-id") === id); }
function cell(r, name) { return r.find((c) => c.className.split(" ").includes("col-" + name)); }

const EVIL = '<img src=x onerror="alert(1)">&amp;';
const S1 = {
  id: "c/1?x", call_sid: EVIL, stream_sid: "MZ1", state: "active", turn: "assistant_speaking",
  profile: "default", model: "gpt-realtime", carrier_format: "pcmu", session_format: "pcm",
  started_at: now / 1000 - 65, duration_s: 65, frames_in: 10, frames_out: 20, barge_ins: 2,
  cost_usd: 0.0123, worker: 1,
};
const S2 = {
  id: "c2", call_sid: "CA2", stream_sid: "MZ2", state: "reconnecting", turn: "<b>weird</b>",
  tools_pending: ["lookup_order"], reconnects: 2, handovers: 1,
  profile: "p", model: "m", carrier_format: "pcma", session_format: "pcma",
  started_at: now / 1000 - 5, duration_s: 5, frames_in: 0, frames_out: 0, barge_ins: 0,
  cost_usd: null, worker: 2,
};

(async () => {
  // 1. First poll is refused: token form + banner, no Authorization header.
  responder = () => response(401, { error: "unauthorized" });
  vm.runInNewContext(scripts[0], sandbox);
  await flush();
  check(requests.length === 1, "one request at load");
  check(requests[0].url === "sessions" && requests[0].method === "GET", "GET sessions (same origin)");
  check(!("Authorization" in requests[0].headers), "no Authorization without a token");
  check(byId.auth.hidden === false, "token form shown on 401");
  check(byId.error.hidden === false && byId.error.textContent.includes("401"), "401 banner");
  check(byId.status.className === "bad", "status shows the failure");
  check([...timers.values()].some((t) => t.ms === 1000), "next poll in 1 s");
  check(intervals.some((i) => i.ms === 1000), "duration ticker every second");

  // 2. Paste a token: stored in sessionStorage and sent as a bearer token.
  responder = () => response(200, { sessions: [S2, S1] });
  byId["auth-token"].value = "  s3cret ";
  check(byId.auth.dispatch("submit").defaultPrevented, "form submit does not navigate");
  check(storage.get("bridge.adminToken") === "s3cret", "token kept in sessionStorage");
  check(runTimers(0) === 1, "immediate poll after the token is set");
  await flush();
  const last = requests[requests.length - 1];
  check(last.headers.Authorization === "Bearer s3cret", "Authorization: Bearer <token>");
  check(byId.auth.hidden && byId.error.hidden, "form and banner hidden after success");
  check(byId.status.className === "ok" && byId.status.textContent.includes("updated"), "status ok");

  // 3. Rows: keyed by call id, ordered by start, all text escaped via textContent.
  const rows = dataRows();
  check(rows.length === 2, "two rows");
  check(rows[0].getAttribute("data-call-id") === "c/1?x" && rows[1].getAttribute("data-call-id") === "c2",
        "rows sorted by started_at, data-call-id set");
  check(byId["sessions-empty"].hidden, "empty placeholder hidden");
  const r1 = row("c/1?x");
  check(cell(r1, "call_sid").textContent === EVIL, "call_sid shown verbatim (as text)");
  check(cell(r1, "id").textContent === "c/1?x", "id cell");
  check(cell(r1, "state").textContent === "active", "state cell");
  check(!cell(r1, "state").className.includes("state-reconnecting"), "an active call is not marked");
  const st2 = cell(row("c2"), "state");
  check(st2 !== undefined && st2.className.split(" ").includes("state-reconnecting"),
        "a reconnecting call is marked and keeps its column class");
  check(st2.textContent === "reconnecting" + "waiting on lookup_order · reconnected 2× · handed over 1×",
        "state note: pending tools, reconnects, handovers");
  check(cell(r1, "turn").children[0].className === "turn turn-assistant_speaking", "turn colour class");
  check(cell(row("c2"), "turn").children[0].className === "turn turn-unknown",
        "unknown turn not used as class");
  check(cell(row("c2"), "turn").textContent === "<b>weird</b>", "unknown turn shown as text");
  check(cell(r1, "formats").textContent === "pcmu → pcm", "formats carrier→session");
  check(cell(r1, "duration").textContent === "1:05", "duration formatted");
  check(cell(r1, "frames").textContent === "10 / 20", "frames in/out");
  check(cell(r1, "barge_ins").textContent === "2", "barge-ins");
  check(cell(r1, "cost").textContent === "$0.0123", "cost with 4 decimals");
  check(cell(row("c2"), "cost").textContent === "–", "null cost");
  check(cell(r1, "worker").textContent === "1", "worker");
  check(cell(r1, "profile").textContent === "default" && cell(r1, "model").textContent === "gpt-realtime",
        "profile and model");
  check(byId["total-calls"].textContent === "2", "total live calls");
  check(byId["total-cost"].textContent === "$0.0123", "total live cost");

  // 4. Duration ticks between polls.
  now += 2000;
  intervals.forEach((i) => i.fn());
  check(cell(r1, "duration").textContent === "1:07", "duration ticks");

  // 5. End button: confirm first; DELETE with the id URL-encoded and the token.
  const button = r1.find((c) => c.tagName === "BUTTON");
  check(button && button.textContent === "End", "End button");
  confirmAnswer = false;
  button.dispatch("click");
  await flush();
  check(confirms.length === 1 && confirms[0].includes("c/1?x"), "confirm asked");
  check(!requests.some((r) => r.method === "DELETE"), "no DELETE when not confirmed");
  confirmAnswer = true;
  responder = (req) => (req.method === "DELETE" ? response(204, null) : response(200, { sessions: [S2] }));
  button.dispatch("click");
  await flush();
  const del = requests.find((r) => r.method === "DELETE");
  check(del && del.url === "sessions/c%2F1%3Fx", "DELETE sessions/{id} (encoded): " + (del && del.url));
  check(del.headers.Authorization === "Bearer s3cret", "DELETE carries the token");
  check(button.disabled, "button disabled while ending");
  runTimers(1000);
  await flush();
  check(!row("c/1?x") && dataRows().length === 1, "ended call removed on next poll");
  check(byId["total-calls"].textContent === "1" && byId["total-cost"].textContent === "$0.0000",
        "totals follow");

  // 6. Network failure: banner, rows kept.
  responder = () => Promise.reject(new TypeError("Failed to fetch"));
  runTimers(1000);
  await flush();
  check(!byId.error.hidden && byId.error.textContent.includes("Failed to fetch"), "banner on fetch failure");
  check(byId.status.className === "bad", "status bad on failure");
  check(dataRows().length === 1, "last known rows kept");

  // 7. Recovery with no calls.
  responder = () => response(200, { sessions: [] });
  runTimers(1000);
  await flush();
  check(byId.error.hidden && dataRows().length === 0 && !byId["sessions-empty"].hidden, "empty state");

  // 8. A refused token brings the form back.
  responder = () => response(401, {});
  runTimers(1000);
  await flush();
  check(!byId.auth.hidden && byId.error.textContent.includes("refused"), "refused token → form again");
  byId["auth-forget"].dispatch("click");
  check(!storage.has("bridge.adminToken"), "forget token clears sessionStorage");

  console.log("OK " + checks + " checks");
})().catch((err) => { console.error(err && err.stack ? err.stack : String(err)); process.exit(1); });
"""
