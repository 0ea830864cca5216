"""The simulator served over a real loopback WebSocket (trio + trio-websocket)."""

from __future__ import annotations

import base64
import json
import math
from functools import partial
from typing import Any

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from bridge.testing.simulator import SimulatorOptions, ToolCall, ToolTrigger, assistant_audio
from bridge.testing.simulator_server import open_simulator, serve_simulator

AUTH = [(b"Authorization", b"Bearer sk-test")]


async def next_event(ws: WebSocketConnection, kind: str | None = None) -> dict[str, Any]:
    with trio.fail_after(5):
        while True:
            event: dict[str, Any] = json.loads(await ws.get_message())
            if kind is None or event["type"] == kind:
                return event


async def expect_close(ws: WebSocketConnection) -> tuple[list[dict[str, Any]], int]:
    """Read until the server closes; returns the events seen and the close code."""
    events: list[dict[str, Any]] = []
    with trio.fail_after(5):
        try:
            while True:
                events.append(json.loads(await ws.get_message()))
        except ConnectionClosed as closed:
            return events, closed.reason.code


def test_session_update_round_trip_and_inspection() -> None:
    async def main() -> None:
        async with open_simulator(options=SimulatorOptions(seed=3)) as sim:
            assert sim.port > 0
            url = f"ws://127.0.0.1:{sim.port}/v1/realtime?model=gpt-realtime-mini"
            async with open_websocket_url(url, extra_headers=AUTH) as ws:
                created = await next_event(ws)
                assert created["type"] == "session.created"
                assert created["session"]["model"] == "gpt-realtime-mini"
                update = {
                    "type": "session.update",
                    "session": {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}},
                }
                await ws.send_message(json.dumps(update))
                updated = await next_event(ws)
                assert updated["type"] == "session.updated"
                assert updated["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
            [session] = sim.sessions
            assert session.received_events == [update]
            with trio.fail_after(5):
                while session.closed_at is None:
                    await trio.sleep(0.01)
            assert session.close_code == 1000

    trio.run(main)


def test_full_response_over_the_socket() -> None:
    async def main() -> None:
        options = SimulatorOptions(speed=math.inf, response_audio_ms=1000, seed=1)
        async with open_simulator(options=options) as sim:
            url = f"ws://127.0.0.1:{sim.port}/v1/realtime?model=gpt-realtime"
            async with open_websocket_url(url, extra_headers=[(b"api-key", b"azure-key")]) as ws:
                await next_event(ws, "session.created")
                fmt = {"type": "audio/pcmu"}
                session = {
                    "type": "realtime",
                    "audio": {"input": {"format": fmt, "turn_detection": None}, "output": {"format": fmt}},
                }
                await ws.send_message(json.dumps({"type": "session.update", "session": session}))
                await next_event(ws, "session.updated")
                frame = base64.b64encode(b"\xff" * 1600).decode()
                await ws.send_message(json.dumps({"type": "input_audio_buffer.append", "audio": frame}))
                await ws.send_message(json.dumps({"type": "input_audio_buffer.commit"}))
                await ws.send_message(json.dumps({"type": "response.create"}))
                audio = b""
                seen: list[str] = []
                while True:
                    event = await next_event(ws)
                    seen.append(event["type"])
                    if event["type"] == "response.output_audio.delta":
                        audio += base64.b64decode(event["delta"])
                    if event["type"] == "response.done":
                        assert event["response"]["status"] == "completed"
                        break
                assert audio == assistant_audio("audio/pcmu")[:8000]
                assert seen.index("input_audio_buffer.committed") < seen.index("response.created")
                # A delta never follows its response's end, even with two tasks writing.
                assert seen[-1] == "response.done"
            assert bytes(sim.sessions[0].appended_audio) == b"\xff" * 1600

    trio.run(main)


def test_beta_header_is_refused_with_4000() -> None:
    async def main() -> None:
        async with open_simulator() as sim:
            url = f"ws://127.0.0.1:{sim.port}/v1/realtime?model=gpt-realtime"
            headers = [*AUTH, (b"OpenAI-Beta", b"realtime=v1")]
            async with open_websocket_url(url, extra_headers=headers) as ws:
                events, code = await expect_close(ws)
            assert code == 4000
            [error] = events
            assert error["type"] == "error"
            assert error["error"]["code"] == "beta_api_shape_disabled"
            assert sim.sessions == []

    trio.run(main)


def test_missing_credentials_are_refused_with_3000() -> None:
    async def main() -> None:
        async with open_simulator() as sim:
            url = f"ws://127.0.0.1:{sim.port}/v1/realtime?model=gpt-realtime"
            async with open_websocket_url(url) as ws:
                events, code = await expect_close(ws)
            assert code == 3000
            assert events[0]["error"]["message"] == "Missing bearer or basic authentication in header"

    trio.run(main)


def test_missing_model_is_refused_with_4000() -> None:
    async def main() -> None:
        async with (
            open_simulator() as sim,
            open_websocket_url(f"ws://127.0.0.1:{sim.port}/v1/realtime", extra_headers=AUTH) as ws,
        ):
            events, code = await expect_close(ws)
            assert code == 4000
            assert events[0]["error"]["code"] == "missing_model"

    trio.run(main)


def test_other_paths_get_404_and_the_server_keeps_serving() -> None:
    async def main() -> None:
        async with open_simulator() as sim:
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(f"ws://127.0.0.1:{sim.port}/v1/other", extra_headers=AUTH):
                    pass
            assert rejected.value.status_code == 404
            url = f"ws://127.0.0.1:{sim.port}/v1/realtime?model=gpt-realtime"
            # A client that misbehaves (binary frame, abrupt exit) must not affect the next one.
            async with open_websocket_url(url, extra_headers=AUTH) as ws:
                await next_event(ws, "session.created")
                await ws.send_message(b"\x00\x01")
                error = await next_event(ws, "error")
                assert error["error"]["code"] == "invalid_event"
            async with open_websocket_url(url, extra_headers=AUTH) as ws:
                assert (await next_event(ws))["type"] == "session.created"
            assert len(sim.sessions) == 2

    trio.run(main)


def test_session_expiry_closes_the_socket() -> None:
    async def main() -> None:
        async with open_simulator(options=SimulatorOptions(max_session_s=0.2)) as sim:
            url = f"ws://127.0.0.1:{sim.port}/v1/realtime?model=gpt-realtime"
            async with open_websocket_url(url, extra_headers=AUTH) as ws:
                events, code = await expect_close(ws)
            assert [e["type"] for e in events] == ["session.created", "error"]
            assert events[1]["error"]["code"] == "session_expired"
            assert code == 1000
            assert sim.sessions[0].expired

    trio.run(main)


def test_serve_simulator_reports_the_bound_port() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_simulator, "127.0.0.1", 0))
            assert isinstance(port, int) and port > 0
            url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
            async with open_websocket_url(url, extra_headers=AUTH) as ws:
                assert (await next_event(ws))["type"] == "session.created"
            nursery.cancel_scope.cancel()

    trio.run(main)


# ------------------------------------------------------------------------------- tools and faults

ORDER_TOOL = {
    "type": "function",
    "name": "order_status",
    "description": "Look up an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
}
MANUAL_ULAW = {
    "type": "realtime",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcmu"}},
    },
}


def realtime_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"


async def until_done(ws: WebSocketConnection, seen: list[dict[str, Any]]) -> dict[str, Any]:
    """Read (keeping every event) until response.done; returns it."""
    while True:
        event = await next_event(ws)
        seen.append(event)
        if event["type"] == "response.done":
            return event


def test_tool_call_round_trip_over_the_socket() -> None:
    from tests.openai_types import validate_server

    async def main() -> None:
        trigger = ToolTrigger(1, (ToolCall("order_status", {"order_id": "A1234"}),), preamble="Let me check.")
        options = SimulatorOptions(speed=math.inf, response_audio_ms=500, tool_triggers=(trigger,))
        async with open_simulator(options=options) as sim:
            async with open_websocket_url(realtime_url(sim.port), extra_headers=AUTH) as ws:
                seen: list[dict[str, Any]] = [await next_event(ws, "session.created")]
                session = {**MANUAL_ULAW, "tools": [ORDER_TOOL]}
                await ws.send_message(json.dumps({"type": "session.update", "session": session}))
                seen.append(await next_event(ws, "session.updated"))
                frame = base64.b64encode(b"\x10" * 1600).decode()
                await ws.send_message(json.dumps({"type": "input_audio_buffer.append", "audio": frame}))
                await ws.send_message(json.dumps({"type": "input_audio_buffer.commit"}))
                await ws.send_message(json.dumps({"type": "response.create"}))
                done = await until_done(ws, seen)
                call = done["response"]["output"][-1]
                assert call["type"] == "function_call" and call["name"] == "order_status"
                output = {"type": "function_call_output", "call_id": call["call_id"], "output": "Order A1234 shipped."}
                await ws.send_message(json.dumps({"type": "conversation.item.create", "item": output}))
                await ws.send_message(json.dumps({"type": "response.create"}))
                await until_done(ws, seen)
                transcripts = [e["transcript"] for e in seen if e["type"] == "response.output_audio_transcript.done"]
                assert transcripts[0] == "Let me check."
                assert "Order A1234 shipped." in transcripts[1]
            for event in seen:
                validate_server(event)
            [session_sim] = sim.sessions
            assert [o.output for o in session_sim.tool_outputs] == ["Order A1234 shipped."]

    trio.run(main)


def test_drop_with_close_1011() -> None:
    async def main() -> None:
        async with open_simulator(options=SimulatorOptions(drop_after_s=0.2, drop_mode="close")) as sim:
            start = trio.current_time()
            async with open_websocket_url(realtime_url(sim.port), extra_headers=AUTH) as ws:
                events, code = await expect_close(ws)
                assert ws.closed is not None and ws.closed.reason == "server_error"
            assert code == 1011
            assert [e["type"] for e in events] == ["session.created"]
            assert 0.2 <= trio.current_time() - start < 2.0
            assert sim.sessions[0].fault == "close"

    trio.run(main)


def test_drop_with_a_tcp_reset_sends_no_close_frame() -> None:
    async def main() -> None:
        async with open_simulator(options=SimulatorOptions(drop_after_s=0.2, drop_mode="reset")) as sim:
            async with open_websocket_url(realtime_url(sim.port), extra_headers=AUTH) as ws:
                events, code = await expect_close(ws)
            # 1006: the connection ended without a close frame (RFC 6455 §7.1.5).
            assert code == 1006
            assert [e["type"] for e in events] == ["session.created"]
            assert sim.sessions[0].fault == "reset"

    trio.run(main)


def test_a_silent_drop_stops_events_and_pongs_until_the_client_gives_up() -> None:
    async def main() -> None:
        options = SimulatorOptions(drop_after_s=0.2, drop_mode="silent", speed=math.inf, response_audio_ms=300)
        async with open_simulator(options=options) as sim:
            async with open_websocket_url(realtime_url(sim.port), extra_headers=AUTH) as ws:
                await next_event(ws, "session.created")
                with trio.fail_after(2):
                    await ws.ping()  # answered while the session is healthy
                await trio.sleep(0.3)
                await ws.send_message(json.dumps({"type": "response.create"}))
                with trio.move_on_after(0.5) as timed_out:
                    await ws.ping()
                assert timed_out.cancelled_caught  # no pong: the client's keep-alive would fail
                with trio.move_on_after(0.3) as quiet:
                    await ws.get_message()
                assert quiet.cancelled_caught  # and no events, not even for response.create
            [session] = sim.sessions
            assert session.fault == "silent" and session.responses == []
            with trio.fail_after(5):  # the client's close ends the server's wait
                while session.closed_at is None:
                    await trio.sleep(0.01)

    trio.run(main)


def test_session_expired_after_n_seconds_then_close() -> None:
    async def main() -> None:
        async with open_simulator(options=SimulatorOptions(expire_after_s=0.2)) as sim:
            async with open_websocket_url(realtime_url(sim.port), extra_headers=AUTH) as ws:
                events, code = await expect_close(ws)
            assert [e["type"] for e in events] == ["session.created", "error"]
            error = events[1]["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error", "session_expired")
            assert error["message"] == "Your session hit the maximum duration of 60 minutes."
            assert code == 1000
            assert sim.sessions[0].expired

    trio.run(main)


def test_first_k_connection_attempts_are_refused_then_served() -> None:
    async def main() -> None:
        async with open_simulator(options=SimulatorOptions(refuse_connections=2)) as sim:
            for _ in range(2):
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket_url(realtime_url(sim.port), extra_headers=AUTH):
                        pass
                assert rejected.value.status_code == 503
            async with open_websocket_url(realtime_url(sim.port), extra_headers=AUTH) as ws:
                assert (await next_event(ws))["type"] == "session.created"
            assert sim.connection_attempts == 3
            assert [r[1] for r in sim.rejected] == [503, 503]
            assert len(sim.sessions) == 1

    trio.run(main)


def test_fault_sessions_spares_the_reconnected_session() -> None:
    async def main() -> None:
        options = SimulatorOptions(drop_after_s=0.15, drop_mode="close", fault_sessions=1)
        async with open_simulator(options=options) as sim:
            async with open_websocket_url(realtime_url(sim.port), extra_headers=AUTH) as ws:
                _, code = await expect_close(ws)
                assert code == 1011
            async with open_websocket_url(realtime_url(sim.port), extra_headers=AUTH) as ws:
                await next_event(ws, "session.created")
                with trio.move_on_after(0.4) as still_open:
                    await ws.get_message()
                assert still_open.cancelled_caught
                await ws.send_message(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
                assert (await next_event(ws))["type"] == "session.updated"
            assert [s.fault for s in sim.sessions] == ["close", None]

    trio.run(main)


def test_cli_flags_reach_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import socket
    import subprocess
    import sys

    from bridge.cli import main as cli_main

    assert cli_main(["simulator", "--preamble", "1:Bye.", "--tool-call", "2:end_call"]) == 2
    assert "no tool call" in capsys.readouterr().err
    assert cli_main(["simulator", "--tool-call", '1:end_call:{"reason"']) == 2
    assert "not JSON" in capsys.readouterr().err

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "bridge", "simulator", "--port", str(port), "--speed", "1000"]
    argv += ["--response-ms", "200", "--refuse-connections", "1", "--refuse-status", "502"]
    argv += ["--tool-call", '0:end_call:{"reason":"done"}', "--preamble", "0:Goodbye!"]
    proc = subprocess.Popen(argv, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def main() -> None:
        with trio.fail_after(20):
            while True:  # until it listens; the first handshake is refused on purpose
                try:
                    async with open_websocket_url(realtime_url(port), extra_headers=AUTH):
                        pass
                except ConnectionRejected as exc:
                    assert exc.status_code == 502
                    break
                except HandshakeError:  # not listening yet
                    await trio.sleep(0.1)
        async with open_websocket_url(realtime_url(port), extra_headers=AUTH) as ws:
            await next_event(ws, "session.created")
            tool = {"type": "function", "name": "end_call", "parameters": {"type": "object", "properties": {}}}
            session = {**MANUAL_ULAW, "tools": [tool]}
            await ws.send_message(json.dumps({"type": "session.update", "session": session}))
            await next_event(ws, "session.updated")
            await ws.send_message(json.dumps({"type": "response.create"}))
            seen: list[dict[str, Any]] = []
            done = await until_done(ws, seen)
            assert [o["type"] for o in done["response"]["output"]] == ["message", "function_call"]
            assert done["response"]["output"][1]["arguments"] == '{"reason":"done"}'
            assert done["response"]["output"][0]["content"][0]["transcript"] == "Goodbye!"

    try:
        trio.run(main)
    finally:
        proc.terminate()
        proc.wait(10)
