"""Fuzzing a running service: at least 100,000 mutated carrier and model messages while good calls
run; exits 1 when a check fails (2 when it could not be measured).

Run from the repository root (method in bench/README.md, "Fuzzing a running service"; results in
BENCHMARKS.md):

    python bench/fuzz_bench.py                        # 60,000 carrier + 40,000 model messages
    python bench/fuzz_bench.py --messages 20000       # a quick look (split 60/40 the same way)
    python bench/fuzz_bench.py --seed 7 --workers 1 --json fuzz.json

Three process groups: ``python -m bridge serve`` (``server.workers`` workers, the six carriers'
routes with ``verify = false`` on loopback, records in SQLite, JSON logs at level info),
bench/fuzz_upstream.py (the Realtime server, hostile to some sessions) and bench/fuzz_callers.py
(good calls, carrier fuzzers, calls whose model is hostile, junk HTTP). Checked afterwards:

* **0 crashes**: the workers alive and never replaced (same pids throughout), no log line at
  level error, no ``call_crashed``/``connection_failed``/``hook_failed``, no traceback, no record
  with the ``bridge_error`` end reason;
* **good calls byte-exact**: every caller frame reached the model in order (the upstream's
  ``input_audio_buffer.append`` audio equals what the caller sent) and every model delta reached
  the caller in order, in one model session;
* **every bad call ended with a reason**: each upgraded connection is found in the log
  (``call_connected`` names its source address) and in the records, with an end reason and
  status ended, and the caller's socket got a close frame with a code (its reason is the
  record's end reason when the bridge decided the end);
* **junk HTTP answered**: every junk request got an HTTP status line back;
* at least ``--messages`` mutated messages were sent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import (
    ROOT,
    cpu_busy,
    cpu_model,
    free_port,
    http_status,
    stop_process,
    versions,
    wait_port,
    worker_processes,
)

BENCH = Path(__file__).resolve().parent
CARRIERS = ("twilio", "telnyx", "plivo", "vonage", "signalwire", "exotel")
FAILURE_EVENTS = ("call_crashed", "connection_failed", "hook_failed", "record_save_failed", "record_write_failed")


def config(tmp: Path, pub: int, admin: int, up: int, workers: int) -> Path:
    cfg = tmp / "bridge.toml"
    carriers = "".join(f"[carriers.{name}]\nverify = false\n" for name in CARRIERS)
    cfg.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {pub}\nworkers = {workers}\ndrain_timeout_s = 5\n'
        "max_calls_per_worker = 2000\nmax_pending_connections = 2000\n"
        f'[admin]\nhost = "127.0.0.1"\nport = {admin}\n'
        f'[realtime]\nurl = "ws://127.0.0.1:{up}/v1/realtime"\naudio_format = "pcmu"\n'
        # The calls' bench_call parameter tells the fake model which behaviour a session gets.
        'instructions = "bench_call={bench_call}"\n'
        f'[records]\npath = "{tmp / "calls.sqlite"}"\n'
        '[log]\nlevel = "info"\nformat = "json"\n' + carriers
    )
    return cfg


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bridge-fuzz-"))
        self.failures: list[str] = []
        self.figures: dict[str, Any] = {}

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}", flush=True)
        if not ok:
            self.failures.append(what)

    def run(self) -> int:
        a = self.args
        py = sys.executable
        pub, admin, up = free_port(), free_port(), free_port()
        progress = self.tmp / "upstream-progress.json"
        up_out, callers_out, log_path = self.tmp / "upstream.json", self.tmp / "callers.json", self.tmp / "service.log"
        carrier_target = round(a.messages * a.carrier_share)
        model_target = a.messages - carrier_target
        print(f"fuzz_bench: {versions()}; {cpu_model()}; {os.cpu_count()} CPUs; files in {self.tmp}", flush=True)
        upstream = subprocess.Popen(
            [py, str(BENCH / "fuzz_upstream.py"), "--port", str(up), "--out", str(up_out), "--seed", str(a.seed),
             "--progress", str(progress), "--interval-ms", str(a.model_interval_ms),
             "--good-answers", str(a.good_answers), "--good-deltas", str(a.good_deltas)],
            cwd=ROOT,
        )  # fmt: skip
        service: subprocess.Popen[bytes] | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "PROMETHEUS_"))}
        try:
            wait_port(up, 10)
            cfg = config(self.tmp, pub, admin, up, a.workers)
            with open(log_path, "ab") as log_file:
                service = subprocess.Popen(
                    [py, "-m", "bridge", "--config", str(cfg), "serve"], cwd=ROOT, env=env, stdout=log_file,
                    stderr=log_file,
                )  # fmt: skip
            deadline = time.monotonic() + 30
            while http_status(f"http://127.0.0.1:{admin}/readyz") != 200:
                if time.monotonic() > deadline or service.poll() is not None:
                    print(f"the bridge did not become ready; see {log_path}", flush=True)
                    return 2
                time.sleep(0.1)
            workers = worker_processes(service.pid)
            print(f"bridge ready: supervisor {service.pid}, workers {sorted(workers.values())}", flush=True)
            busy0, t0 = cpu_busy(), time.monotonic()
            callers = subprocess.Popen(
                [py, str(BENCH / "fuzz_callers.py"), "--port", str(pub), "--out", str(callers_out),
                 "--seed", str(a.seed), "--carrier-messages", str(carrier_target),
                 "--model-messages", str(model_target), "--upstream-progress", str(progress),
                 "--rate", str(a.rate), "--fuzz-calls", str(a.fuzz_calls), "--model-calls", str(a.model_calls),
                 "--good-calls", str(a.good_calls), "--good-seconds", str(a.good_seconds),
                 "--good-answers", str(a.good_answers), "--good-deltas", str(a.good_deltas),
                 "--http-requests", str(a.http_requests)],
                cwd=ROOT,
            )  # fmt: skip
            changed: list[str] = []
            while callers.poll() is None:
                time.sleep(1.0)
                now = worker_processes(service.pid)
                if now != workers and not changed:
                    changed.append(f"workers {workers} became {now}")
                if time.monotonic() - t0 > a.timeout:
                    stop_process(callers, 5)
                    print("the callers did not finish in time", flush=True)
                    return 2
            seconds = time.monotonic() - t0
            busy1 = cpu_busy()
            self.figures["cpu_busy"] = {c: round((busy1[c] - busy0.get(c, 0.0)) / seconds, 2) for c in busy1}
            self.figures["seconds"] = round(seconds, 1)
            alive = all(Path(f"/proc/{pid}").exists() for pid in workers.values())
            if callers.returncode != 0:
                print(f"the callers failed ({callers.returncode})", flush=True)
                return 2
        finally:
            if service is not None:
                stop_process(service, 30)
            stop_process(upstream, 15)
        print(f"ran {seconds:.1f} s; CPU busy per core during the run: {self.figures['cpu_busy']}", flush=True)
        self.analyse(callers_out, up_out, log_path, workers, changed, alive)
        if a.json:
            a.json.write_text(json.dumps({"figures": self.figures, "failures": self.failures}, indent=2))
        print("\nresult:", "every check passed" if not self.failures else f"{len(self.failures)} check(s) FAILED")
        return 1 if self.failures else 0

    # --- checks -------------------------------------------------------------------------------
    def analyse(
        self, callers_out: Path, up_out: Path, log_path: Path, workers: dict[int, int], changed: list[str], alive: bool
    ) -> None:
        a = self.args
        callers = json.loads(callers_out.read_text())
        upstream = json.loads(up_out.read_text())
        outcomes = callers["outcomes"]
        log = read_log(log_path)
        records = read_records(self.tmp / "calls.sqlite")
        f = self.figures

        # --- messages ---
        carrier_kinds: Counter[str] = Counter()
        for o in outcomes:
            if o["role"] == "fuzzc":
                carrier_kinds.update(o["sent"])
        model_kinds = Counter(upstream["model_kinds"])
        f["carrier_messages"] = dict(carrier_kinds.most_common())
        f["model_messages"] = dict(model_kinds.most_common())
        f["model_session_ends"] = upstream["model_ending"]
        f["valid_messages"] = {
            "carrier_filler": sum(o["valid_sent"] for o in outcomes if o["role"] == "fuzzc"),
            "model_filler": upstream["model_valid"],
        }
        total = sum(carrier_kinds.values()) + sum(model_kinds.values())
        f["mutated_total"] = total
        roles = Counter(o["role"] for o in outcomes)
        upgraded = Counter(o["role"] for o in outcomes if o["status"] == 101)
        f["connections"] = {r: {"opened": roles[r], "upgraded": upgraded[r]} for r in sorted(roles)}
        f["upstream_sessions"] = upstream["sessions"]
        print_table("Carrier messages sent, by mutation", carrier_kinds)
        print_table("Model events sent, by mutation", model_kinds)
        print(
            f"\nmutated messages: {sum(carrier_kinds.values())} carrier + {sum(model_kinds.values())} model = {total}"
        )
        print(f"valid filler between them: {f['valid_messages']}; model sessions ended the hard way: "
              f"{upstream['model_ending']}")  # fmt: skip
        print(f"connections: {f['connections']}; model sessions opened by kind: {upstream['sessions']}")

        print("\nchecks:")
        self.check(total >= a.messages, f"at least {a.messages} mutated messages sent ({total})")
        self.check(not upstream["errors"], f"the fake model saw only JSON from the bridge ({upstream['errors'][:3]})")

        # --- crashes ---
        levels = Counter(e.get("level") for e in log["events"])
        failures = Counter(e.get("event") for e in log["events"] if e.get("event") in FAILURE_EVENTS)
        errors = [e for e in log["events"] if e.get("level") in ("error", "critical")]
        bridge_errors = [r for r in records.values() if r["end_reason"] == "bridge_error"]
        f["log_lines"] = {"total": log["lines"], **{str(k): v for k, v in levels.items()}, "not_json": log["not_json"]}
        f["crashes"] = {"error_lines": len(errors), "tracebacks": log["tracebacks"], **dict(failures),
                        "bridge_error_records": len(bridge_errors)}  # fmt: skip
        self.check(
            alive and not changed, f"the {len(workers)} worker(s) stayed alive and were never replaced {changed}"
        )
        self.check(not errors and not log["tracebacks"] and not failures,
                   f"no error log lines, tracebacks or crash events ({len(errors)} errors "
                   f"{[e.get('event') for e in errors[:5]]}, {log['tracebacks']} tracebacks, "
                   f"{dict(failures)})")  # fmt: skip
        self.check(not bridge_errors, f"no call ended with bridge_error ({len(bridge_errors)})")
        self.check(log["not_json"] == 0, f"every log line is one JSON object ({log['not_json']} are not)")

        # --- records of every upgraded connection ---
        by_source = log["connected"]
        missing_log, missing_record, open_record, no_reason, no_close = [], [], [], [], []
        dropped_1007 = []
        pairs: Counter[tuple[str, str, str]] = Counter()
        for o in outcomes:
            if o["status"] != 101:
                continue
            call_id = by_source.get(o["source"])
            if call_id is None:
                missing_log.append(o["tag"])
                continue
            rec = records.get(call_id)
            if rec is None:
                missing_record.append(o["tag"])
                continue
            if rec["status"] != "ended":
                open_record.append(o["tag"])
            if not rec["end_reason"]:
                no_reason.append(o["tag"])
            code = "none" if o["close_code"] is None else str(o["close_code"])
            reason = o["close_reason"] or ""
            if o["closed_first"]:
                decided = "echo of the caller's close"
            elif reason.startswith(str(rec["end_reason"])):
                decided = "the record's reason"
            elif o["close_code"] is None and o["ending"] == "bad_utf8":
                # wsproto reports a text frame that is not UTF-8 as a close (1007) from the peer, and
                # trio-websocket then closes the TCP stream without sending any close frame. The
                # record usually says so; when a (mutated) stop just before it had already ended
                # the call, the record says caller_hangup and the frame still cut the TCP stream.
                decided = "none: TCP closed after invalid UTF-8 (1007)"
                dropped_1007.append(o["tag"])
            elif o["close_code"] is None:
                decided = "none"
                no_close.append(o["tag"])
            else:
                decided = f"the WebSocket library's: {reason[:36]!r}"
            pairs[(o["role"], f"{rec['end_reason']} / {code}", decided)] += 1
        n_up = sum(upgraded.values())
        f["records"] = {"upgraded_connections": n_up, "records": len(records)}
        f["ends"] = [{"role": r, "record reason / close code": k, "close reason": d, "calls": n}
                     for (r, k, d), n in sorted(pairs.items())]  # fmt: skip
        print("\nHow the calls ended (role; record end reason / close code the caller got; close reason):")
        for (role, key, decided), n in sorted(pairs.items()):
            print(f"  {role:6} {key:32} {decided:40} {n}")
        self.check(not missing_log, f"every upgraded connection is named in the log ({len(missing_log)} missing)")
        self.check(not missing_record, f"every call has a record ({len(missing_record)} missing: {missing_record[:5]})")
        self.check(not open_record and not no_reason,
                   f"every record is ended with an end reason ({len(open_record)} open, "
                   f"{len(no_reason)} without)")  # fmt: skip
        self.check(not no_close, f"every call's socket got a close frame with a code ({len(no_close)} did not: "
                                 f"{no_close[:5]}; known and reported apart: {len(dropped_1007)} closed after "
                                 "invalid UTF-8 without a close frame)")  # fmt: skip
        f["closed_without_close_frame_after_invalid_utf8"] = len(dropped_1007)

        # --- good calls, byte-exact ---
        good = [o for o in outcomes if o["role"] == "good" and o["status"] == 101]
        bad_up, bad_down, reconnected, not_hung_up = [], [], [], []
        frames = deltas = 0
        for o in good:
            seen = upstream["good"].get(o["tag"], {"appends": [], "deltas": [], "connections": 0})
            frames += len(o["sent_audio"])
            deltas += len(seen["deltas"])
            if seen["appends"] != o["sent_audio"]:
                bad_up.append(
                    (
                        o["tag"],
                        len(o["sent_audio"]),
                        len(seen["appends"]),
                        first_difference(o["sent_audio"], seen["appends"]),
                    )
                )
            if o["received_audio"] != seen["deltas"]:
                bad_down.append(
                    (
                        o["tag"],
                        len(seen["deltas"]),
                        len(o["received_audio"]),
                        first_difference(seen["deltas"], o["received_audio"]),
                    )
                )
            if seen["connections"] != 1:
                reconnected.append(o["tag"])
            rec = records.get(log["connected"].get(o["source"], ""), {})
            if rec.get("end_reason") != "caller_hangup":
                not_hung_up.append((o["tag"], rec.get("end_reason")))
        f["good_calls"] = {"calls": len(good), "by_carrier": dict(Counter(o["dialect"] for o in good)),
                           "caller_frames": frames, "model_deltas": deltas}  # fmt: skip
        print(f"\ngood calls: {f['good_calls']}")
        self.check(
            len(good) >= 1 and len(good) == roles["good"],
            f"every good call was upgraded ({len(good)} of {roles['good']})",
        )
        self.check(not bad_up, f"caller → model byte-exact and in order for every good call ({bad_up[:3]})")
        self.check(not bad_down, f"model → caller byte-exact and in order for every good call ({bad_down[:3]})")
        self.check(not reconnected, f"each good call kept one model session ({reconnected[:3]})")
        self.check(not not_hung_up, f"each good call's record says caller_hangup ({not_hung_up[:3]})")

        # --- junk HTTP ---
        http = [o for o in outcomes if o["role"] == "http"]
        statuses = Counter((next(iter(o["sent"])), o["status"]) for o in http)
        f["http"] = {f"{k} → {s}": n for (k, s), n in sorted(statuses.items(), key=str)}
        print(f"junk HTTP (kind → status): {f['http']}")
        unanswered = [o["tag"] for o in http if o["status"] is None]
        self.check(not unanswered, f"every junk HTTP request got a status line ({len(unanswered)} did not)")


def first_difference(a: list[str], b: list[str]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def print_table(title: str, counts: Counter[str]) -> None:
    print(f"\n{title}:")
    for kind, n in counts.most_common():
        print(f"  {kind:26} {n:7}")


def read_log(path: Path) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    connected: dict[str, str] = {}
    not_json = tracebacks = lines = 0
    for line in path.read_text(errors="replace").splitlines():
        lines += 1
        if "Traceback" in line:
            tracebacks += 1
        try:
            event = json.loads(line)
        except ValueError:
            not_json += 1
            continue
        if not isinstance(event, dict):
            not_json += 1
            continue
        if "Traceback" in str(event.get("exception", "")):
            tracebacks += 1
        if event.get("event") == "call_connected":
            connected[str(event.get("remote"))] = str(event.get("call_id"))
        # Keep the interesting ones only (the log has a line per bad message).
        if event.get("level") in ("error", "critical") or event.get("event") in FAILURE_EVENTS:
            events.append(event)
        else:
            events.append({"level": event.get("level"), "event": event.get("event")})
    return {"events": events, "connected": connected, "not_json": not_json, "tracebacks": tracebacks, "lines": lines}


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT call_id, status, end_reason, end_detail, carrier FROM calls").fetchall()
    return {r[0]: {"status": r[1], "end_reason": r[2], "end_detail": r[3], "carrier": r[4]} for r in rows}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--messages", type=int, default=100_000, help="mutated messages to send, carrier and model together")
    p.add_argument("--carrier-share", type=float, default=0.6, help="share of --messages sent by the carrier fuzzers")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=2500.0, help="carrier fuzz messages per second (all fuzzers)")
    p.add_argument("--fuzz-calls", type=int, default=24, help="concurrent carrier fuzzing calls")
    p.add_argument("--model-calls", type=int, default=8, help="concurrent calls whose model is hostile")
    p.add_argument("--model-interval-ms", type=float, default=4.0, help="mean gap between a hostile model's events")
    p.add_argument("--good-calls", type=int, default=6, help="concurrent good calls (each lasts --good-seconds)")
    p.add_argument("--good-seconds", type=float, default=6.0)
    p.add_argument("--good-answers", type=int, default=3)
    p.add_argument("--good-deltas", type=int, default=6)
    p.add_argument("--http-requests", type=int, default=300)
    p.add_argument("--timeout", type=float, default=900.0, help="give up (exit 2) after this many seconds")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    try:
        return Run(args).run()
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"fuzz_bench could not measure: {exc!r}", flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
