"""Tools end to end: simulated caller → bridge → Realtime simulator, with a real tool endpoint.

The simulator calls tools on deterministic triggers (after caller turn N) with the GA event
sequence; the tool server is a real HTTP server on loopback that checks bridge's signature.
"""

from __future__ import annotations

import json
import time
from typing import Any

import trio

from bridge import signing
from bridge.testing.caller import CallResult, Pause, Say, WaitForReply
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.simulator_tools import ToolCall, ToolTrigger
from bridge.testing.stack import Stack, open_stack
from bridge.testing.tool_server import ORDER_STATUS, ORDER_STATUS_TOOL, ORDERS, Route, open_tool_server
from tests.e2e.conftest import SHORT_SPEECH, call, free_port, run
from tests.openai_types import validate_client

SECRET = "tools-secret-for-the-e2e-tests-0123"


async def call_and_listen(stack: Stack, *, script: list[Any] | None = None, **kw: Any) -> CallResult:
    """A simulated call, as fast as the socket takes it, that speaks and waits for the reply
    (unless given its own script)."""
    script = script or [Pause(200), Say(), WaitForReply(timeout_ms=20_000, settle_ms=1500)]
    return await call(stack, script=script, realtime=False, **kw)


def trigger(*calls: ToolCall, turn: int = 1, preamble: str | None = "One moment, let me check.") -> SimulatorOptions:
    return SimulatorOptions(tool_triggers=(ToolTrigger(after_turn=turn, calls=calls, preamble=preamble),))


def tool_config(url: str, **extra: Any) -> dict[str, Any]:
    return {**ORDER_STATUS_TOOL, "url": url, **extra}


def test_the_model_calls_a_webhook_tool_and_the_caller_hears_the_answer() -> None:
    async def main() -> None:
        async with open_tool_server({"/order-status": ORDER_STATUS}, secret=SECRET) as tools:
            overrides = {"realtime": {"tools": [tool_config(tools.url("/order-status"))]}}
            sim = trigger(ToolCall("order_status", {"order_id": "A1234"}))
            async with open_stack(overrides=overrides, simulator=sim, env={"BRIDGE_TOOLS_SECRET": SECRET}) as stack:
                result = await call_and_listen(stack, params={"from": "+442071234567", "to": "+15550001111"})
                assert result.ok, result
                (request,) = tools.requests
                # The documented request, signed, and the signature verifies.
                assert request.notes["signature"] == "ok"
                assert signing.verify(
                    SECRET,
                    request.header("X-Bridge-Timestamp"),
                    request.header("X-Bridge-Signature"),
                    request.body,
                    now=time.time(),
                )
                body = request.json()
                assert body["tool"] == "order_status" and body["arguments"] == {"order_id": "A1234"}
                assert body["tool_call_id"].startswith("call_")
                assert body["call"]["call_sid"] == result.call_sid
                assert body["call"]["from"] == "+442071234567" and body["call"]["to"] == "+15550001111"
                # The model received the endpoint's answer and spoke about it.
                (sim,) = stack.simulator.sessions
                (output,) = sim.tool_outputs
                assert output.call_id == body["tool_call_id"] and output.output == ORDERS["A1234"]
                assert ORDERS["A1234"] in sim.responses[-1].transcript
                # ... and that reply reached the caller: preamble and reply were both played in full.
                assert result.played_bytes == sum(r.audio_bytes for r in sim.responses)
                assert sim.responses[-1].audio_bytes > 0
                await stack.wait_idle()
                (runner,) = stack.hooks.finished
                (entry,) = runner.core.tool_log
                assert entry["tool"] == "order_status" and entry["outcome"] == "ok"
                for event in sim.received_events:
                    validate_client(event)

    run(main)


def test_failing_tools_tell_the_model_within_the_timeout_and_the_call_goes_on() -> None:
    async def main() -> None:
        routes = {"/hang": Route(hang=True), "/boom": Route(status=500, body="internal error")}
        async with open_tool_server(routes) as tools:
            unreachable = f"http://127.0.0.1:{free_port()}/nothing"
            tool_list = [
                tool_config(tools.url("/hang"), name="slow", timeout_s=1.0),
                tool_config(tools.url("/boom"), name="broken"),
                tool_config(unreachable, name="gone"),
                tool_config(tools.url("/boom"), name="strict"),
            ]
            calls = (
                ToolCall("slow", {"order_id": "1"}),
                ToolCall("broken", {"order_id": "2"}),
                ToolCall("gone", {"order_id": "3"}),
                ToolCall("strict", {"order_number": 4}),  # breaks the schema: never sent
            )
            async with open_stack(overrides={"realtime": {"tools": tool_list}}, simulator=trigger(*calls)) as stack:
                result = await call_and_listen(stack)
                assert result.ok, result
                (sim,) = stack.simulator.sessions
                outputs = {o.name: o.output for o in sim.tool_outputs}
                assert "did not answer in time" in outputs["slow"]
                assert "HTTP status 500" in outputs["broken"]
                assert "could not be reached" in outputs["gone"]
                assert "invalid" in outputs["strict"] and "order_id" in outputs["strict"]
                assert {r.path for r in tools.requests} == {"/hang", "/boom"}  # strict was never sent
                await stack.wait_idle()
                (runner,) = stack.hooks.finished
                log = {e["tool"]: e for e in runner.core.tool_log}
                assert log["slow"]["outcome"] == "timeout" and log["slow"]["duration_ms"] < 2000  # timeout + 1 s
                assert log["broken"]["outcome"] == "http_error"
                assert log["gone"]["outcome"] == "unreachable"
                assert log["strict"]["outcome"] == "invalid_arguments"
                # One response.create once every call of that response had its output, and the
                # model's reply (mentioning the failures) reached the caller.
                creates = [e for e in sim.received_events if e["type"] == "response.create"]
                assert len(creates) == 1
                assert result.played_bytes == sum(r.audio_bytes for r in sim.responses)

    run(main)


def test_two_calls_in_one_response_run_concurrently() -> None:
    async def main() -> None:
        routes = {"/order-status": Route(handler=ORDER_STATUS.handler, delay_s=0.6)}
        async with open_tool_server(routes) as tools:
            overrides = {"realtime": {"tools": [tool_config(tools.url("/order-status"))]}}
            calls = (ToolCall("order_status", {"order_id": "A1234"}), ToolCall("order_status", {"order_id": "B5678"}))
            async with open_stack(overrides=overrides, simulator=trigger(*calls)) as stack:
                result = await call_and_listen(stack)
                assert result.ok, result
                first, second = sorted(tools.requests, key=lambda r: r.received_at)
                assert second.received_at - first.received_at < 0.3  # not one after the other
                (sim,) = stack.simulator.sessions
                assert {o.output for o in sim.tool_outputs} == {ORDERS["A1234"], ORDERS["B5678"]}
                reply = sim.responses[-1].transcript
                assert ORDERS["A1234"] in reply and ORDERS["B5678"] in reply

    run(main)


def test_a_caller_hanging_up_during_a_tool_call_cancels_the_request() -> None:
    async def main() -> None:
        async with open_tool_server({"/slow": Route(hang=True)}) as tools:
            overrides = {"realtime": {"tools": [tool_config(tools.url("/slow"), timeout_s=30)]}}
            sim = trigger(ToolCall("order_status", {"order_id": "A1234"}), preamble=None)
            async with open_stack(overrides=overrides, simulator=sim) as stack:
                script = [Pause(200), Say(), Pause(1500)]  # hangs up while the tool still runs
                result = await call_and_listen(stack, script=script)
                hung_up = trio.current_time()
                assert result.connected
                await stack.wait_idle()
                (request,) = tools.requests
                with trio.fail_after(2):
                    while request.disconnected_at is None:
                        await trio.sleep(0.02)
                (runner,) = stack.hooks.finished
                assert runner.core.end_reason == "caller_hangup"
                assert runner.core.tools_pending == ["order_status"]  # it never answered
                assert trio.current_time() - hung_up < 2

    run(main)


def test_barge_in_during_a_tool_call_still_clears_playback() -> None:
    async def main() -> None:
        routes = {"/order-status": Route(handler=ORDER_STATUS.handler, delay_s=1.5)}
        async with open_tool_server(routes) as tools:
            overrides = {"realtime": {"tools": [tool_config(tools.url("/order-status"))]}}
            sim = trigger(ToolCall("order_status", {"order_id": "C9012"}), preamble="Let me look that up for you.")
            async with open_stack(overrides=overrides, simulator=sim) as stack:
                result = await call(
                    stack,
                    interrupt_after_assistant_ms=400,  # talks over the preamble while the tool runs
                    audio=SHORT_SPEECH,
                    interrupt_audio=SHORT_SPEECH,
                    script=[Pause(200), Say(), WaitForReply(timeout_ms=20_000, settle_ms=2500)],
                )
                assert result.ok, result
                assert result.clears, "the barge-in during the tool call cleared playback"
                (sim_session,) = stack.simulator.sessions
                assert ORDERS["C9012"] in [o.output for o in sim_session.tool_outputs]

    run(main)


def test_tool_definitions_in_session_update_match_the_configuration() -> None:
    async def main() -> None:
        async with open_tool_server({"/order-status": ORDER_STATUS}) as tools:
            overrides = {
                "realtime": {"tools": [tool_config(tools.url("/order-status"))], "tool_choice": "auto"},
            }
            async with open_stack(overrides=overrides) as stack:
                await call_and_listen(stack, script=[Pause(300)])
                (sim,) = stack.simulator.sessions
                update = next(e for e in sim.received_events if e["type"] == "session.update")
                validate_client(update)
                (tool,) = update["session"]["tools"]
                assert tool == {
                    "type": "function",
                    "name": "order_status",
                    "description": ORDER_STATUS_TOOL["description"],
                    "parameters": ORDER_STATUS_TOOL["parameters"],
                }
                assert json.dumps(update).count(tools.url("/order-status")) == 0  # the URL stays private

    run(main)
