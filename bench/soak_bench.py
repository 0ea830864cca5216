"""Soak: N concurrent real-time calls for M minutes, with answers and barge-ins, calls ending and
being replaced throughout; exits 1 when a check fails (2 when it could not be measured).

Run from the repository root (method in bench/README.md, "Soak"; results in BENCHMARKS.md):

    python bench/soak_bench.py                          # 100 calls, 10 minutes (~11 min)
    python bench/soak_bench.py --calls 20 --minutes 2   # a quick look

The load generators of bench/load_bench.py: ``python -m bridge serve`` with one worker pinned to
CPU 0 and the generators on CPU 1, as load_bench does (``--workers 2``: two workers and the
generators on both CPUs, nothing pinned, as deployed), the fake Realtime server
(bench/load_upstream.py: an answer every 4 s, every 3rd one interrupted half-way by a barge-in)
and the callers (bench/load_carrier.py with ``--hold``: each call lasts 30-90 s, then says
``stop`` and a new call takes its place). Checked:

* **RSS flat after warm-up**: the workers' RSS (summed), sampled every ``--sample-s``, grows by at
  most ``--rss-mib-per-min`` MiB per minute after the warm-up (first ``--warmup-min`` minutes);
* **0 lost frames** both ways (every frame and delta is matched by the id in its audio);
* **0 lost records**: every call that got its 101 has a record, ended, with an end reason
  (``caller_hangup``: the bridge ended none of them);
* no worker was replaced or logged an error; no call was dropped by the bridge;
* p99 latency each way is reported (over the whole run and per minute); it is not a pass/fail
  figure here, load_bench checks latency targets.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import (
    BENCH,
    ROOT,
    Bench,
    Setup,
    cpu_busy,
    cpu_model,
    cpu_seconds,
    free_port,
    join,
    latency_stats,
    pinned,
    prime_call,
    rss_mib,
    stop_process,
    versions,
    wait_port,
    worker_processes,
)

RAMP_S = 10.0  # calls connect spread over this
CUT_BY_HANGUP_S = 1.0  # a delta sent this close to its session's end may have met the caller's hang-up


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--calls", type=int, default=100, help="calls up at once")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=1, help="server.workers (1: pinned as in load_bench)")
    p.add_argument("--hold", default="30:90", help="MIN:MAX seconds a call lasts before it is replaced")
    p.add_argument("--answer-every", type=float, default=4.0, help="seconds between the model's answers")
    p.add_argument("--barge-in-every", type=int, default=3, help="every K-th answer is interrupted half-way")
    p.add_argument("--warmup-min", type=float, default=2.0, help="minutes of warm-up before RSS must stay flat")
    p.add_argument("--rss-mib-per-min", type=float, default=0.5, help="allowed RSS growth after warm-up, MiB/min")
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling interval")
    p.add_argument("--websocket", choices=["direct", "trio-websocket"], default=None,
                   help="server.websocket (default: the service's own default, direct)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    try:
        return Soak(args).run()
    except (OSError, RuntimeError, TimeoutError, KeyError, ValueError) as exc:
        print(f"soak_bench could not measure: {exc!r}", flush=True)
        return 2


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bench = Bench(args, prefix="bridge-soak-")
        self.tmp = self.bench.tmp
        self.failures: list[str] = []
        self.figures: dict[str, Any] = {}

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}", flush=True)
        if not ok:
            self.failures.append(what)

    def run(self) -> int:
        a = self.args
        py = sys.executable
        total_s = a.minutes * 60.0
        env = (("BRIDGE_SERVER__WEBSOCKET", a.websocket),) if a.websocket else ()
        if a.workers == 1:  # as load_bench: the worker alone on CPU 0, the load generators on CPU 1
            setup = Setup("bridge", 1, (0,), (1,), env=env)
        else:  # as deployed: the kernel places everything on both CPUs
            cpus = tuple(sorted(os.sched_getaffinity(0)))
            setup = Setup("bridge", a.workers, cpus, cpus, env=env)
        up_port, pub_port = free_port(), free_port()
        up_out, car_out = self.tmp / "upstream.npz", self.tmp / "carrier.npz"
        print(f"soak_bench: {versions()}; {cpu_model()}; {os.cpu_count()} CPUs; {a.calls} calls for {a.minutes:g} min;"
              f" files in {self.tmp}", flush=True)  # fmt: skip
        load_cpu = pinned(setup.load_cpus)
        upstream = subprocess.Popen(
            [py, str(BENCH / "load_upstream.py"), "--port", str(up_port), "--out", str(up_out),
             "--answer-every", str(a.answer_every), "--barge-in-every", str(a.barge_in_every),
             "--max-seconds", str(total_s + 300)],
            cwd=ROOT, preexec_fn=load_cpu,
        )  # fmt: skip
        service: subprocess.Popen[bytes] | None = None
        samples: list[tuple[float, float]] = []  # (seconds since the calls started, workers' RSS MiB)
        try:
            wait_port(up_port, 10)
            service, workers, _ = self.bench._start_bridge(setup, pub_port, up_port, "soak")
            watch = [f"worker{i}={pid}" for i, pid in enumerate(workers)]
            if not prime_call(pub_port):
                raise RuntimeError(f"the priming call failed; see {self.tmp}/service-soak.log")
            time.sleep(0.5)
            idle_rss = sum(rss_mib(pid) for pid in workers)
            cpu0, busy0 = sum(cpu_seconds(pid) for pid in workers), cpu_busy()
            carrier = subprocess.Popen(
                [py, str(BENCH / "load_carrier.py"), "--port", str(pub_port), "--calls", str(a.calls),
                 "--ramp", str(RAMP_S), "--warmup", "0", "--window", str(total_s - RAMP_S), "--hold", a.hold,
                 "--seed", str(a.seed), "--out", str(car_out), "--watch", *watch,
                 f"upstream={upstream.pid}"],
                cwd=ROOT, preexec_fn=load_cpu,
            )  # fmt: skip
            t0 = time.monotonic()
            replaced = ""
            next_sample = t0
            while carrier.poll() is None:
                now = time.monotonic()
                if now >= next_sample:
                    samples.append((now - t0, sum(rss_mib(pid) for pid in workers)))
                    next_sample += a.sample_s
                    current = worker_processes(service.pid)
                    if sorted(current.values()) != sorted(workers) and not replaced:
                        replaced = f"workers {workers} became {current}"
                    minute = int((now - t0) // 60)
                    if len(samples) % max(1, round(60 / a.sample_s)) == 0:
                        print(f"  {minute:3d} min: workers' RSS {samples[-1][1]:.1f} MiB", flush=True)
                if now - t0 > total_s + 120:
                    stop_process(carrier, 5)
                    raise RuntimeError("the callers did not finish in time")
                time.sleep(min(0.5, max(0.0, next_sample - time.monotonic())))
            seconds = time.monotonic() - t0
            cpu1, busy1 = sum(cpu_seconds(pid) for pid in workers), cpu_busy()
            end_rss = {pid: round(rss_mib(pid), 1) for pid in workers}
            if carrier.returncode != 0:
                raise RuntimeError(f"the callers failed ({carrier.returncode})")
            time.sleep(3.0)  # the last records are written when their calls finish
        finally:
            if service is not None:
                stop_process(service, 30)
            stop_process(upstream, 15)
        self.figures.update(
            seconds=round(seconds, 1),
            idle_rss_mib=round(idle_rss, 1),
            workers=a.workers,
            worker_cores=round((cpu1 - cpu0) / seconds, 3),
            end_rss_by_worker=end_rss,
            cpu_busy={c: round((busy1[c] - busy0.get(c, 0.0)) / seconds, 2) for c in busy1},
        )
        self.analyse(samples, car_out, up_out, replaced)
        if a.json:
            a.json.write_text(json.dumps({"figures": self.figures, "failures": self.failures}, indent=2))
        print("\nresult:", "every check passed" if not self.failures else f"{len(self.failures)} check(s) FAILED")
        return 1 if self.failures else 0

    # --- checks ---------------------------------------------------------------------------------
    def analyse(self, samples: list[tuple[float, float]], car_out: Path, up_out: Path, replaced: str) -> None:
        import numpy as np

        a, f = self.args, self.figures
        with np.load(car_out) as c, np.load(up_out) as u:
            summary = json.loads(str(c["summary"]))
            upstream = json.loads(str(u["summary"]))
            w0, w1 = summary["w0"], summary["w1"]
            up, frames, frames_lost = join(c["frame_ids"], c["frame_t"], u["frame_ids"], u["frame_t"], w0, w1)
            # A delta the model sent just before its session ended may have met the caller's hang-up
            # (the bridge does not forward audio to a caller that said stop): counted apart.
            d_ids, d_t = u["delta_ids"], u["delta_t"]
            closed_at = dict(zip(u["close_ids"].tolist(), u["close_t"].tolist(), strict=True))
            session_end = np.array([closed_at.get(int(i) >> 32, np.inf) for i in d_ids.tolist()])
            at_hangup = d_t >= session_end - CUT_BY_HANGUP_S
            down, deltas, deltas_lost = join(d_ids[~at_hangup], d_t[~at_hangup], c["delta_ids"], c["delta_t"], w0, w1)
            _, cut_sent, cut_lost = join(d_ids[at_hangup], d_t[at_hangup], c["delta_ids"], c["delta_t"], w0, w1)
            minutes = per_minute(c["frame_ids"], c["frame_t"], u["frame_ids"], u["frame_t"], w0, w1)
            minutes_down = per_minute(d_ids[~at_hangup], d_t[~at_hangup], c["delta_ids"], c["delta_t"], w0, w1)
        f["calls"] = {"started": summary["calls_started"], "connected": summary["connected"],
                      "failed_to_connect": summary["failed"], "hung_up_mid_run": summary["hung_up"],
                      "dropped_by_bridge": summary["dropped"], "model_sessions": upstream["sessions"],
                      "barge_ins_sent": upstream["barge_ins"]}  # fmt: skip
        up_s, down_s = latency_stats(up), latency_stats(down)
        f["caller_to_model"] = {"frames": frames, "lost": frames_lost, **{k: round(v, 2) for k, v in up_s.items()}}
        f["model_to_caller"] = {"deltas": deltas, "lost": deltas_lost, **{k: round(v, 2) for k, v in down_s.items()},
                                "sent_within_1s_of_hangup": cut_sent, "of_those_not_delivered": cut_lost}  # fmt: skip
        f["p99_per_minute_ms"] = {"up": minutes, "down": minutes_down}
        print(f"\ncalls: {f['calls']}")
        print(f"caller → model: {f['caller_to_model']}")
        print(f"model → caller: {f['model_to_caller']}")
        print(f"p99 per minute (ms): up {minutes}; down {minutes_down}")

        # --- RSS ---
        rss = self.rss(samples)
        print(f"workers' RSS (summed): {rss}; at the end by worker: {f['end_rss_by_worker']}")
        print("\nchecks:")
        self.check(rss["growth_mib"] <= rss["allowed_mib"],
                   f"RSS flat after warm-up: grew {rss['growth_mib']:+.1f} MiB from minute {a.warmup_min:g} to the "
                   f"end (slope {rss['slope_mib_per_min']:+.2f} MiB/min), "
                   f"allowed {rss['allowed_mib']:.1f} MiB")  # fmt: skip
        self.check(frames > 0 and frames_lost == 0, f"0 caller frames lost ({frames_lost} of {frames})")
        self.check(deltas > 0 and deltas_lost == 0, f"0 model deltas lost ({deltas_lost} of {deltas})")
        self.check(summary["failed"] == 0 and summary["dropped"] == 0,
                   f"every call connected and none was closed by the bridge ({summary['failed']} failed, "
                   f"{summary['dropped']} dropped)")  # fmt: skip
        self.check(upstream["barge_ins"] > 0, f"barge-ins happened ({upstream['barge_ins']})")

        # --- records ---
        records = read_records(self.tmp / "calls.sqlite")
        wanted = summary["call_sids"]
        missing = [sid for sid in wanted if sid not in records]
        not_ended = [sid for sid in wanted if sid in records and records[sid]["status"] != "ended"]
        no_reason = [sid for sid in wanted if sid in records and not records[sid]["end_reason"]]
        reasons = Counter(str(records[sid]["end_reason"]) for sid in wanted if sid in records)
        barge_ins = sum(records[sid]["barge_ins"] for sid in wanted if sid in records)
        f["records"] = {"calls": len(wanted), "records": sum(1 for sid in wanted if sid in records),
                        "missing": len(missing), "not_ended": len(not_ended), "without_reason": len(no_reason),
                        "end_reasons": dict(reasons), "barge_ins_recorded": barge_ins}  # fmt: skip
        print(f"records: {f['records']}")
        self.check(not missing, f"every call has a record ({len(missing)} missing: {missing[:3]})")
        self.check(not not_ended and not no_reason,
                   f"every record is ended with an end reason ({len(not_ended)} not ended, "
                   f"{len(no_reason)} without)")  # fmt: skip
        self.check(set(reasons) <= {"caller_hangup"}, f"every call ended because the caller hung up ({dict(reasons)})")

        # --- the service ---
        log = (self.tmp / "service-soak.log").read_text(errors="replace").splitlines()
        errors = [line[:200] for line in log if "Traceback" in line or log_level(line) in ("error", "critical")]
        f["error_log_lines"] = len(errors)
        self.check(not replaced, f"no worker was replaced {replaced}")
        self.check(not errors, f"no error log lines ({len(errors)}: {errors[:2]})")

    def rss(self, samples: list[tuple[float, float]]) -> dict[str, Any]:
        """Growth after warm-up: the median RSS of the last minute minus that of the minute after the
        warm-up (medians, so one sample taken mid-garbage-collection does not decide), and the
        least-squares slope over every sample after the warm-up."""
        import numpy as np

        a = self.args
        t = np.array([s[0] for s in samples])
        m = np.array([s[1] for s in samples])
        warm = a.warmup_min * 60.0
        after = t >= warm
        if after.sum() < 4:
            raise RuntimeError("too few RSS samples after the warm-up: run longer or lower --warmup-min")
        end = t[-1]
        first = np.median(m[after & (t < warm + 60.0)])
        last = np.median(m[t >= end - 60.0])
        slope = float(np.polyfit(t[after] / 60.0, m[after], 1)[0])
        minutes_after = (end - warm) / 60.0
        self.figures["rss"] = out = {
            "idle_mib": self.figures["idle_rss_mib"],
            "at_warmup_mib": round(float(first), 1),
            "end_mib": round(float(last), 1),
            "max_mib": round(float(m.max()), 1),
            "growth_mib": round(float(last - first), 2),
            "slope_mib_per_min": round(slope, 3),
            "allowed_mib": round(float(a.rss_mib_per_min * minutes_after), 2),
            "per_minute_mib": [round(float(np.median(m[(t >= k * 60) & (t < (k + 1) * 60)])), 1)
                               for k in range(int(end // 60) + 1) if ((t >= k * 60) & (t < (k + 1) * 60)).any()],
        }  # fmt: skip
        return out


def per_minute(sent_ids: Any, sent_t: Any, got_ids: Any, got_t: Any, w0: float, w1: float) -> list[float]:
    """p99 (ms) of each whole minute of the run, to show whether latency drifts."""
    out = []
    k = 0
    while w0 + (k + 1) * 60.0 <= w1 + 1.0:
        lat, _, _ = join(sent_ids, sent_t, got_ids, got_t, w0 + k * 60.0, min(w1, w0 + (k + 1) * 60.0))
        stats = latency_stats(lat)
        out.append(round(stats.get("p99", float("nan")), 2))
        k += 1
    return out


def log_level(line: str) -> str | None:
    try:
        event = json.loads(line)
    except ValueError:
        return "error"  # the service logs JSON only: anything else is a crash's output
    return event.get("level") if isinstance(event, dict) else "error"


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT call_sid, status, end_reason, barge_ins FROM calls").fetchall()
    return {r[0]: {"status": r[1], "end_reason": r[2], "barge_ins": r[3]} for r in rows}


if __name__ == "__main__":
    sys.exit(main())
