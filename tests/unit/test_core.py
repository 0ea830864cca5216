"""CallCore driven by hand: carrier events, model events and a virtual clock. No sockets."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.call.core import (
    START_TIMEOUT_S,
    CallCore,
    ConnectModel,
    EndCall,
    Note,
    SendCarrier,
    SendModel,
)
from bridge.carrier import base as tel
from bridge.carrier import twilio
from bridge.carrier.twilio import Twilio
from bridge.config import Settings
from bridge.realtime import events as rt
from bridge.vocabulary import CallState, EndReason, NoteKind, Side

FRAME = base64.b64encode(bytes([0x7F, 0x10] * 80)).decode()  # 20 ms of μ-law


def settings(**realtime: Any) -> Settings:
    return Settings(realtime=realtime) if realtime else Settings()


def start_event(**params: str) -> tel.Start:
    return tel.Start("MZ1", "CA1", "AC1", "audio/x-mulaw", 8000, 1, dict(params))


def model_texts(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, SendModel)]


def carrier_texts(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.frame) for a in actions if isinstance(a, SendCarrier)]


def active_core(s: Settings | None = None, **params: str) -> CallCore:
    core = CallCore(s or settings(), "c1", 0.0, Twilio())
    core.on_carrier(start_event(**params), 0.0)
    core.on_model_connected(0.1)
    core.on_model(rt.SessionUpdated({}), 0.2)
    assert core.state is CallState.ACTIVE
    return core


def delta(item: str, ms: int, response: str = "r1") -> rt.AudioDelta:
    return rt.AudioDelta(response, item, base64.b64encode(b"\xff" * (8 * ms)).decode())


def test_start_chooses_session_and_asks_for_the_model() -> None:
    core = CallCore(settings(), "c1", 0.0, Twilio())
    assert core.state is CallState.CONNECTING
    out = core.on_carrier(start_event(), 0.0)
    assert core.state is CallState.STARTING
    assert [a for a in out if isinstance(a, ConnectModel)] == [ConnectModel("gpt-realtime", session=1)]
    update = model_texts(core.on_model_connected(0.1))[0]
    assert update["type"] == "session.update"
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}


def test_caller_audio_is_buffered_until_session_updated_then_sent_in_order() -> None:
    core = CallCore(settings(), "c1", 0.0, Twilio())
    core.on_carrier(start_event(), 0.0)
    frames = [base64.b64encode(bytes([i]) * 160).decode() for i in range(5)]
    for f in frames:
        assert core.on_carrier(tel.Media(f), 0.05) == []
    out = core.on_model(rt.SessionUpdated({}), 0.3)
    appends = [m["audio"] for m in model_texts(out) if m["type"] == "input_audio_buffer.append"]
    assert appends == frames  # untouched, in order


def test_passthrough_payload_is_the_same_string() -> None:
    core = active_core()
    out = core.on_carrier(tel.Media(FRAME), 1.0)
    (action,) = out
    assert isinstance(action, SendModel)
    assert action.text == rt.append_audio(FRAME)
    assert core.stats.frames_in == 1 and core.stats.bytes_in == 160


def test_media_before_start_is_an_error_not_a_crash() -> None:
    core = CallCore(settings(), "c1", 0.0, Twilio())
    out = core.on_carrier(tel.Media(FRAME), 0.0)
    assert core.stats.protocol_errors == 1
    assert isinstance(out[0], Note) and out[0].fields["kind"] == "media_before_start"
    assert core.end_reason is None


def test_start_without_stream_sid_ends_the_call_with_a_reason() -> None:
    core = CallCore(settings(), "c1", 0.0, Twilio())
    ev = twilio.parse(json.dumps({"event": "start", "start": {"callSid": "CA1"}}))
    out = core.on_carrier(ev, 0.0)
    ends = [a for a in out if isinstance(a, EndCall)]
    assert ends and ends[0].reason == "protocol_error" and ends[0].close_code == 1008


def test_bad_audio_is_counted_and_the_call_goes_on() -> None:
    core = active_core(settings(audio_format="pcm16"))
    out = core.on_carrier(tel.Media("not base64!!"), 1.0)
    assert core.stats.audio_errors == 1
    assert isinstance(out[0], Note) and out[0].kind == "audio_error"
    good = core.on_carrier(tel.Media(FRAME), 1.02)
    assert isinstance(good[-1], SendModel)


def test_stop_ends_once() -> None:
    core = active_core()
    out = core.on_carrier(tel.Stop("CA1"), 2.0)
    assert [a.reason for a in out if isinstance(a, EndCall)] == ["caller_hangup"]
    assert [a for a in core.on_carrier(tel.Stop("CA1"), 2.1) if isinstance(a, EndCall)] == []


def test_model_audio_goes_to_the_carrier_with_a_mark_after_each_chunk() -> None:
    core = active_core()
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    out = core.on_model(delta("i1", 100), 1.0)
    media, mark = carrier_texts(out)
    assert media["event"] == "media" and media["streamSid"] == "MZ1"
    assert base64.b64decode(media["media"]["payload"]) == b"\xff" * 800
    assert mark["event"] == "mark" and mark["mark"]["name"]
    assert core.turn(1.05) == "assistant_speaking"


def test_barge_in_clears_first_cancels_truncates_and_mutes_the_item() -> None:
    core = active_core()
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    for _ in range(10):
        core.on_model(delta("i1", 100), 1.0)  # 1 s sent at once, plays from t=1.0
    out = core.on_model(rt.SpeechStarted(1000, "u1"), 1.3)
    assert isinstance(out[0], SendCarrier) and json.loads(out[0].frame)["event"] == "clear"
    assert out[0].barge_in_at == 1.3
    sent = model_texts(out)
    assert [m["type"] for m in sent] == ["response.cancel", "conversation.item.truncate"]
    assert sent[1]["item_id"] == "i1" and sent[1]["audio_end_ms"] == 300
    assert core.on_model(delta("i1", 100), 1.31) == []  # late deltas of the cut item are dropped
    assert core.stats.barge_ins == 1


def test_speech_while_nothing_plays_is_not_a_barge_in() -> None:
    core = active_core()
    out = core.on_model(rt.SpeechStarted(0, "u1"), 1.0)
    assert out == []
    assert core.turn(1.0) == "user_speaking"


def test_barge_in_after_the_answer_finished_playing_sends_no_truncate() -> None:
    core = active_core()
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    core.on_model(delta("i1", 200), 1.0)
    core.on_model(rt.ResponseDone("r1", "completed", None), 1.01)
    out = core.on_model(rt.SpeechStarted(0, "u2"), 3.0)
    assert out == []


def test_response_done_while_audio_still_queued_still_barges_in_without_cancel() -> None:
    core = active_core()
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    core.on_model(delta("i1", 3000), 1.0)
    core.on_model(rt.ResponseDone("r1", "completed", None), 1.1)
    out = core.on_model(rt.SpeechStarted(0, "u2"), 2.0)
    kinds = [m["type"] for m in model_texts(out)]
    assert kinds == ["conversation.item.truncate"]  # nothing to cancel; audio still queued
    assert model_texts(out)[0]["audio_end_ms"] == 1000


def test_dtmf_becomes_a_user_item_and_a_response_request() -> None:
    core = active_core()
    out = core.on_carrier(tel.Dtmf("5"), 1.0)
    sent = model_texts(out)
    assert sent[0]["type"] == "conversation.item.create"
    assert "5" in sent[0]["item"]["content"][0]["text"]
    assert sent[1]["type"] == "response.create"
    assert core.stats.dtmf == 1


def test_response_create_waits_while_a_response_is_active() -> None:
    core = active_core()
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    out = core.on_carrier(tel.Dtmf("1"), 1.1)
    assert [m["type"] for m in model_texts(out)] == ["conversation.item.create"]
    done = core.on_model(rt.ResponseDone("r1", "completed", None), 2.0)
    assert [m["type"] for m in model_texts(done)] == ["response.create"]


def test_greeting_is_requested_after_session_updated() -> None:
    core = CallCore(settings(greeting="Say hello to {caller_name}."), "c1", 0.0, Twilio())
    core.on_carrier(start_event(caller_name="Ada"), 0.0)
    out = core.on_model(rt.SessionUpdated({}), 0.2)
    (create,) = [m for m in model_texts(out) if m["type"] == "response.create"]
    assert create["response"]["instructions"] == "Say hello to Ada."


def test_unknown_profile_falls_back_with_a_warning() -> None:
    core = CallCore(Settings(profiles={"sales": {"model": "gpt-realtime-mini"}}), "c1", 0.0, Twilio())
    out = core.on_carrier(start_event(profile="nope"), 0.0)
    assert core.profile == "default"
    assert any(isinstance(a, Note) and a.kind == "profile_fallback" for a in out)
    assert core.warnings and "nope" in core.warnings[0]
    core2 = CallCore(Settings(profiles={"sales": {"model": "gpt-realtime-mini"}}), "c2", 0.0, Twilio())
    out2 = core2.on_carrier(start_event(profile="sales"), 0.0)
    assert ConnectModel("gpt-realtime-mini") in out2


def test_format_not_applied_by_the_server_ends_the_call() -> None:
    core = CallCore(settings(), "c1", 0.0, Twilio())
    core.on_carrier(start_event(), 0.0)
    core.on_model_connected(0.1)
    wrong = {"audio": {"input": {"format": {"type": "audio/pcm"}}, "output": {"format": {"type": "audio/pcm"}}}}
    out = core.on_model(rt.SessionUpdated(wrong), 0.2)
    ends = [a for a in out if isinstance(a, EndCall)]
    assert ends and ends[0].reason == "model_error"


@pytest.mark.parametrize("code", ["response_cancel_not_active", "conversation_already_has_active_response"])
def test_benign_model_errors_do_not_end_the_call(code: str) -> None:
    core = active_core()
    out = core.on_model(rt.ModelError(code, "race"), 1.0)
    assert not [a for a in out if isinstance(a, EndCall)]
    assert core.stats.model_errors == 1


def test_session_expired_opens_a_new_session_instead_of_ending_the_call() -> None:
    core = active_core()
    out = core.on_model(rt.ModelError("session_expired", "Your session hit the maximum duration"), 1.0)
    assert not [a for a in out if isinstance(a, EndCall)]
    assert core.state is CallState.RECONNECTING
    assert [a.session for a in out if isinstance(a, ConnectModel)] == [2]

def test_usage_is_metered_from_response_done() -> None:
    core = active_core()
    usage = {
        "total_tokens": 300,
        "input_tokens": 100,
        "output_tokens": 200,
        "input_token_details": {"text_tokens": 0, "audio_tokens": 100, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 0, "audio_tokens": 200},
    }
    core.on_model(rt.ResponseCreated("r1"), 1.0)
    core.on_model(rt.ResponseDone("r1", "completed", usage), 2.0)
    assert core.meter is not None
    cost = core.meter.cost(60.0)
    # gpt-realtime: 100 audio in at $32/M + 200 audio out at $64/M
    assert cost.model_usd == pytest.approx(100 * 32e-6 + 200 * 64e-6)
    assert core.stats.turns == 1


def test_idle_carrier_and_max_duration_end_the_call() -> None:
    core = active_core()
    assert core.on_tick(10.0) == []
    out = core.on_tick(31.0)
    assert [a.reason for a in out if isinstance(a, EndCall)] == ["timeout"]


def test_local_vad_commits_and_asks_for_a_response() -> None:
    core = active_core(settings(turn_detection={"type": "none", "end_silence_ms": 200}))
    loud = base64.b64encode(bytes([0x10]) * 160).decode()  # μ-law near full scale
    quiet = base64.b64encode(bytes([0xFF]) * 160).decode()  # μ-law silence
    sent: list[dict[str, Any]] = []
    t = 1.0
    for _ in range(20):
        sent += model_texts(core.on_carrier(tel.Media(loud), t))
        t += 0.02
    assert core.turn(t) == "user_speaking"
    for _ in range(20):
        sent += model_texts(core.on_carrier(tel.Media(quiet), t))
        t += 0.02
    kinds = [m["type"] for m in sent if m["type"] != "input_audio_buffer.append"]
    assert kinds == ["input_audio_buffer.commit", "response.create"]


def test_request_made_while_a_create_is_in_flight_gets_its_own_response() -> None:
    core = active_core()
    first = core.on_carrier(tel.Dtmf("1"), 1.0)
    assert [m["type"] for m in model_texts(first)] == ["conversation.item.create", "response.create"]
    # A second key before the first create's response.created: it must not be forgotten.
    second = core.on_carrier(tel.Dtmf("2"), 1.01)
    assert [m["type"] for m in model_texts(second)] == ["conversation.item.create"]
    core.on_model(rt.ResponseCreated("r1"), 1.05)
    done = core.on_model(rt.ResponseDone("r1", "completed", None), 2.0)
    assert [m["type"] for m in model_texts(done)] == ["response.create"]


def test_create_rejected_because_the_server_started_one_is_retried_after_it() -> None:
    core = active_core()
    core.on_carrier(tel.Dtmf("1"), 1.0)  # create in flight
    core.on_model(rt.ResponseCreated("vad"), 1.01)  # the server's own (VAD) response
    rejected = core.on_model(rt.ModelError("conversation_already_has_active_response", "busy"), 1.02)
    assert not [a for a in rejected if isinstance(a, EndCall)]
    done = core.on_model(rt.ResponseDone("vad", "completed", None), 2.0)
    assert [m["type"] for m in model_texts(done)] == ["response.create"]


# --- every end is decided in the core, with the close code the wire will carry ------------------


def _end(actions: list[Any]) -> EndCall:
    (end,) = [a for a in actions if isinstance(a, EndCall)]
    return end


def test_carrier_close_is_a_hangup_but_an_oversized_message_is_a_protocol_error() -> None:
    core = active_core()
    end = _end(core.on_carrier_closed(1000, 1.0))
    assert (end.reason, end.close_code) == (EndReason.CALLER_HANGUP, 1000)

    core = active_core()
    out = core.on_carrier_closed(1009, 1.0)
    end = _end(out)
    assert (end.reason, end.close_code) == (EndReason.PROTOCOL_ERROR, 1009)
    assert [n.fields["kind"] for n in out if isinstance(n, Note) and n.kind is NoteKind.CARRIER_ERROR] == [
        "message_too_big"
    ]
    assert core.stats.protocol_errors == 1


def test_unsupported_format_is_1003() -> None:
    core = CallCore(settings(), "c1", 0.0, Twilio())
    out = core.on_carrier(tel.Start("MZ1", "CA1", "AC1", "audio/x-opus", 8000, 1), 0.0)
    end = _end(out)
    assert (end.reason, end.close_code) == (EndReason.PROTOCOL_ERROR, 1003)
    assert core.state is CallState.CLOSING


def test_start_timeout_is_decided_by_the_clock_input() -> None:
    core = CallCore(settings(), "c1", 0.0, Twilio())
    assert core.on_tick(START_TIMEOUT_S - 0.1) == []
    end = _end(core.on_tick(START_TIMEOUT_S + 0.1))
    assert (end.reason, end.close_code) == (EndReason.PROTOCOL_ERROR, 1008)
    # A call that did start is not caught by the start timeout.
    core = active_core()
    assert [a for a in core.on_tick(START_TIMEOUT_S + 0.1) if isinstance(a, EndCall)] == []


def test_an_unanswered_carrier_ping_ends_the_call_but_a_model_ping_replaces_the_session() -> None:
    end = _end(active_core().on_ping_timeout(Side.CARRIER, 30.0))
    assert (end.reason, end.close_code) == (EndReason.TIMEOUT, 1001)
    core = active_core()
    out = core.on_ping_timeout(Side.MODEL, 30.0)
    assert not [a for a in out if isinstance(a, EndCall)]
    assert core.state is CallState.RECONNECTING


@pytest.mark.parametrize(("reason", "code"), [(EndReason.OPERATOR, 1000), (EndReason.DRAIN, 1001)])
def test_operator_and_drain_requests(reason: EndReason, code: int) -> None:
    core = active_core()
    end = _end(core.request_end(reason, "asked"))
    assert (end.reason, end.close_code) == (reason, code)
    assert core.request_end(EndReason.OPERATOR, "again") == []  # decided once
    assert next(a for a in core.finish() if isinstance(a, Note)).fields["to"] is CallState.ENDED


def test_a_first_session_that_cannot_be_opened_ends_the_call_as_a_model_error() -> None:
    core = CallCore(settings(), "c1", 0.0, Twilio())
    core.on_carrier(start_event(), 0.0)
    end = _end(core.on_model_connect_failed("refused", 0.5))
    assert (end.reason, end.close_code, end.detail) == (EndReason.MODEL_ERROR, 1011, "refused")

def test_a_call_that_ends_without_a_decision_is_a_bridge_error_and_failed() -> None:
    core = active_core()
    notes = core.finish()
    assert core.end_reason is EndReason.BRIDGE_ERROR
    assert core.state is CallState.FAILED
    assert not any(isinstance(a, EndCall) for a in notes)


def test_close_reason_fits_a_close_frame() -> None:
    core = CallCore(settings(), "c1", 0.0, Twilio())
    core.on_carrier(start_event(), 0.0)
    end = _end(core.on_model_closed(1011, "é" * 300, 1.0))
    assert len(end.close_reason.encode()) <= 123
    assert end.close_reason.startswith("model_error: ")
