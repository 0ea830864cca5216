"""Calls over 1 and 2 worker processes: CPU per call, calls per worker, shared socket vs SO_REUSEPORT.

Run from the repository root (method and caveats in bench/README.md, results in BENCHMARKS.md):

    python bench/workers_bench.py                  # ~3 minutes
    python bench/workers_bench.py --calls 40 --window 20 --rounds 4

Three processes (groups): the Realtime simulator (its own process), the bridge (supervisor +
workers, ``python -m bridge.server.supervisor --listen shared|reuseport``), and the callers (this
process, trio). Every call sends real-time 20 ms μ-law frames and the model answers each turn
with 2 s of audio (played back in real time), so both directions carry 50 frames/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from load_bench import worker_processes  # a sibling script: bench/ is on sys.path when run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.audio.wavfile import CALLER_ULAW, bundled  # noqa: E402
from bridge.testing.caller import CallerOptions, CallResult, Say, WaitForReply, run_call  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SPEECH = bundled(CALLER_ULAW).data[: 8 * 1600]  # 1.6 s of speech per turn
SIM_CODE = """
import sys, trio
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.simulator_server import serve_simulator
opts = SimulatorOptions(response_audio_ms=2000, record_events=False, record_audio=False)
trio.run(lambda: serve_simulator("127.0.0.1", int(sys.argv[1]), options=opts))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> dict[int, int]:
    """worker id -> pid for the supervisor's workers."""
    return worker_processes(pid)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    with trio.move_on_after(5):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return 0, b""
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body
    return 0, b""


@dataclass
class Run:
    workers: int
    mode: str
    calls: int
    cpu_cores: float = 0.0  # bridge (supervisor + workers) CPU over the window, in cores
    per_worker_cpu: dict[int, float] = field(default_factory=dict)
    per_worker_calls: list[dict[int, int]] = field(default_factory=list)  # one per round
    caller_cores: float = 0.0
    sim_cores: float = 0.0
    failed: int = 0
    replies: int = 0
    restart_latencies: list[float] = field(default_factory=list)  # seconds, see restart_probe

    @property
    def per_call(self) -> float:
        return self.cpu_cores / self.calls if self.calls else 0.0


class Bridge:
    def __init__(self, workers: int, mode: str, sim_port: int, tmp: Path) -> None:
        self.port, self.admin = free_port(), free_port()
        cfg = tmp / f"bridge-{workers}-{mode}.toml"
        cfg.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\ndrain_timeout_s = 5\n'
            f'[admin]\nhost = "127.0.0.1"\nport = {self.admin}\n'
            f'[realtime]\nurl = "ws://127.0.0.1:{sim_port}/v1/realtime"\n'
            f'[records]\npath = "{tmp / "calls.sqlite"}"\n[log]\nlevel = "warning"\nformat = "json"\n'
            # Loopback, and the load callers do not sign.
            '[twilio]\nvalidate_signature = false\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "PROMETHEUS_"))}
        env["OPENAI_API_KEY"] = "sk-bench-not-a-real-key-0000"
        cmd = [sys.executable, "-m", "bridge.server.supervisor", "--config", str(cfg), "--workers", str(workers)]
        with open(tmp / "bridge.log", "ab") as errors:
            self.proc = subprocess.Popen([*cmd, "--listen", mode], cwd=ROOT, env=env, stderr=errors)

    async def wait_ready(self) -> None:
        with trio.fail_after(20):
            while (await http_get(self.admin, "/readyz"))[0] != 200:
                await trio.sleep(0.05)

    async def per_worker_calls(self) -> dict[int, int]:
        status, body = await http_get(self.admin, "/sessions")
        counts: dict[int, int] = {}
        if status == 200:
            for s in json.loads(body)["sessions"]:
                counts[int(s["worker"])] = counts.get(int(s["worker"]), 0) + 1
        return counts

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid).values()]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            for pid in children(self.proc.pid).values():
                os.kill(pid, 9)
            self.proc.kill()


async def one_round(bridge: Bridge, n: int, hold_s: float, measure: float, sim_pid: int, run: Run,
                    rng: random.Random) -> None:
    """N calls arriving at random (mean 50 ms apart), held ``hold_s``; CPU over ``measure`` s."""
    url = f"ws://127.0.0.1:{bridge.port}/media"
    results: list[CallResult] = []
    turns = max(1, int(hold_s // 5) + 1)

    async def call(delay: float) -> None:
        await trio.sleep(delay)
        script: list[Any] = [Say(), WaitForReply(6000)] * turns
        opts = CallerOptions(url=url, audio=SPEECH, script=script, record_audio=False,
                             hang_up_after_ms=int((hold_s + ramp - delay) * 1000))
        results.append(await run_call(opts))

    delays, t = [], 0.0
    for _ in range(n):
        delays.append(t)
        t += rng.expovariate(1 / 0.05)
    ramp = t
    async with trio.open_nursery() as nursery:
        for d in delays:
            nursery.start_soon(call, d)
        await trio.sleep(ramp + 1.0)  # every call connected (hold_s is longer than this)
        run.per_worker_calls.append(await bridge.per_worker_calls())
        if measure > 0:
            workers = children(bridge.proc.pid)
            pids = bridge.pids()
            me = os.getpid()
            before = {p: cpu_seconds(p) for p in [*pids, me, sim_pid]}
            t0 = time.monotonic()
            await trio.sleep(measure)
            elapsed = time.monotonic() - t0
            after = {p: cpu_seconds(p) for p in before}
            run.cpu_cores = sum(after[p] - before[p] for p in pids) / elapsed
            run.per_worker_cpu = {w: (after[p] - before[p]) / elapsed for w, p in workers.items()}
            run.caller_cores = (after[me] - before[me]) / elapsed
            run.sim_cores = (after[sim_pid] - before[sim_pid]) / elapsed
    run.failed += sum(1 for r in results if not r.ok)
    run.replies += sum(r.responses for r in results)


async def restart_probe(bridge: Bridge, requests: int = 40) -> list[float]:
    """SIGKILL worker 1, then at once ``requests`` GET /healthz on the public port, 10 ms apart:
    how long each new connection waits while the dead worker is being replaced."""
    victim = children(bridge.proc.pid)[1]
    os.kill(victim, 9)
    latencies: list[float] = []

    async def one(delay: float) -> None:
        await trio.sleep(delay)
        t0 = time.monotonic()
        status, _ = await http_get(bridge.port, "/healthz")
        latencies.append(time.monotonic() - t0 if status == 200 else float("inf"))

    async with trio.open_nursery() as nursery:
        for i in range(requests):
            nursery.start_soon(one, i * 0.01)
    return sorted(latencies)


async def bench(args: argparse.Namespace) -> list[Run]:
    tmp = Path(tempfile.mkdtemp(prefix="workers-bench-"))
    sim_port = free_port()
    sim = subprocess.Popen([sys.executable, "-c", SIM_CODE, str(sim_port)], cwd=ROOT, stderr=subprocess.DEVNULL)
    runs: list[Run] = []
    rng = random.Random(args.seed)
    try:
        await trio.sleep(1.0)
        plan = [(1, "shared"), (2, "shared"), (2, "reuseport")]
        for workers, mode in plan:
            bridge = Bridge(workers, mode, sim_port, tmp)
            run = Run(workers, mode, args.calls)
            try:
                await bridge.wait_ready()
                await trio.sleep(0.5)
                await one_round(bridge, args.calls, args.window + 1, args.window, sim.pid, run, rng)
                # Further rounds only for the spread (no CPU window): short holds.
                for _ in range(args.rounds - 1 if workers > 1 else 0):
                    await trio.sleep(1.0)
                    await one_round(bridge, args.calls, 2.5, 0, sim.pid, run, rng)
                if workers > 1:
                    await trio.sleep(1.0)
                    run.restart_latencies = await restart_probe(bridge)
            finally:
                bridge.stop()
            runs.append(run)
            report_one(run)
    finally:
        sim.terminate()
        sim.wait(5)
    return runs


def report_one(run: Run) -> None:
    spread = "; ".join(
        "/".join(str(c.get(w, 0)) for w in range(run.workers)) for c in run.per_worker_calls
    )
    print(
        f"{run.workers} worker(s), {run.mode}: {run.calls} calls, bridge {run.cpu_cores:.3f} cores "
        f"= {run.per_call:.4f} core/call; per worker CPU "
        f"{', '.join(f'{w}: {c:.3f}' for w, c in sorted(run.per_worker_cpu.items()))}; "
        f"calls per worker by round {spread}; callers {run.caller_cores:.2f} cores, "
        f"simulator {run.sim_cores:.2f} cores; failed calls {run.failed}, replies heard {run.replies}",
        flush=True,
    )
    if run.restart_latencies:
        lat = run.restart_latencies
        print(f"   restart probe: {len(lat)} connections right after SIGKILL of worker 1: median "
              f"{1000 * statistics.median(lat):.1f} ms, max {1000 * max(lat):.0f} ms, "
              f"{sum(x > 0.1 for x in lat)} waited > 100 ms", flush=True)


def markdown(runs: list[Run], args: argparse.Namespace) -> str:
    lines = [
        f"{args.calls} concurrent real-time calls, CPU over a {args.window:.0f} s window; spread over "
        f"{args.rounds} rounds for 2 workers.",
        "",
        "| Workers | Socket | Bridge CPU (cores) | CPU per call (cores) | Calls per worker, by round | "
        "Worst round max/min | Failed calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rounds = ", ".join("/".join(str(c.get(w, 0)) for w in range(r.workers)) for c in r.per_worker_calls)
        ratios = [max(c.values()) / max(1, min(c.get(w, 0) for w in range(r.workers)))
                  for c in r.per_worker_calls if c]
        worst = f"{max(ratios):.2f}" if r.workers > 1 and ratios else "–"
        lines.append(f"| {r.workers} | {r.mode} | {r.cpu_cores:.3f} | {r.per_call:.4f} | {rounds} | {worst} | "
                     f"{r.failed} |")
    two = [r for r in runs if r.workers == 2]
    n = args.calls
    random_split = sum(math.comb(n, k) * abs(2 * k - n) for k in range(n + 1)) / 2**n / n
    lines.append("")
    lines.append(f"- reference: a fair coin per call (Binomial({n}, ½)) gives mean |w0 − w1| / N = {random_split:.3f}")
    for r in two:
        imbalance = [abs(c.get(0, 0) - c.get(1, 0)) / max(1, sum(c.values())) for c in r.per_worker_calls]
        lat = r.restart_latencies or [0.0]
        lines.append(
            f"- {r.mode}: mean |w0 − w1| / N = {statistics.fmean(imbalance):.3f}; right after SIGKILL of a "
            f"worker, {len(lat)} new connections: median {1000 * statistics.median(lat):.1f} ms, max "
            f"{1000 * max(lat):.0f} ms, {sum(x > 0.1 for x in lat)} waited > 100 ms"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--window", type=float, default=15.0, help="CPU measurement window, seconds")
    p.add_argument("--rounds", type=int, default=10, help="rounds per 2-worker mode for the spread")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    t0 = time.monotonic()
    runs = trio.run(bench, args)
    print()
    print(markdown(runs, args))
    print(f"\n(total {time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
