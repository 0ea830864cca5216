"""``bridge demo``: the whole path on one machine, no account, no key.

Starts the Realtime simulator, a bridge worker pointed at it, a small order-lookup tool endpoint
and a few simulated Twilio callers on loopback (:mod:`bridge.testing.stack`), then prints what
each call did and what it cost.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from bridge import log
from bridge.accounting.records import CallRecord
from bridge.testing.caller import ALAW, MULAW, CallerOptions, CallResult, run_call, summarise
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.simulator_tools import ToolCall, ToolTrigger
from bridge.testing.stack import open_stack
from bridge.testing.tool_server import ORDER_STATUS, ORDER_STATUS_TOOL, open_tool_server

# The demo's tool endpoint checks bridge's request signatures with this secret (loopback only).
DEMO_TOOLS_SECRET = "demo-tools-secret-not-for-production"
ORDERS = "orders"

# (title, caller encoding, stream parameters): the calls cycle through these.
KINDS: list[tuple[str, str, dict[str, str]]] = [
    ("μ-law caller, pcmu session (passthrough)", MULAW, {}),
    ("A-law caller, pcm16 session (24 kHz resampling)", ALAW, {"profile": "alaw-pcm16", "caller_name": "Ada"}),
    ("μ-law caller, pcma session, model greets first", MULAW, {"profile": "greeter"}),
    ("μ-law caller, the model looks an order up with a tool", MULAW, {"profile": ORDERS}),
]


def _fmt_cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def main(calls: int = len(KINDS), fast: bool = False) -> int:
    return trio.run(_demo, calls, fast)


def _profiles(tool_url: str) -> dict[str, Any]:
    return {
        "alaw-pcm16": {"audio_format": "pcm16", "instructions": "You help {caller_name}."},
        "greeter": {"greeting": "Greet the caller warmly.", "audio_format": "pcma"},
        # A business's order lookup, served by an endpoint this demo runs on loopback.
        ORDERS: {"tools": [{**ORDER_STATUS_TOOL, "url": tool_url}]},
    }


def _caller(url: str, encoding: str, params: dict[str, str], fast: bool) -> CallerOptions:
    profile = params.get("profile")
    return CallerOptions(
        url=url,
        encoding=encoding,
        params=dict(params),
        realtime=not fast,
        # The greeter's caller lets the model speak first; the others start talking.
        leading_silence_ms=5000 if profile == "greeter" else 500,
        wait_for_reply_ms=20_000,
        # The tool's answer follows the model's spoken preamble: wait for both.
        reply_settle_ms=2000 if profile == ORDERS else 600,
    )


async def _demo(calls: int, fast: bool) -> int:
    log.setup("warning", "console")
    # The simulator's tool trigger is meant for the orders call; it would say so for every other.
    logging.getLogger("bridge.testing.simulator_server").setLevel(logging.ERROR)
    print("bridge demo: Realtime simulator + bridge + simulated Twilio callers, all on loopback\n")
    tmp = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    # After the caller's first turn the simulated model says a line, looks the order up and answers
    # with what the tool said (the real model decides this itself, from the tool's description).
    lookup = ToolTrigger(1, (ToolCall("order_status", {"order_id": "A1234"}),), preamble="One moment, let me check.")
    async with open_tool_server({"/order-status": ORDER_STATUS}, secret=DEMO_TOOLS_SECRET) as tools, open_stack(
        records=tmp / "calls.sqlite",
        overrides={"profiles": _profiles(tools.url("/order-status"))},
        simulator=SimulatorOptions(tool_triggers=(lookup,)),
        env={"BRIDGE_TOOLS_SECRET": DEMO_TOOLS_SECRET},
    ) as stack:
        plan = [(title, _caller(stack.media_url, enc, params, fast)) for title, enc, params in _cycle(calls)]
        results: list[CallResult | None] = [None] * len(plan)

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
    failures = sum(_report(title, opts, result, records) for (title, opts), result in zip(plan, results, strict=True))
    print(f"call records: {tmp / 'calls.sqlite'}  (bridge cdr --db {tmp / 'calls.sqlite'})")
    if failures:
        print(f"demo: {failures} problem(s)", file=sys.stderr)
        return 1
    return 0


def _cycle(calls: int) -> list[tuple[str, str, dict[str, str]]]:
    return [KINDS[i % len(KINDS)] for i in range(calls)]


def _report(title: str, opts: CallerOptions, result: CallResult | None, records: list[CallRecord]) -> int:
    """Print one call; the number of problems it had."""
    problems = 0
    print(f"── {title}")
    if result is not None:
        print("   " + summarise(result).replace("\n", "\n   "))
    sid = result.call_sid if result is not None else opts.call_sid
    rec = next((r for r in records if r.call_sid == sid), None)
    if rec is None:
        problems += 1
        print("   record: missing!")
    else:
        print(
            f"   record: {rec.end_reason} after {rec.duration_s:.1f} s, turns {rec.turns}, "
            f"cost {_fmt_cost(rec.cost_total_usd)} (model {_fmt_cost(rec.cost_model_usd)}, "
            f"carrier {_fmt_cost(rec.cost_carrier_usd)}), per minute {_fmt_cost(rec.cost_per_minute_usd)}"
        )
        for tool in rec.tool_calls:
            print(f"   tool call: {tool['tool']} → {tool['outcome']} in {tool['duration_ms']:.0f} ms")
        if opts.params.get("profile") == ORDERS and not any(t["outcome"] == "ok" for t in rec.tool_calls):
            problems += 1
            print("   tool call missing!")
    if result is None or not result.connected:
        problems += 1
    print()
    return problems
