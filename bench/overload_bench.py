"""Graceful overload: more calls offered than one worker admits; the admitted keep their latency.

Run from the repository root (method in bench/README.md, "Overload"; results in BENCHMARKS.md):

    python bench/overload_bench.py                           # offered 50..300 calls, the default limit
    python bench/overload_bench.py --offered 100,200,300 --limit 120 --window 10

One worker (``bridge serve``, ``server.workers = 1``) pinned to CPU 0, the fake carrier and fake
model of load_bench pinned to CPU 1, exactly as in bench/load_bench.py, with
``server.max_calls_per_worker`` = ``--limit`` (default: the configuration's default). The callers
offer N calls over the ramp; the worker admits up to the limit and refuses the rest at the upgrade
(HTTP 503: in production Twilio's voice webhook would already have been answered with the
overflow document, so these upgrades are the worst case, a carrier that connects anyway). Per N:
calls admitted (connected and streaming through the window), the refused, latency each way over
every frame and delta of the admitted calls sent in the window, and the worker's CPU.

The target (issue 16): the admitted calls keep their p99 when more are offered than admitted, so
the run checks that p99 at every N ≥ the limit stays within ``--p99-ms`` (10 ms, the capacity
limit of load_bench) both ways, and that exactly min(N, limit) calls were admitted. Exit status
1 when that fails, 2 when the measurement itself failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import Bench, Setup, Step, add_load_options, cpu_model, describe, fmt, versions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def default_limit() -> int:
    from bridge.config import DEFAULT_MAX_CALLS_PER_WORKER

    return DEFAULT_MAX_CALLS_PER_WORKER


def row(s: Step, limit: int) -> str:
    refused = s.calls - s.connected
    return (
        f"| {s.calls} | {s.connected} | {refused} | {s.active_end} | {s.worker_cores:.3f} "
        f"| {s.worker_cores / max(1, s.connected):.4f} "
        f"| {fmt(s.up, 'p50')} / {fmt(s.up, 'p99')} / {fmt(s.up, 'max')} "
        f"| {fmt(s.down, 'p50')} / {fmt(s.down, 'p99')} / {fmt(s.down, 'max')} "
        f"| {s.frames_lost + s.deltas_lost} | {s.load_cores:.2f} | {s.other_bridge_cpu:.2f} / {s.other_load_cpu:.2f} |"
    )


def kept(s: Step, limit: int, p99_ms: float) -> bool:
    """Admitted exactly min(N, limit), none dropped, nothing lost, p99 within the limit both ways."""
    want = min(s.calls, limit)
    return (
        s.connected == want and s.active_end == want and not (s.frames_lost or s.deltas_lost) and s.p99 <= p99_ms
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--offered", default="50,100,150,200,250,300", help="calls offered, one step each")
    p.add_argument("--limit", type=int, default=0, help="server.max_calls_per_worker (0: the default)")
    p.add_argument("--p99-ms", type=float, default=10.0, help="the p99 the admitted calls must keep")
    p.add_argument("--bridge-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="section.key=value",
                   help="another setting for bridge (environment override)")  # fmt: skip
    add_load_options(p)
    p.set_defaults(window=10.0)
    args = p.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        print("overload_bench: needs two CPUs", file=sys.stderr)
        return 2
    limit = args.limit or default_limit()
    env = [("BRIDGE_SERVER__MAX_CALLS_PER_WORKER", str(limit))]
    for item in args.set:
        key, _, value = item.partition("=")
        env.append(("BRIDGE_" + key.strip().upper().replace(".", "__"), value.strip()))
    setup = Setup("bridge", 1, (args.bridge_cpu,), (args.load_cpu,), variant="", env=tuple(env))
    bench = Bench(args, prefix="overload-bench-")
    print(f"overload_bench: one worker, server.max_calls_per_worker = {limit}; files in {bench.tmp}\n"
          f"  {cpu_model()}; {versions()}", flush=True)  # fmt: skip
    os.sched_setaffinity(0, {args.load_cpu})
    t0 = time.monotonic()
    steps: list[Step] = []
    try:
        for n in sorted({int(x) for x in args.offered.split(",") if x.strip()}):
            step = bench.measure(setup, n, args.window)
            steps.append(step)
            print(describe(step), flush=True)
    except RuntimeError as exc:
        print(f"overload_bench: the measurement failed: {exc}", file=sys.stderr)
        return 2
    print(f"\noverload_bench took {time.monotonic() - t0:.0f} s; {cpu_model()}; {versions()}\n")
    print(f"One worker, server.max_calls_per_worker = {limit}; latency over the admitted calls' frames:\n")
    print(
        "| offered | admitted | refused (503) | live at the end | worker cores | core per admitted call "
        "| caller→model p50 / p99 / max (ms) | model→caller p50 / p99 / max (ms) | lost | load gens (cores) "
        "| other load (cores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in steps:
        print(row(s, limit))
    over = [s for s in steps if s.calls >= limit]
    ok = all(kept(s, limit, args.p99_ms) for s in over)
    below = [s for s in steps if s.calls < limit]
    worst = max((s.p99 for s in over), default=float("nan"))
    print(f"\ntarget (issue 16): offered ≥ the limit ({', '.join(str(s.calls) for s in over) or 'none measured'}), "
          f"exactly the limit admitted and their p99 ≤ {args.p99_ms:g} ms both ways (worst {worst:.2f} ms): "
          f"{'met' if ok and over else 'MISSED'}")  # fmt: skip
    if below:
        print(f"(below the limit: {', '.join(f'{s.calls} offered, p99 {s.p99:.2f} ms' for s in below)})")
    return 0 if ok and over else 1


if __name__ == "__main__":
    sys.exit(main())
