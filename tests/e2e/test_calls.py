"""Whole calls over loopback: simulated Twilio caller → bridge worker → Realtime simulator."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from bridge.audio.wavfile import CALLER_ALAW, CALLER_ULAW, bundled
from bridge.testing.caller import ALAW, MULAW, CallResult, Pause, Say, WaitForReply
from bridge.testing.simulator import SimulatorOptions, assistant_audio
from bridge.testing.stack import Stack, open_stack
from tests.e2e.conftest import SHORT_SPEECH, call, run, runner_for

# The default, the other WebSocket implementation (server.websocket), and the CPU levers that change
# what goes on the wire (appends joined every 40 ms, a mark every 200 ms of answer audio).
WIRE_VARIANTS = {
    "direct": {},
    "trio-websocket": {"server": {"websocket": "trio-websocket"}},
    "levers": {"server": {"mark_interval_ms": 200}, "realtime": {"append_interval_ms": 40}},
}


@pytest.mark.parametrize("variant", WIRE_VARIANTS)
def test_passthrough_call_end_to_end(tmp_path: Path, variant: str) -> None:
    async def main() -> None:
        async with open_stack(records=tmp_path / "calls.sqlite", overrides=WIRE_VARIANTS[variant]) as stack:
            result = await call(
                stack, realtime=False, script=[Pause(200), Say(), WaitForReply(timeout_ms=15_000, settle_ms=300)]
            )
            hung_up = trio.current_time()
            assert result.ok, result
            (sim,) = stack.simulator.sessions
            # Every byte the caller sent reached the model, in order, untouched.
            assert bytes(sim.appended_audio) == bytes(result.audio_sent)
            assert len(result.audio_sent) == result.frames_sent * 160
            # The model's answer reached the caller and was played.
            answer = assistant_audio("audio/pcmu")
            assert result.played_bytes == len(answer)
            assert bytes(result.audio_played) == answer
            # Hanging up closed the Realtime socket promptly (no orphan session billing).
            with trio.fail_after(2):
                while sim.closed_at is None:
                    await trio.sleep(0.01)
            assert sim.closed_at - hung_up < 1.0
            await stack.wait_idle()
            runner = await runner_for(stack, result)
            assert runner.core.end_reason == "caller_hangup"
            assert runner.core.stats.turns == 1
            assert stack.store is not None
            (record,) = stack.store.query()
            assert record.call_sid == result.call_sid
            assert record.end_reason == "caller_hangup"
            assert record.cost_total_usd is not None and record.cost_total_usd > 0

    run(main)


def test_every_client_event_sent_validates_against_openai_ga_types() -> None:
    from tests.openai_types import validate_client

    async def main() -> None:
        profiles = {"full": {"greeting": "Hello", "transcription": {"model": "gpt-4o-mini-transcribe"}}}
        async with open_stack(overrides={"profiles": profiles}) as stack:
            result = await call(
                stack,
                realtime=False,
                params={"profile": "full"},
                dtmf=[(100, "7")],
                interrupt_after_assistant_ms=500,
                wait_for_reply_ms=15_000,
            )
            assert result.connected
            received = [e for s in stack.simulator.sessions for e in s.received_events]
            kinds = {e["type"] for e in received}
            assert {"session.update", "input_audio_buffer.append", "conversation.item.create"} <= kinds
            assert "response.create" in kinds
            for event in received:
                validate_client(event)

    run(main)


@pytest.mark.parametrize(
    ("encoding", "session_format"),
    [
        (MULAW, "pcmu"),
        (MULAW, "pcma"),
        (MULAW, "pcm16"),
        (ALAW, "pcmu"),
        (ALAW, "pcma"),
        (ALAW, "pcm16"),
    ],
)
def test_call_in_each_session_format(encoding: str, session_format: str) -> None:
    wire = {"pcmu": "audio/pcmu", "pcma": "audio/pcma", "pcm16": "audio/pcm"}[session_format]

    async def main() -> None:
        async with open_stack(overrides={"realtime": {"audio_format": session_format}}) as stack:
            result = await call(stack, realtime=False, encoding=encoding, wait_for_reply_ms=15_000)
            assert result.ok
            (sim,) = stack.simulator.sessions
            assert sim.input_format == wire
            # The model got the whole utterance in its own format (duration preserved).
            bytes_per_ms = 48 if session_format == "pcm16" else 8
            sent_ms = len(result.audio_sent) / 8
            assert abs(len(sim.appended_audio) / bytes_per_ms - sent_ms) <= 3
            # And the caller heard the whole answer in the carrier's encoding.
            answer_ms = len(assistant_audio(wire)) / bytes_per_ms
            assert abs(result.played_bytes / 8 - answer_ms) <= 3
            assert result.responses == 1

    run(main)


@pytest.mark.parametrize("variant", WIRE_VARIANTS)
def test_barge_in_end_to_end(variant: str) -> None:
    async def main() -> None:
        sim_opts = SimulatorOptions(speed=8.0)
        async with open_stack(simulator=sim_opts, overrides=WIRE_VARIANTS[variant]) as stack:
            result = await call(
                stack,
                realtime=True,
                interrupt_after_assistant_ms=1500,
                audio=SHORT_SPEECH,
                interrupt_audio=SHORT_SPEECH,
                script=[Say(), WaitForReply(timeout_ms=20_000, settle_ms=600)],
            )
            assert result.ok
            await stack.wait_idle()
            runner = await runner_for(stack, result)
            stats = runner.core.stats
            assert stats.barge_ins == 1
            # The clear left the bridge within 5 ms of speech_started arriving.
            assert stats.barge_in_reactions and max(stats.barge_in_reactions) < 0.005
            (sim,) = stack.simulator.sessions
            (item_id, audio_end_ms, accepted) = sim.truncations[0]
            assert accepted
            (clear,) = result.clears
            # What the model was told matches what the caller heard, within 40 ms ...
            assert abs(audio_end_ms - clear.response_played_ms) <= 40
            # ... and never more than was generated for that item.
            generated = sim.item(item_id)
            assert generated is not None
            first = sim.responses[0]
            assert audio_end_ms <= first.audio_ms
            # No audio of the truncated item after the clear: what plays next is the start of
            # the next answer (the simulator restarts its recording for every answer).
            answer = assistant_audio("audio/pcmu")
            heard_before = round(clear.response_played_ms * 8)
            after = bytes(result.audio_played[heard_before : heard_before + 1600])
            assert after == answer[:1600]
            assert sim.responses[-1].status == "completed"

    run(main)


async def _bad_client(stack: Stack, frames: list[str]) -> tuple[int | None, str | None]:
    async with open_websocket_url(stack.media_url) as ws:
        for f in frames:
            await ws.send_message(f)
        try:
            with trio.fail_after(5):
                while True:
                    await ws.get_message()
        except ConnectionClosed as exc:
            return (exc.reason.code, exc.reason.reason) if exc.reason else (None, None)
    return None, None


def test_bad_input_is_rejected_clearly_and_another_call_is_unaffected() -> None:
    async def main() -> None:
        async with open_stack() as stack:
            good: list[CallResult] = []
            closes: list[tuple[int | None, str | None]] = []

            async def good_call() -> None:
                good.append(await call(stack, realtime=True, wait_for_reply_ms=15_000))

            async def bad_call() -> None:
                await trio.sleep(0.5)
                frame = base64.b64encode(b"\xff" * 160).decode()
                closes.append(
                    await _bad_client(
                        stack,
                        [
                            "this is not json",
                            json.dumps({"event": "bogus"}),
                            json.dumps({"event": "media", "media": {"payload": frame}}),  # before start
                            json.dumps([1, 2, 3]),
                            json.dumps({"event": "start", "start": {"callSid": "CAx"}}),  # no streamSid
                        ],
                    )
                )

            async with trio.open_nursery() as n:
                n.start_soon(good_call)
                n.start_soon(bad_call)
            (code, reason) = closes[0]
            assert code == 1008
            assert reason is not None and "streamSid" in reason
            (g,) = good
            assert g.ok and g.played_bytes == len(assistant_audio("audio/pcmu"))
            sessions = stack.simulator.sessions
            assert len(sessions) == 1  # the bad stream never opened a model session
            assert bytes(sessions[0].appended_audio) == bytes(g.audio_sent)
            await stack.wait_idle()
            bad = [r for r in stack.hooks.finished if r.core.end_reason == "protocol_error"]
            assert len(bad) == 1 and bad[0].core.stats.protocol_errors >= 4

    run(main)


def test_the_wire_close_code_is_the_one_the_core_decided() -> None:
    """An unsupported format is 1003 and an oversized message 1009, both on the wire and in the
    record (the runner used to rebuild close codes from a table of its own)."""

    async def main() -> None:
        async with open_stack(overrides={"server": {"max_message_bytes": 8192}}) as stack:
            opus_format = {"encoding": "audio/x-opus", "sampleRate": 8000, "channels": 1}
            opus = {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "mediaFormat": opus_format}}
            code, reason = await _bad_client(stack, [json.dumps(opus)])
            assert code == 1003 and reason is not None and "audio/x-opus" in reason
            start = {"event": "start", "start": {"streamSid": "MZ2", "callSid": "CA2"}}
            huge = json.dumps({"event": "media", "media": {"payload": "A" * 20_000}})
            code, reason = await _bad_client(stack, [json.dumps(start), huge])
            assert code == 1009
            await stack.wait_idle()
            (oversized,) = [r.core.ending for r in stack.hooks.finished if r.core.call_sid == "CA2"]
            assert oversized is not None
            assert (oversized.reason, oversized.close_code) == ("protocol_error", 1009)

    run(main)


def test_unknown_path_and_plain_http_on_the_public_port() -> None:
    async def main() -> None:
        async with open_stack() as stack:
            stream = await trio.open_tcp_stream("127.0.0.1", stack.port)
            body = b"From=%2B4420&To=%2B15550001"
            await stream.send_all(
                b"POST /twiml HTTP/1.1\r\nHost: bridge.example.com\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            data = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    data += chunk
            assert data.startswith(b"HTTP/1.1 200")
            assert b'<Stream url="wss://bridge.example.com/media">' in data
            stream2 = await trio.open_tcp_stream("127.0.0.1", stack.port)
            await stream2.send_all(b"GARBAGE\r\n\r\n")
            data2 = b""
            with trio.fail_after(5):
                while chunk := await stream2.receive_some():
                    data2 += chunk
            assert data2.startswith(b"HTTP/1.1 400")
            with pytest.raises(Exception, match="404"):
                async with open_websocket_url(f"ws://127.0.0.1:{stack.port}/nope"):
                    pass

    run(main)


def test_bundled_recordings_are_long_enough_for_the_tests() -> None:
    for name in (CALLER_ULAW, CALLER_ALAW):
        assert bundled(name).duration_ms > 8000


def test_unreachable_model_ends_the_call_quickly_with_a_reason() -> None:
    async def main() -> None:
        async with open_stack(overrides={"realtime": {"url": "ws://127.0.0.1:9/v1/realtime"}}) as stack:
            t0 = trio.current_time()
            result = await call(stack, realtime=True, hang_up_after_ms=10_000)
            assert trio.current_time() - t0 < 5
            assert result.close_code == 1011
            assert result.close_reason is not None and "connect" in result.close_reason

    run(main)
