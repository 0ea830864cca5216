"""How calls spread over the workers of a two-worker service: idle, and under load.

Run from the repository root (method in bench/README.md, "Spread across workers"):

    python bench/spread_bench.py                          # 3 idle rounds, then 3 rounds under 40 calls
    python bench/spread_bench.py --rounds 10 --load-calls 60

Issue 16 reports that six calls arriving 0.2 s apart at an idle two-worker service split 5:1,
4:2 and 4:2 in three tries. This reproduces exactly that: ``python -m bridge serve --workers 2``
(nothing pinned, as deployed), the fake Realtime server of load_bench (``bench/load_upstream.py``)
and, per round, six Twilio-style calls from ``bench/load_carrier.py`` (``--calls 6 --ramp 1.2``:
one every 0.2 s, each streaming 20 ms μ-law frames and hearing the model's answers). Once all six
are up, ``/sessions`` on the admin port says which worker holds each (its ``worker`` field).
Before each idle round the service has no call for at least a second.

Under load: ``--load-calls`` calls of the same kind are connected first and stay up; then the same
rounds of six. Per round it reports the split of the six new calls, the split of all calls, and
the CPU each worker used during the round.

Target (the balancer of bridge.server.occupancy, ``calls_ahead``): every idle round splits as
evenly as it can (3:3 for six calls on two workers: no worker more than one call ahead), and
after every round under load all calls are within ``--slack`` (2) of even, counting calls
that end or start while the counts are read. Exit status 1 when a round misses it, 2 when the
measurement failed. For reference, six independent fair coins (whichever worker's event loop
wakes first) split 3:3 with probability 20/64, 4:2 30/64, 5:1 12/64 and 6:0 2/64.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import cpu_seconds, free_port, http_status, stop_process, wait_port, worker_processes

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
PY = sys.executable


def sessions(admin_port: int) -> list[dict[str, object]]:
    """The admin port's ``/sessions`` (merged over the workers); [] when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/sessions", timeout=3) as resp:
            return list(json.loads(resp.read())["sessions"])
    except (OSError, ValueError, KeyError):
        return []


def split(calls: list[dict[str, object]], workers: int) -> tuple[int, ...]:
    counts = [0] * workers
    for c in calls:
        w = c.get("worker")
        if isinstance(w, int) and 0 <= w < workers:
            counts[w] += 1
    return tuple(counts)


def show(counts: tuple[int, ...]) -> str:
    return ":".join(str(c) for c in counts)


def even(counts: tuple[int, ...], slack: int) -> bool:
    """No worker more than ``slack`` calls ahead of another."""
    return max(counts) - min(counts) <= slack


def coin_reference(n: int) -> str:
    """The distribution of max:min when ``n`` calls each pick one of two workers by a fair coin."""
    probs: dict[int, float] = {}
    for k in range(n + 1):
        hi = max(k, n - k)
        probs[hi] = probs.get(hi, 0.0) + math.comb(n, k) / 2**n
    return ", ".join(f"{hi}:{n - hi} {p:.0%}" for hi, p in sorted(probs.items()))


class Service:
    """The fake Realtime server and ``python -m bridge serve --workers N``."""

    def __init__(self, workers: int, tmp: Path) -> None:
        self.workers = workers
        self.tmp = tmp
        self.up_port, self.port, self.admin = free_port(), free_port(), free_port()
        self.upstream = subprocess.Popen(
            [PY, str(BENCH / "load_upstream.py"), "--port", str(self.up_port), "--out", str(tmp / "upstream.npz"),
             "--max-seconds", "3600"],
            cwd=ROOT,
        )  # fmt: skip
        wait_port(self.up_port, 10)
        cfg = tmp / "bridge.toml"
        cfg.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\ndrain_timeout_s = 2\n'
            f'[admin]\nhost = "127.0.0.1"\nport = {self.admin}\n'
            f'[realtime]\nurl = "ws://127.0.0.1:{self.up_port}/v1/realtime"\naudio_format = "pcmu"\n'
            f'[records]\npath = "{tmp / "calls.sqlite"}"\n[log]\nlevel = "warning"\nformat = "json"\n'
            "[twilio]\nvalidate_signature = false\n"  # loopback; the load callers do not sign
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "PROMETHEUS_"))}
        env["OPENAI_API_KEY"] = "sk-bench-not-a-real-key-0000"
        with open(tmp / "bridge.log", "ab") as log:
            self.proc = subprocess.Popen(
                [PY, "-m", "bridge", "--config", str(cfg), "serve", "--workers", str(workers)],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while http_status(f"http://127.0.0.1:{self.admin}/readyz") != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the bridge did not become ready; see {tmp / 'bridge.log'}")
            time.sleep(0.1)

    def worker_pids(self) -> dict[int, int]:
        return worker_processes(self.proc.pid)

    def callers(self, calls: int, ramp: float, hold: float, tag: str) -> subprocess.Popen[bytes]:
        """``calls`` calls from load_carrier, connecting over ``ramp`` s and staying ≥ ``hold`` s more."""
        return subprocess.Popen(
            [PY, str(BENCH / "load_carrier.py"), "--port", str(self.port), "--calls", str(calls),
             "--ramp", str(ramp), "--warmup", str(hold / 2), "--window", str(hold / 2),
             "--out", str(self.tmp / f"carrier-{tag}.npz")],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_calls(self, want: int, known: set[object], timeout: float) -> list[dict[str, object]]:
        """Poll ``/sessions`` until ``want`` calls not in ``known`` are up; those calls."""
        deadline = time.monotonic() + timeout
        new: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            new = [c for c in sessions(self.admin) if c.get("id") not in known]
            if len(new) >= want:
                break
            time.sleep(0.05)
        return new

    def wait_idle(self, quiet: float, timeout: float = 30.0) -> bool:
        """Until no call has been up for ``quiet`` s."""
        deadline = time.monotonic() + timeout
        idle_since: float | None = None
        while time.monotonic() < deadline:
            if sessions(self.admin):
                idle_since = None
            else:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= quiet:
                    return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        stop_process(self.proc, 20)
        stop_process(self.upstream, 10)


def one_round(svc: Service, n: int, gap: float, tag: str) -> tuple[tuple[int, ...], tuple[int, ...], list[float]]:
    """``n`` calls ``gap`` s apart: (split of the new calls, split of all calls, CPU per worker in cores)."""
    known = {c.get("id") for c in sessions(svc.admin)}
    pids = svc.worker_pids()
    cpu0 = {w: cpu_seconds(p) for w, p in pids.items()}
    t0 = time.monotonic()
    callers = svc.callers(n, n * gap, 3.0, tag)
    try:
        new = svc.wait_calls(n, known, timeout=15 + n * gap)
        everyone = sessions(svc.admin)
        elapsed = time.monotonic() - t0
        cpu = [(cpu_seconds(pids[w]) - cpu0[w]) / elapsed for w in sorted(pids)]
        callers.wait(30)
    finally:
        stop_process(callers, 5)
    if len(new) < n:
        raise RuntimeError(f"only {len(new)} of {n} calls came up in round {tag}; see {svc.tmp}")
    return split(new, svc.workers), split(everyone, svc.workers), cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3, help="rounds in each condition (idle, under load)")
    p.add_argument("--calls", type=int, default=6, help="calls per round")
    p.add_argument("--gap", type=float, default=0.2, help="seconds between the calls of a round")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--load-calls", type=int, default=40, help="calls up during the rounds under load (0: skip)")
    p.add_argument("--slack", type=int, default=2, help="under load: most calls one worker may be ahead")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="spread-bench-"))
    print(f"spread_bench: python -m bridge serve --workers {args.workers}; {args.calls} calls {args.gap} s apart "
          f"per round; files in {tmp}", flush=True)  # fmt: skip
    svc = Service(args.workers, tmp)
    rows: list[tuple[str, int, str, str, str]] = []
    uneven: list[str] = []
    try:
        for r in range(1, args.rounds + 1):
            if not svc.wait_idle(1.0):
                raise RuntimeError("the service did not become idle between rounds")
            new, _, cpu = one_round(svc, args.calls, args.gap, f"idle-{r}")
            rows.append(("idle", r, show(new), show(new), " / ".join(f"{c:.2f}" for c in cpu)))
            if not even(new, 1):
                uneven.append(f"idle round {r}: {show(new)}")
            print(f"  idle round {r}: the {args.calls} calls split {show(new)}", flush=True)
        if args.load_calls:
            svc.wait_idle(1.0)
            hold = args.rounds * (args.calls * args.gap + 8.0) + 20.0
            background = svc.callers(args.load_calls, 2.0, hold, "load")
            try:
                up = svc.wait_calls(args.load_calls, set(), timeout=30)
                print(f"  under load: {len(up)} calls up, split {show(split(up, args.workers))}", flush=True)
                time.sleep(2.0)
                for r in range(1, args.rounds + 1):
                    new, everyone, cpu = one_round(svc, args.calls, args.gap, f"load-{r}")
                    cores = " / ".join(f"{c:.2f}" for c in cpu)
                    rows.append((f"under {args.load_calls} calls", r, show(new), show(everyone), cores))
                    if not even(everyone, args.slack):
                        uneven.append(f"loaded round {r}: all calls {show(everyone)}")
                    print(f"  loaded round {r}: the {args.calls} new calls split {show(new)}, all calls "
                          f"{show(everyone)}", flush=True)  # fmt: skip
                    time.sleep(1.0)
            finally:
                stop_process(background, 5)
    except RuntimeError as exc:
        print(f"spread_bench: {exc}", file=sys.stderr)
        return 2
    finally:
        svc.stop()
    print(f"\n{args.calls} calls {args.gap} s apart per round, `python -m bridge serve --workers {args.workers}` "
          f"(workers 0 : 1 : ...), from `/sessions` on the admin port:\n")  # fmt: skip
    print("| condition | round | new calls per worker | all calls per worker | worker CPU during the round (cores) |")
    print("|---|---|---|---|---|")
    for cond, r, new_s, all_s, cpu_s in rows:
        print(f"| {cond} | {r} | {new_s} | {all_s} | {cpu_s} |")
    if args.workers == 2:
        print(f"\nreference, {args.calls} fair coins (max:min): {coin_reference(args.calls)}")
    print(f"\ntarget: idle rounds as even as possible, all calls within {args.slack} under load: "
          f"{'MISSED (' + '; '.join(uneven) + ')' if uneven else 'met'}")  # fmt: skip
    return 1 if uneven else 0


if __name__ == "__main__":
    sys.exit(main())
