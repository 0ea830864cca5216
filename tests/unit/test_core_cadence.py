"""How often the call core sends: caller audio held for larger appends (realtime.append_interval_ms)
and playback marks every N ms of audio (server.mark_interval_ms). Pure, virtual time."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.call.core import CallCore, SendCarrier, SendModel, UseModel
from bridge.carrier import base as tel
from bridge.carrier.twilio import Twilio
from bridge.carrier.vonage import Vonage
from bridge.config import Settings
from bridge.realtime import events as rt
from bridge.vocabulary import CallState


def frame(i: int) -> str:
    return base64.b64encode(bytes([i % 256]) * 160).decode()  # 20 ms of μ-law, a different byte each


def active(**overrides: Any) -> CallCore:
    core = CallCore(Settings(**overrides), "c1", 0.0, Twilio())
    core.on_carrier(tel.Start("MZ1", "CA1", "AC1", "audio/x-mulaw", 8000, 1, {}), 0.0)
    core.on_model_connected(0.1)
    core.on_model(rt.SessionUpdated({}), 0.2)
    assert core.state is CallState.ACTIVE
    return core


def appends(actions: list[Any]) -> list[bytes]:
    out = []
    for a in actions:
        if isinstance(a, SendModel):
            msg = json.loads(a.text)
            if msg["type"] == "input_audio_buffer.append":
                out.append(base64.b64decode(msg["audio"]))
    return out


def kinds(actions: list[Any]) -> list[str]:
    return [json.loads(a.text)["type"] for a in actions if isinstance(a, SendModel)]


def test_without_an_interval_every_frame_goes_up_as_it_came() -> None:
    core = active()
    for i in range(3):
        out = core.on_carrier(tel.Media(frame(i)), 1.0 + i * 0.02)
        assert [json.loads(a.text)["audio"] for a in out if isinstance(a, SendModel)] == [frame(i)]  # untouched


def test_an_interval_joins_frames_into_one_append_of_the_same_audio() -> None:
    core = active(realtime={"append_interval_ms": 60})
    sent: list[bytes] = []
    for i in range(9):
        out = core.on_carrier(tel.Media(frame(i)), 1.0 + i * 0.02)
        got = appends(out)
        assert len(got) == (1 if i % 3 == 2 else 0)  # one append per 60 ms, at its last frame
        sent += got
    assert sent == [b"".join(bytes([j]) * 160 for j in range(k, k + 3)) for k in (0, 3, 6)]


def test_held_audio_goes_up_before_a_commit_a_key_and_on_the_tick() -> None:
    core = active(realtime={"append_interval_ms": 100, "turn_detection": {"type": "none", "end_silence_ms": 200}})
    loud = base64.b64encode(bytes([0x10]) * 160).decode()
    quiet = base64.b64encode(bytes([0xFF]) * 160).decode()
    t = 1.0
    up = 0  # bytes of caller audio appended so far
    for n, payload in enumerate([loud] * 20 + [quiet] * 12, start=1):
        out = core.on_carrier(tel.Media(payload), t)
        t += 0.02
        sequence = kinds(out)
        if "input_audio_buffer.commit" in sequence:
            # The local detector ended the turn: everything said before this frame went up first,
            # then the commit (the frame that ended the turn follows it, as without an interval).
            commit = sequence.index("input_audio_buffer.commit")
            up += sum(len(x) for x in appends(out[: commit + 1]))
            assert sequence[commit - 1] == "input_audio_buffer.append"
            assert up == 160 * (n - 1)
            break
        up += sum(len(x) for x in appends(out))
    else:
        raise AssertionError("the turn never ended")
    # A key: held audio first, then the key's message.
    core.on_carrier(tel.Media(frame(1)), t)
    out = core.on_carrier(tel.Dtmf("5"), t + 0.01)
    assert kinds(out)[:2] == ["input_audio_buffer.append", "conversation.item.create"]
    # The carrier pauses its frames: the tick sends what is held.
    core.on_carrier(tel.Media(frame(2)), t + 0.02)
    assert appends(core.on_tick(t + 0.25)) == [bytes([2]) * 160]
    assert appends(core.on_tick(t + 0.5)) == []


def test_held_audio_survives_a_lost_session_and_reaches_the_new_one_in_order() -> None:
    core = active(realtime={"append_interval_ms": 100})
    for i in range(3):  # 60 ms held
        assert appends(core.on_carrier(tel.Media(frame(i)), 1.0 + i * 0.02)) == []
    core.on_model_closed(1011, "gone", 1.1, session=1)
    for i in range(3, 5):  # said during the gap
        core.on_carrier(tel.Media(frame(i)), 1.2 + i * 0.02)
    core.on_model_connected(1.4, session=2)
    out = core.on_model(rt.SessionUpdated({}), 1.5, session=2)
    assert b"".join(appends(out)) == b"".join(bytes([i]) * 160 for i in range(5))


def test_a_handover_sends_held_audio_to_the_old_session_before_switching() -> None:
    core = active(realtime={"append_interval_ms": 100, "session_handover_s": 60})
    core.on_carrier(tel.Media(frame(7)), 61.0)
    core.on_tick(61.1)  # handover due: a new session is opened (the tick also sent what was held)
    core.on_carrier(tel.Media(frame(8)), 61.2)
    core.on_model_connected(61.3, session=2)
    out = core.on_model(rt.SessionUpdated({}), 61.4, session=2)
    switch = next(i for i, a in enumerate(out) if isinstance(a, UseModel))
    assert appends(out[:switch]) == [bytes([8]) * 160]


def delta(ms: int, response: str = "r1") -> rt.AudioDelta:
    return rt.AudioDelta(response, "item_1", base64.b64encode(b"\xff" * (8 * ms)).decode())


def marks(actions: list[Any]) -> list[str]:
    out = []
    for a in actions:
        if isinstance(a, SendCarrier):
            msg = json.loads(a.frame)
            if msg["event"] == "mark":
                out.append(msg["mark"]["name"])
    return out


def test_a_mark_after_every_chunk_by_default() -> None:
    core = active()
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    assert [len(marks(core.on_model(delta(40), 1.0 + i * 0.01))) for i in range(5)] == [1] * 5


def test_a_mark_every_n_ms_of_audio_and_at_the_end_of_the_answer() -> None:
    core = active(server={"mark_interval_ms": 200})
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    counts = [len(marks(core.on_model(delta(60), 1.0 + i * 0.01))) for i in range(9)]
    assert counts == [0, 0, 0, 1, 0, 0, 0, 1, 0]  # marked as 200 ms passed since the last mark
    tracker = core.tracker
    assert tracker.unmarked_ms == 60
    (last,) = marks(core.on_model(rt.AudioDone("r1", "item_1"), 1.1))
    assert tracker.unmarked_ms == 0
    # Its echo confirms the whole answer played, as the per-chunk marks did.
    core.on_carrier(tel.MarkEcho(last), 1.6)
    assert tracker.pending_marks == 0 and tracker.head(1.6) == 540


def test_an_interrupted_answer_gets_no_closing_mark() -> None:
    core = active(server={"mark_interval_ms": 200})
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    core.on_model(delta(100), 1.0)
    core.on_model(rt.SpeechStarted(0, "item_u"), 1.02)  # barge-in: cleared, response muted
    assert marks(core.on_model(rt.AudioDone("r1", "item_1"), 1.05)) == []
    assert core.tracker.pending_marks == 0


def test_held_audio_goes_up_when_the_call_ends() -> None:
    core = active(realtime={"append_interval_ms": 100})
    core.on_carrier(tel.Media(frame(4)), 1.0)
    out = core.on_carrier(tel.Stop("CA1"), 1.01)
    assert appends(out) == [bytes([4]) * 160]


def vonage_active(**overrides: Any) -> CallCore:
    carrier = Vonage()
    core = CallCore(Settings(**overrides), "c1", 0.0, carrier)
    start = carrier.parse(json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}))
    core.on_carrier(start, 0.0)
    core.on_model_connected(0.1)
    core.on_model(rt.SessionUpdated({}), 0.2)
    assert core.state is CallState.ACTIVE
    return core


def vonage_marks(actions: list[Any]) -> list[str]:
    return [
        json.loads(a.frame)["payload"]["name"]
        for a in actions
        if isinstance(a, SendCarrier) and isinstance(a.frame, str)
    ]


def vonage_audio(actions: list[Any]) -> list[bytes]:
    return [a.frame for a in actions if isinstance(a, SendCarrier) and isinstance(a.frame, bytes)]


@pytest.mark.parametrize("every", [0, 200])
def test_a_framing_carrier_gets_the_answers_tail_then_one_closing_mark(every: int) -> None:
    """AudioDone on Vonage: the held partial frame goes out padded, and the end is marked once."""
    core = vonage_active(server={"mark_interval_ms": every})
    per_ms = core.converter.session.audio.bytes_per_ms  # the model's format (pcm16 at 24 kHz)
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    odd = base64.b64encode(bytes(int(per_ms * 30) + 2)).decode()  # 30 ms and a bit: a tail held
    sent = core.on_model(rt.AudioDelta("r1", "item_1", odd), 1.0)
    assert len(vonage_audio(sent)) == 1  # one whole 20 ms frame, the rest held
    assert len(vonage_marks(sent)) == (1 if every == 0 else 0)
    done = core.on_model(rt.AudioDone("r1", "item_1"), 1.1)
    (tail,) = vonage_audio(done)
    assert len(tail) == 640  # 20 ms of 16 kHz l16, padded with silence
    (last,) = vonage_marks(done)  # one mark, after the tail
    assert isinstance(done[-1], SendCarrier) and done[-1].frame == core._writer.mark(last)  # type: ignore[union-attr]
    core.on_carrier(tel.MarkEcho(last), 1.2)
    assert core.tracker.pending_marks == 0 and core.tracker.unmarked_ms == 0
    assert core.tracker.head(1.2) == pytest.approx(40)  # the frame and the padded tail both played
    assert vonage_marks(core.on_model(rt.AudioDone("r1", "item_1"), 1.3)) == []  # nothing new: no second mark
