"""The simulator served over a real loopback WebSocket (trio + trio-websocket)."""

from __future__ import annotations

import base64
import json
import math
from functools import partial
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

from bridge.testing.simulator import SimulatorOptions, assistant_audio
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
