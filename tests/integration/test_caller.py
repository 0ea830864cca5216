"""The simulated caller: its pure playback model, and whole calls against a fake bridge on loopback.

The fake server plays the bridge's side of a Twilio media stream and checks every message the
caller sends against the shapes in the Twilio reference (string counters, numeric media format).
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from bridge.audio.wavfile import CALLER_ALAW, CALLER_ULAW, bundled
from bridge.testing.caller import (
    ALAW,
    MULAW,
    CallerOptions,
    CallResult,
    Pause,
    PlaybackBuffer,
    Say,
    WaitForReply,
    main,
    result_to_dict,
    run_call,
    summarise,
)

ULAW_SILENCE = 0xFF

# --------------------------------------------------------------------------------------------
# PlaybackBuffer (pure, virtual clock: times are plain floats)


def test_marks_are_echoed_in_order_when_their_audio_has_played() -> None:
    buf = PlaybackBuffer()
    assert buf.enqueue(b"\x01" * 800, 10.0) == []  # 100 ms
    assert buf.mark("a", 10.0) == []
    assert buf.enqueue(b"\x02" * 400, 10.02) == []  # queued behind: ends at 10.150
    assert buf.mark("b", 10.02) == []
    assert buf.next_due() == pytest.approx(10.1)
    assert buf.advance(10.099) == []
    assert buf.advance(10.1) == ["a"]
    assert buf.next_due() == pytest.approx(10.15)
    assert buf.advance(10.149) == []
    assert buf.advance(10.15) == ["b"]
    assert buf.next_due() is None
    assert buf.played == b"\x01" * 800 + b"\x02" * 400


def test_mark_due_while_another_call_happens_is_returned_by_that_call() -> None:
    buf = PlaybackBuffer()
    buf.enqueue(b"\x01" * 80, 0.0)
    buf.mark("a", 0.0)
    # Nobody called advance at 0.01; the next enqueue must still hand "a" back.
    assert buf.enqueue(b"\x02" * 80, 0.5) == ["a"]


def test_mark_is_echoed_at_once_when_nothing_is_buffered() -> None:
    buf = PlaybackBuffer()
    assert buf.mark("first", 0.0) == ["first"]
    buf.enqueue(b"\x01" * 160, 1.0)  # 20 ms
    assert buf.mark("queued", 1.0) == []
    # Audio finished at 1.02; a mark arriving later is immediate, after the queued one.
    assert buf.mark("late", 1.5) == ["queued", "late"]


def test_clear_drops_buffered_audio_and_echoes_all_pending_marks() -> None:
    buf = PlaybackBuffer()
    audio = bytes(range(256)) * 5  # 1280 bytes = 160 ms, distinguishable bytes
    buf.enqueue(audio[:800], 0.0)
    buf.mark("m1", 0.0)
    buf.enqueue(audio[800:], 0.0)
    buf.mark("m2", 0.0)
    buf.mark("m3", 0.0)
    assert buf.clear(0.05) == ["m1", "m2", "m3"]  # 400 bytes played, nothing was due
    assert buf.flushed_marks == ["m1", "m2", "m3"]
    assert buf.played == audio[:400]
    assert buf.cleared == audio[400:]
    assert (buf.played_bytes, buf.cleared_bytes) == (400, 880)
    assert buf.played_ms == pytest.approx(50.0)
    assert buf.buffered_bytes(0.05) == 0
    assert buf.advance(1.0) == []
    assert buf.mark("after", 1.0) == ["after"]


def test_clear_returns_marks_that_played_before_the_flushed_ones() -> None:
    buf = PlaybackBuffer()
    buf.enqueue(b"\x01" * 80, 0.0)  # 10 ms
    buf.mark("part", 0.0)
    buf.enqueue(b"\x02" * 80, 0.0)
    buf.mark("part", 0.0)
    assert buf.clear(0.015) == ["part", "part"]
    assert buf.flushed_marks == ["part"]  # only the second was flushed
    assert buf.played_bytes == 120


def test_played_bytes_keep_order_across_gaps_and_played_ms_counts_only_played() -> None:
    buf = PlaybackBuffer()
    buf.enqueue(b"A" * 160, 0.0)
    buf.enqueue(b"B" * 160, 0.01)  # appended behind A, plays 0.02..0.04
    buf.advance(0.03)
    assert buf.played == b"A" * 160 + b"B" * 80
    assert buf.played_ms == pytest.approx(30.0)
    buf.enqueue(b"C" * 80, 2.0)  # after a gap: starts playing at 2.0
    assert buf.buffered_bytes(2.005) == 40
    buf.advance(3.0)
    assert buf.played == b"A" * 160 + b"B" * 160 + b"C" * 80
    assert buf.played_ms == pytest.approx(50.0)


def test_response_boundaries_are_clears_and_silences_longer_than_the_gap() -> None:
    buf = PlaybackBuffer(response_gap_ms=500)
    assert buf.response_count == 0
    buf.enqueue(b"\x01" * 800, 0.0)  # plays until 0.1
    assert buf.response_count == 1
    assert buf.response_played_ms(0.05) == pytest.approx(50.0)
    buf.enqueue(b"\x01" * 800, 0.4)  # 300 ms gap: same response
    assert buf.response_count == 1
    assert buf.response_played_ms(0.45) == pytest.approx(150.0)
    buf.enqueue(b"\x01" * 800, 1.2)  # empty since 0.5 -> 700 ms gap: new response
    assert buf.response_count == 2
    assert buf.response_played_ms(1.25) == pytest.approx(50.0)
    buf.clear(1.25)
    buf.enqueue(b"\x01" * 800, 1.26)  # right after a clear: new response
    assert buf.response_count == 3
    assert buf.response_played_ms(1.26) == pytest.approx(0.0)
    assert buf.response_received_bytes == 800


def test_idle_for_reports_how_long_the_buffer_has_been_empty() -> None:
    buf = PlaybackBuffer()
    assert buf.idle_for(0.0) == float("inf")
    buf.enqueue(b"\x01" * 800, 1.0)
    assert buf.idle_for(1.05) is None
    assert buf.idle_for(1.3) == pytest.approx(0.2)  # ran empty at 1.1, nobody advanced
    buf.advance(1.3)
    assert buf.idle_for(1.4) == pytest.approx(0.3)


def test_without_keep_audio_counts_are_kept_but_not_bytes() -> None:
    buf = PlaybackBuffer(keep_audio=False)
    buf.enqueue(b"\x01" * 800, 0.0)
    buf.clear(0.05)
    assert (buf.played_bytes, buf.cleared_bytes) == (400, 400)
    assert buf.played == b"" and buf.cleared == b""


# --------------------------------------------------------------------------------------------
# A fake bridge on loopback


Handler = Callable[[WebSocketConnection, "Seen"], Awaitable[None]]


@dataclass
class Seen:
    """What the fake server received, in order, plus shape problems it found."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    arrival: list[float] = field(default_factory=list)  # trio time of each message
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def check(self, msg: dict[str, Any]) -> None:
        """Validate one message from the caller against Twilio's shapes and counters."""
        n = len(self.messages)
        self.messages.append(msg)
        event = msg.get("event")
        if n == 0:
            if msg != {"event": "connected", "protocol": "Call", "version": "1.0.0"}:
                self.problems.append(f"first message is not connected: {msg}")
            return
        if msg.get("sequenceNumber") != str(n):
            self.problems.append(f"message {n} ({event}) has sequenceNumber {msg.get('sequenceNumber')!r}")
        if n == 1 and event != "start":
            self.problems.append(f"second message is {event}, not start")
        stream_sid = self.messages[1].get("streamSid") if len(self.messages) > 1 else None
        if msg.get("streamSid") != stream_sid:
            self.problems.append(f"{event} streamSid {msg.get('streamSid')!r} != {stream_sid!r}")
        if event == "media":
            media = msg["media"]
            chunk = sum(1 for m in self.messages if m.get("event") == "media")
            if media.get("track") != "inbound" or media.get("chunk") != str(chunk):
                self.problems.append(f"bad media header {media}")
            if media.get("timestamp") != str((chunk - 1) * 20):
                self.problems.append(f"media chunk {chunk} timestamp {media.get('timestamp')!r}")
            payload = base64.b64decode(media["payload"], validate=True)
            if len(payload) != 160:
                self.problems.append(f"media chunk {chunk} has {len(payload)} bytes")
            self.audio += payload

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == event]


def check_start(start_msg: dict[str, Any], encoding: str) -> list[str]:
    problems = []
    start = start_msg["start"]
    if not (start["streamSid"].startswith("MZ") and len(start["streamSid"]) == 34):
        problems.append(f"streamSid {start['streamSid']!r}")
    if not (start["callSid"].startswith("CA") and len(start["callSid"]) == 34):
        problems.append(f"callSid {start['callSid']!r}")
    if not (start["accountSid"].startswith("AC") and len(start["accountSid"]) == 34):
        problems.append(f"accountSid {start['accountSid']!r}")
    if start_msg["streamSid"] != start["streamSid"]:
        problems.append("top-level streamSid differs from start.streamSid")
    if start["tracks"] != ["inbound"]:
        problems.append(f"tracks {start['tracks']!r}")
    fmt = start["mediaFormat"]
    if fmt != {"encoding": encoding, "sampleRate": 8000, "channels": 1}:
        problems.append(f"mediaFormat {fmt!r}")
    if type(fmt["sampleRate"]) is not int or type(fmt["channels"]) is not int:
        problems.append("sampleRate/channels must be JSON numbers")
    return problems


async def receive(ws: WebSocketConnection, seen: Seen) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(await ws.get_message())
    seen.arrival.append(trio.current_time())
    seen.check(msg)
    return msg


async def drain(ws: WebSocketConnection, seen: Seen) -> None:
    """Read until the caller closes (after stop)."""
    try:
        while True:
            await receive(ws, seen)
    except ConnectionClosed:
        pass


@asynccontextmanager
async def fake_bridge(handler: Handler, seen: Seen) -> AsyncIterator[str]:
    async def on_request(request: WebSocketRequest) -> None:
        seen.path = request.path
        seen.headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        ws = await request.accept()
        with suppress(ConnectionClosed):
            await handler(ws, seen)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, on_request, "127.0.0.1", 0, None)
        yield f"ws://127.0.0.1:{server.port}/media"
        nursery.cancel_scope.cancel()


def call_against(handler: Handler, **options: Any) -> tuple[CallResult, Seen]:
    seen = Seen()

    async def scenario() -> CallResult:
        async with fake_bridge(handler, seen) as url:
            with trio.fail_after(30):  # a hang is a failure, not a stuck test run
                return await run_call(CallerOptions(url=url, **options))

    return trio.run(scenario), seen


def media(stream_sid: str, audio: bytes) -> str:
    payload = base64.b64encode(audio).decode()
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def mark(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


# --------------------------------------------------------------------------------------------
# Whole calls


@pytest.mark.parametrize(
    ("encoding", "recording", "silence"), [(MULAW, CALLER_ULAW, 0xFF), (ALAW, CALLER_ALAW, 0xD5)]
)
def test_call_sends_twilio_shaped_messages_and_the_recording_in_order(
    encoding: str, recording: str, silence: int
) -> None:
    async def bridge(ws: WebSocketConnection, seen: Seen) -> None:
        await receive(ws, seen)  # connected
        start = await receive(ws, seen)
        seen.problems += check_start(start, encoding)
        sid = start["streamSid"]
        # Bad input from the bridge must be counted, never crash the caller.
        await ws.send_message("not json")
        await ws.send_message(json.dumps({"event": "bogus", "streamSid": sid}))
        await ws.send_message(
            json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": ""}})
        )
        await ws.send_message(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "!!"}}))
        await drain(ws, seen)

    expected = bundled(recording).data
    result, seen = call_against(
        bridge,
        encoding=encoding,
        realtime=False,
        params={"tenant": "acme", "lang": "en"},
        dtmf=[(100, "5"), (100, "#")],
        leading_silence_ms=40,
        trailing_silence_ms=60,
        extra_headers={"X-Test": "yes"},
    )

    assert seen.problems == []
    assert seen.path == "/media"
    assert seen.headers["x-test"] == "yes"
    assert seen.messages[1]["start"]["customParameters"] == {"tenant": "acme", "lang": "en"}
    # The stream: 2 frames of silence, the recording (last frame padded), 3 frames of silence.
    lead, trail = bytes([silence]) * 320, bytes([silence]) * 480
    assert seen.audio[:320] == lead
    assert seen.audio[320 : 320 + len(expected)] == expected
    padding = (-len(expected)) % 160
    assert seen.audio[320 + len(expected) :] == bytes([silence]) * padding + trail
    assert bytes(result.audio_sent) == bytes(seen.audio)
    assert result.frames_sent == len(seen.of("media")) == len(seen.audio) // 160
    # DTMF goes out just before the frame stamped 100 ms (the sixth), in the order given.
    kinds = [m["event"] for m in seen.messages[2:10]]
    assert kinds == ["media"] * 5 + ["dtmf", "dtmf", "media"]
    assert [m["dtmf"] for m in seen.of("dtmf")] == [
        {"track": "inbound_track", "digit": "5"},
        {"track": "inbound_track", "digit": "#"},
    ]
    stop = seen.messages[-1]
    assert stop["event"] == "stop"
    assert stop["stop"] == {"accountSid": result.account_sid, "callSid": result.call_sid}
    assert result.stop_sent and result.closed_by == "caller" and result.close_code == 1000
    assert result.ok
    assert result.error_count == 4 and result.unknown_events == {"bogus": 1}
    assert any("MZwrong" in e for e in result.errors) and any("base64" in e for e in result.errors)
    assert result.media_received == 0


def test_marks_are_echoed_after_playback_and_clear_flushes_the_rest() -> None:
    timeline: dict[str, float] = {}

    async def bridge(ws: WebSocketConnection, seen: Seen) -> None:
        await receive(ws, seen)
        sid = (await receive(ws, seen))["streamSid"]
        for _ in range(12):  # the caller's 200 ms of speech and a little silence
            await receive(ws, seen)
        await ws.send_message(mark(sid, "early"))  # nothing buffered: echoed at once
        timeline["sent"] = trio.current_time()
        for i in range(1, 4):
            await ws.send_message(media(sid, bytes([i]) * 1600))  # 200 ms each
            await ws.send_message(mark(sid, f"m{i}"))
        while True:
            msg = await receive(ws, seen)
            if msg["event"] == "mark":
                timeline[msg["mark"]["name"]] = trio.current_time()
                if msg["mark"]["name"] == "m1":
                    await ws.send_message(clear(sid))
                    timeline["clear"] = trio.current_time()
            if msg["event"] == "stop":
                break
        await drain(ws, seen)

    short = bundled(CALLER_ULAW).data[800:2400]  # 200 ms of speech
    result, seen = call_against(bridge, script=[Say(short), WaitForReply(5000, settle_ms=300)])

    assert seen.problems == []
    echoes = seen.of("mark")
    assert [m["mark"]["name"] for m in echoes] == ["early", "m1", "m2", "m3"]
    assert [m.cleared for m in result.marks_echoed] == [False, False, True, True]
    # m1 needs its 200 ms to play; "early" does not wait for anything.
    assert timeline["early"] - timeline["sent"] < 0.15
    assert 0.19 <= timeline["m1"] - timeline["sent"] < 1.0
    # After clear the pending marks come back together, without waiting for their audio.
    assert timeline["m3"] - timeline["clear"] < 0.15
    assert len(result.clears) == 1
    clear_event = result.clears[0]
    assert clear_event.marks_flushed == ["m2", "m3"]
    assert 195 <= clear_event.response_played_ms < 400
    assert result.played_bytes + result.cleared_bytes == result.bytes_received == 4800
    assert bytes(result.audio_played) == (b"\x01" * 1600 + b"\x02" * 1600)[: result.played_bytes]
    assert (
        bytes(result.audio_played + result.audio_cleared) == b"\x01" * 1600 + b"\x02" * 1600 + b"\x03" * 1600
    )
    assert result.responses == 1
    # The reply came after the caller's speech ended; the wait ended once playback settled.
    utterance = result.utterances[0]
    assert utterance.reply_latency_ms is not None and 0 < utterance.reply_latency_ms < 1000
    assert result.duration_s < 3  # not the 5 s timeout
    assert result.ok and result.closed_by == "caller"
    assert "clears: 1" in summarise(result)
    json.dumps(result_to_dict(result))  # the --json view must be serialisable


def test_caller_barges_in_after_the_configured_amount_of_reply_has_played() -> None:
    async def bridge(ws: WebSocketConnection, seen: Seen) -> None:
        await receive(ws, seen)
        sid = (await receive(ws, seen))["streamSid"]
        replied = cleared = answered = False
        while True:
            msg = await receive(ws, seen)
            if msg["event"] == "stop":
                break
            if msg["event"] != "media":
                continue
            loud = base64.b64decode(msg["media"]["payload"]) != bytes([ULAW_SILENCE]) * 160
            if not replied and not loud:  # the caller stopped talking: answer with 2 s
                replied = True
                for i in range(20):
                    await ws.send_message(media(sid, bytes([i]) * 800))
                    await ws.send_message(mark(sid, f"r{i}"))
            elif replied and not cleared and loud:  # the caller talks over it: stop playback
                cleared = True
                await ws.send_message(clear(sid))
            elif cleared and not answered and not loud:  # answer the interruption briefly
                answered = True
                await ws.send_message(media(sid, b"\x7f" * 800))
        await drain(ws, seen)

    speech = bundled(CALLER_ULAW).data[800:2400]  # 200 ms of clearly voiced audio
    result, seen = call_against(
        bridge,
        script=[Say(speech), Pause(40), WaitForReply(5000, settle_ms=200)],
        interrupt_after_assistant_ms=300,
        interrupt_audio=speech,
    )

    assert seen.problems == []
    assert len(result.interrupts) == 1
    interrupt = result.interrupts[0]
    assert 300 <= interrupt.response_played_ms < 400  # checked once per 20 ms frame
    assert interrupt.clear_at is not None and interrupt.clear_at >= interrupt.at
    assert [u.interrupt for u in result.utterances] == [False, True]
    assert len(result.clears) == 1 and 300 <= result.clears[0].response_played_ms < 600
    # Everything received was either played or dropped by the clear, and the echoes say so.
    assert result.played_bytes + result.cleared_bytes == result.bytes_received == 16000 + 800
    assert result.responses == 2  # the interrupted reply, then the answer to the interruption
    assert bytes(result.audio_played).endswith(b"\x7f" * 800)
    assert result.duration_s < 3  # the wait ended when the answer had played, not at 5 s
    echoed = {m.name: m.cleared for m in result.marks_echoed}
    assert echoed["r0"] is False and echoed["r19"] is True
    assert "barge-in" in summarise(result)


def test_hang_up_after_stops_mid_audio_with_a_stop_message() -> None:
    async def bridge(ws: WebSocketConnection, seen: Seen) -> None:
        await drain(ws, seen)

    result, seen = call_against(bridge, hang_up_after_ms=200)  # the 8 s recording, paced

    assert seen.problems == []
    assert result.hung_up_early and result.stop_sent
    assert seen.messages[-1]["event"] == "stop"
    assert 5 <= result.frames_sent <= 12  # about 10 frames in 200 ms
    assert result.ok


def test_server_closing_mid_call_is_recorded_and_ends_the_call() -> None:
    async def bridge(ws: WebSocketConnection, seen: Seen) -> None:
        for _ in range(5):
            await receive(ws, seen)
        await ws.aclose(4000, "bridge gave up")

    result, _ = call_against(bridge)  # would take 8 s if the close were missed

    assert result.closed_by == "server"
    assert (result.close_code, result.close_reason) == (4000, "bridge gave up")
    assert not result.stop_sent
    assert result.frames_sent < 50
    assert not result.ok


def test_the_bridge_closing_after_its_last_mark_is_recorded_with_times_code_and_reason() -> None:
    async def bridge(ws: WebSocketConnection, seen: Seen) -> None:
        await receive(ws, seen)
        sid = (await receive(ws, seen))["streamSid"]
        await ws.send_message(media(sid, b"\x01" * 1600))  # a 200 ms goodbye
        await ws.send_message(mark(sid, "goodbye"))
        while (await receive(ws, seen))["event"] != "mark":
            pass
        await ws.aclose(1000, "agent_hangup")  # only once the caller has heard it all

    result, seen = call_against(bridge, script=[Pause(5000)])

    assert seen.problems == []
    assert result.closed_by == "server" and not result.stop_sent
    assert (result.close_code, result.close_reason) == (1000, "agent_hangup")
    assert [m.name for m in result.marks_echoed] == ["goodbye"]
    echoed, closed = result.last_mark_echoed_at, result.closed_at
    assert echoed is not None and closed is not None
    assert echoed >= 0.2  # the mark waited for its audio to play
    assert echoed <= closed < echoed + 0.5
    assert result.duration_s < 3 and result.played_bytes == 1600
    assert result_to_dict(result)["last_mark_echoed_at"] == echoed
    assert not result.redirected


def test_a_call_without_marks_has_no_last_mark_time() -> None:
    async def bridge(ws: WebSocketConnection, seen: Seen) -> None:
        await drain(ws, seen)

    result, _ = call_against(bridge, script=[Pause(40)], realtime=False)
    assert result.last_mark_echoed_at is None
    assert result.closed_by == "caller" and result.closed_at is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_run_call_records_a_connection_failure() -> None:
    options = CallerOptions(url=f"ws://127.0.0.1:{free_port()}/media", connect_timeout_s=5)
    result = trio.run(run_call, options)
    assert not result.connected and result.connect_error
    assert "not connected" in summarise(result)


def test_bad_options_are_rejected_before_dialling() -> None:
    with pytest.raises(ValueError, match="encoding"):
        trio.run(run_call, CallerOptions(url="ws://127.0.0.1:1/media", encoding="audio/pcm"))
    with pytest.raises(ValueError, match="ulaw"):
        trio.run(run_call, CallerOptions(url="ws://127.0.0.1:1/media", audio=bundled(CALLER_ALAW)))


def test_cli_exits_2_when_it_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", f"ws://127.0.0.1:{free_port()}/media", "--fast"]) == 2
    assert "could not connect" in capsys.readouterr().err


def test_cli_runs_a_call_and_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    ports: queue.Queue[int] = queue.Queue()
    stop = threading.Event()
    seen = Seen()

    async def bridge(ws: WebSocketConnection, seen: Seen) -> None:
        await drain(ws, seen)

    async def server() -> None:
        async with fake_bridge(bridge, seen) as url:
            ports.put(int(url.rsplit(":", 1)[1].split("/")[0]))
            while not stop.is_set():
                await trio.sleep(0.02)

    thread = threading.Thread(target=trio.run, args=(server,))
    thread.start()
    try:
        port = ports.get(timeout=10)
        argv = ["--url", f"ws://127.0.0.1:{port}/media", "--fast", "--json", "--param", "k=v"]
        argv += ["--dtmf", "0:1", "--trailing-silence", "0"]
        assert main(argv) == 0
    finally:
        stop.set()
        thread.join(10)
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["connected"] is True
    assert out["frames_sent"] == len(seen.of("media"))
    assert seen.messages[1]["start"]["customParameters"] == {"k": "v"}
    assert [m["dtmf"]["digit"] for m in seen.of("dtmf")] == ["1"]
    assert seen.problems == []
