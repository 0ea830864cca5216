"""What holding caller audio for larger appends (``realtime.append_interval_ms``) costs in reaction time.

Run from the repository root (method in bench/README.md, "Append interval: the latency cost";
results in BENCHMARKS.md):

    python bench/append_bench.py                          # intervals 0, 40, 60, 100; 12 calls each
    python bench/append_bench.py --intervals 0,40 --calls 20

A model's server VAD can only hear what has been appended: audio held back by the bridge reaches
it later, so everything the VAD decides (the caller started talking over the answer; the caller
stopped, so answer) comes later too. This measures that end to end on loopback, per interval:
the bridge (``bridge.testing.stack``: one worker in this process, ``server.websocket = direct``)
with the Realtime simulator (``bridge.testing.simulator``: an energy VAD deciding on 20 ms
windows, speech after 60 ms above the threshold, the turn's end after the session's
``silence_duration_ms``), and simulated Twilio callers (``bridge.testing.caller``, real-time
20 ms frames) who say the bundled sentence, wait for the answer, and talk over it 1.5 s in.

Per call, as the caller sees them (its own clock):

* **barge-in**: from the first frame of the caller's speech over the answer to the ``clear`` that
  silences the answer (the simulator's VAD reaction, the bridge both ways, and the interval);
* **answer**: from the last voiced frame of the caller's sentence to the first audio of the answer
  (the VAD's end-of-turn silence, the simulator's reply, and the interval).

The simulator's own reaction is constant across intervals, so the differences between rows are
what the interval costs. The real API's VAD reacts on its own clock (hundreds of ms with the
default ``prefix_padding_ms`` and ``silence_duration_ms``); the interval adds to it the same way.
Calls run a few at a time, in one process: absolute figures include trio's scheduling of the
callers and the simulator on this machine, the same for every interval.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge import log as bridge_log  # noqa: E402
from bridge.testing.caller import CallerOptions, CallResult, Say, WaitForReply, run_call  # noqa: E402
from bridge.testing.simulator import SimulatorOptions  # noqa: E402
from bridge.testing.stack import open_stack  # noqa: E402


async def calls_at(interval: int, calls: int, concurrent: int) -> list[CallResult]:
    overrides = {
        "realtime": {"append_interval_ms": interval},
        "server": {"websocket": "direct"},
    }
    sim = SimulatorOptions(speed=4.0, response_audio_ms=4000, record_events=False, record_audio=False)
    results: list[CallResult] = []
    async with open_stack(overrides=overrides, simulator=sim, admin=False) as stack:
        limit = trio.Semaphore(concurrent)

        async def one() -> None:
            async with limit:
                opts = CallerOptions(
                    url=stack.media_url,
                    realtime=True,
                    interrupt_after_assistant_ms=1500,
                    script=[Say(), WaitForReply(timeout_ms=20_000, settle_ms=600)],
                    record_audio=False,
                )
                with trio.fail_after(90):
                    results.append(await run_call(opts))

        async with trio.open_nursery() as nursery:
            for _ in range(calls):
                nursery.start_soon(one)
    return results


def stats(values: list[float]) -> str:
    if not values:
        return "–"
    values = sorted(values)
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    return f"{statistics.median(values):.0f} / {p90:.0f} / {values[-1]:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--intervals", default="0,40,60,100", help="realtime.append_interval_ms values (ms)")
    p.add_argument("--calls", type=int, default=12, help="calls per interval")
    p.add_argument("--concurrent", type=int, default=4, help="calls at once")
    args = p.parse_args(argv)
    bridge_log.setup("warning")
    rows = []
    for interval in [int(x) for x in args.intervals.split(",") if x.strip()]:
        results = trio.run(calls_at, interval, args.calls, args.concurrent)
        barge = [i.clear_latency_ms for r in results for i in r.interrupts if i.clear_latency_ms is not None]
        answer = [
            u.reply_latency_ms
            for r in results
            for u in r.utterances
            if not u.interrupt and u.reply_latency_ms is not None
        ]
        ok = sum(1 for r in results if r.ok)
        print(f"  append_interval_ms={interval}: {ok}/{len(results)} calls ok, barge-in {stats(barge)} ms, "
              f"answer {stats(answer)} ms", flush=True)  # fmt: skip
        rows.append((interval, ok, len(results), barge, answer))
    print("\n| append_interval_ms | calls ok | barge-in: speech → clear, median / p90 / max (ms) "
          "| end of speech → answer audio, median / p90 / max (ms) | barge-in median − interval 0's |")  # fmt: skip
    print("|---|---|---|---|---|")
    base = statistics.median(rows[0][3]) if rows and rows[0][3] else None
    for interval, ok, n, barge, answer in rows:
        delta = f"{statistics.median(barge) - base:+.0f}" if base is not None and barge else "–"
        print(f"| {interval} | {ok}/{n} | {stats(barge)} | {stats(answer)} | {delta} |")
    return 0 if all(ok == n for _, ok, n, _, _ in rows) else 2


if __name__ == "__main__":
    sys.exit(main())
