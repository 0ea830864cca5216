"""``bridge demo``: the whole path on one machine, no account, no key.

Starts the Realtime simulator, a bridge worker pointed at it and a few simulated Twilio callers
on loopback (:mod:`bridge.testing.stack`), then prints what each call did and what it cost.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from bridge.testing.stack import open_stack


def _fmt_cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def main(calls: int = 3, fast: bool = False) -> int:
    return trio.run(_demo, calls, fast)


async def _demo(calls: int, fast: bool) -> int:
    from bridge import log
    from bridge.testing.caller import ALAW, MULAW, CallerOptions, run_call, summarise

    log.setup("warning", "console")
    print("bridge demo: Realtime simulator + bridge + simulated Twilio callers, all on loopback\n")
    tmp = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    profiles = {
        "alaw-pcm16": {"audio_format": "pcm16", "instructions": "You help {caller_name}."},
        "greeter": {"greeting": "Greet the caller warmly.", "audio_format": "pcma"},
    }
    plan: list[tuple[str, CallerOptions]] = []
    # Everything is on loopback and the simulated callers do not sign: no signature checking.
    overrides = {"profiles": profiles, "twilio": {"validate_signature": False}}
    async with open_stack(records=tmp / "calls.sqlite", overrides=overrides) as stack:
        kinds = [
            ("μ-law caller, pcmu session (passthrough)", MULAW, {}),
            ("A-law caller, pcm16 session (24 kHz resampling)", ALAW, {"profile": "alaw-pcm16", "caller_name": "Ada"}),
            ("μ-law caller, pcma session, model greets first", MULAW, {"profile": "greeter"}),
        ]
        for i in range(calls):
            title, encoding, params = kinds[i % len(kinds)]
            opts = CallerOptions(
                url=stack.media_url,
                encoding=encoding,
                params=dict(params),
                realtime=not fast,
                # The greeter's caller lets the model speak first; the others start talking.
                leading_silence_ms=5000 if params.get("profile") == "greeter" else 500,
                wait_for_reply_ms=20_000,
            )
            plan.append((title, opts))
        results: list[Any] = [None] * len(plan)

        async def one(i: int, opts: CallerOptions) -> None:
            results[i] = await run_call(opts)

        async with trio.open_nursery() as nursery:
            for i, (_, opts) in enumerate(plan):
                nursery.start_soon(one, i, opts)
        # Let the bridge finalise the records of the calls that just ended.
        with trio.move_on_after(5):
            while stack.ctx.calls:
                await trio.sleep(0.05)
        records = stack.store.query() if stack.store else []
    failures = 0
    by_sid = {r.call_sid: r for r in records}
    for (title, opts), result in zip(plan, results, strict=True):
        print(f"── {title}")
        print("   " + summarise(result).replace("\n", "\n   "))
        rec = by_sid.get(opts.call_sid) if opts.call_sid else None
        if rec is None and result is not None:
            rec = by_sid.get(getattr(result, "call_sid", None))
        if rec is not None:
            print(
                f"   record: {rec.end_reason} after {rec.duration_s:.1f} s, turns {rec.turns}, "
                f"cost {_fmt_cost(rec.cost_total_usd)} (model {_fmt_cost(rec.cost_model_usd)}, "
                f"carrier {_fmt_cost(rec.cost_carrier_usd)}), per minute {_fmt_cost(rec.cost_per_minute_usd)}"
            )
        else:
            failures += 1
            print("   record: missing!")
        if result is None or not getattr(result, "connected", False):
            failures += 1
        print()
    print(f"call records: {tmp / 'calls.sqlite'}  (bridge cdr --db {tmp / 'calls.sqlite'})")
    if failures:
        print(f"demo: {failures} problem(s)", file=sys.stderr)
        return 1
    return 0
