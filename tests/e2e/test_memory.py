"""An ended call is freed at once, by reference counting, not by a later garbage collection.

A worker runs the cyclic garbage collector rarely (``gc.set_threshold`` in the worker process, for
latency), so anything of a call caught in a reference cycle stays in memory for minutes: in the
soak benchmark that was every ended call's whole object graph (runner, core, both sockets), seen
as RSS growing by ≈ 14 KiB per call. Here the collector is off while calls of several kinds run,
then everything it would have had to free is inspected: nothing of bridge's may be among it.
"""

from __future__ import annotations

import gc
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from bridge.testing.caller import Pause, Say
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.stack import Stack, open_stack
from tests.e2e.conftest import SHORT_SPEECH, call, run

BRIDGE = str(Path(__file__).resolve().parents[2] / "bridge")
TESTING = str(Path(BRIDGE) / "testing")


def _is_bridges(obj: Any) -> bool:
    """An object of bridge's own code (the test tools in bridge/testing excluded)."""
    if isinstance(obj, types.FrameType):
        name = obj.f_code.co_filename
        return name.startswith(BRIDGE) and not name.startswith(TESTING)
    module = type(obj).__module__ or ""
    return module.startswith("bridge.") and not module.startswith("bridge.testing")


def _describe(obj: Any) -> str:
    if isinstance(obj, types.FrameType):
        return f"frame of {obj.f_code.co_name} ({Path(obj.f_code.co_filename).name})"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _cyclic_garbage_of_bridge() -> Counter[str]:
    """What of bridge's a full collection would free now (the collector must be off until then)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = Counter(_describe(o) for o in gc.garbage if _is_bridges(o))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


async def _calls(stack: Stack) -> None:
    # A call with an answer cut short by the caller (barge-in: clear, truncate, marks) ...
    barged = await call(
        stack,
        interrupt_after_assistant_ms=300,
        audio=SHORT_SPEECH,
        interrupt_audio=SHORT_SPEECH,
        script=[Say(), Pause(2500)],
    )
    assert barged.ok, barged
    # ... and one whose model socket is dropped and replaced mid-call (reconnect, replay); the
    # simulator numbers sessions from its start, so this call's first session is its second.
    stack.simulator.options = SimulatorOptions(speed=8.0, drop_after_s=0.3, drop_mode="close", fault_sessions=2)
    dropped = await call(stack, audio=SHORT_SPEECH, script=[Say(), Pause(500)])
    assert dropped.ok, dropped
    await stack.wait_idle()


@pytest.mark.parametrize("websocket", ["direct", "trio-websocket"])
def test_ended_calls_leave_no_cyclic_garbage(tmp_path: Path, websocket: str) -> None:
    async def main() -> None:
        sim = SimulatorOptions(speed=8.0)
        overrides = {"server": {"websocket": websocket}}
        async with open_stack(simulator=sim, overrides=overrides, records=tmp_path / "calls.sqlite") as stack:
            gc.collect()
            gc.disable()
            try:
                await _calls(stack)
                # The calls did what they were meant to exercise ...
                stats = sorted((r.core.stats.barge_ins, r.core.stats.reconnects) for r in stack.hooks.finished)
                assert stats == [(0, 1), (1, 0)]
                # ... and the test stack's own references to them go.
                stack.hooks.finished.clear()
                await trio.sleep(0.2)  # the record writes of the last call
                leftover = _cyclic_garbage_of_bridge()
            finally:
                gc.enable()
            assert not leftover, f"ended calls left reference cycles: {leftover.most_common(12)}"

    run(main)
