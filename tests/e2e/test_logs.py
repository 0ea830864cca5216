"""The log lines of whole calls: JSON, every line tagged with its call, and never the API key.

Logging is set up the way the service does it (``bridge.log.setup(level, "json")``) into a buffer,
then whole calls run through the simulator: a normal one with a model answer, and one whose
Realtime URL cannot be reached (an upstream error path) and that carries a key in its query.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import trio

from bridge import log
from bridge.log import REDACTOR
from bridge.testing.caller import CallerOptions, CallResult, run_call
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.stack import Stack, open_stack
from tests.e2e.conftest import free_port

API_KEY = "sk-test-SECRET-3b9f0c1d2e4a5b6c7d8e9f00"
# An Azure-style key in the Realtime URL's query: no pattern recognises it and nothing registers
# it, so only logging URLs without their query keeps it out.
QUERY_KEY = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
# Lines a worker logs for itself, not for a call.
WORKER_EVENTS = {"draining", "listening", "worker_started", "worker_stopped"}


@pytest.fixture
def logbuf() -> Iterator[io.StringIO]:
    """``log.setup("debug", "json")`` into a buffer; global logging state restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_secrets = list(REDACTOR.secrets)
    saved_config = structlog.get_config()
    buf = io.StringIO()
    log.setup("debug", "json", stream=buf)
    try:
        yield buf
    finally:
        REDACTOR.secrets[:] = saved_secrets
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_config)


async def _call(stack: Stack, **kw: Any) -> CallResult:
    with trio.fail_after(20):
        result = await run_call(CallerOptions(url=stack.media_url, **kw))
    await stack.wait_idle()
    return result


def test_call_logs_are_json_per_call_and_never_quote_the_key(logbuf: io.StringIO) -> None:
    calls: dict[str, tuple[str, str | None]] = {}  # call_id -> (end reason, stream sid)

    async def main() -> None:
        sim = SimulatorOptions(response_audio_ms=800, speed=8.0)
        async with open_stack(api_key=API_KEY, simulator=sim) as stack:
            assert API_KEY in REDACTOR.secrets  # registered like the service must do at start
            ok = await _call(stack, realtime=False, wait_for_reply_ms=10_000)
            assert ok.ok and ok.responses == 1
            # The simulator opens a session only for a request that carries a key: it was sent.
            (session,) = stack.simulator.sessions
            assert session.model == "gpt-realtime"
            for r in stack.hooks.finished:
                calls[r.call_id] = (str(r.core.end_reason), r.core.stream_sid)

        unreachable = f"ws://127.0.0.1:{free_port()}/v1/realtime?api-key={QUERY_KEY}"
        async with open_stack(api_key=API_KEY, overrides={"realtime": {"url": unreachable}}) as stack:
            failed = await _call(stack, realtime=False, wait_for_reply_ms=3_000)
            assert failed.connected and failed.close_code == 1011
            assert failed.close_reason is not None and failed.close_reason.startswith("model_error")
            for r in stack.hooks.finished:
                calls[r.call_id] = (str(r.core.end_reason), r.core.stream_sid)

    async def bounded() -> None:
        with trio.fail_after(40):
            await main()

    trio.run(bounded)

    text = logbuf.getvalue()
    assert API_KEY not in text
    assert QUERY_KEY not in text
    assert API_KEY[len("sk-test-") :] not in text  # not even the key without its prefix
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert all(isinstance(e, dict) and "event" in e and "level" in e and "timestamp" in e for e in lines)

    assert sorted(reason for reason, _ in calls.values()) == ["caller_hangup", "model_error"]
    for e in lines:
        if e["event"] not in WORKER_EVENTS:
            assert e.get("call_id") in calls, e
    for call_id, (reason, stream_sid) in calls.items():
        own = [e for e in lines if e.get("call_id") == call_id]
        events = [e["event"] for e in own]
        assert events[0] == "call_connected" and events[-1] == "call_summary", events
        assert {"call_state", "call_ending"} <= set(events)
        # From the carrier's start on, every line names the stream too.
        started = next(i for i, e in enumerate(own) if e.get("stream_sid"))
        assert started <= 1
        assert all(e.get("stream_sid") == stream_sid for e in own[started:]), own[started:]
        summary = own[-1]
        assert summary["reason"] == reason
        if reason == "model_error":
            # The error is there for the operator, with where it failed, but without the key.
            assert "connect to ws://127.0.0.1:" in summary["detail"] and "/v1/realtime" in summary["detail"]
            assert "api-key" not in summary["detail"]
        else:
            assert summary["turns"] == 1 and "response_done" in events
