"""Calls outlive their model session: reconnect after a loss, hand over before expiry. Pure, by hand."""

from __future__ import annotations

import base64
import json
from typing import Any

from bridge.call.core import (
    HANDOVER_LATEST_S,
    CallCore,
    CloseModel,
    ConnectModel,
    EndCall,
    Note,
    SendCarrier,
    SendModel,
    UseModel,
)
from bridge.carrier import base as tel
from bridge.carrier.twilio import Twilio
from bridge.config import Settings
from bridge.httpmsg import HttpResult
from bridge.realtime import events as rt
from bridge.vocabulary import CallState, EndReason, NoteKind


def frame(i: int) -> str:
    return base64.b64encode(bytes([i % 256]) * 160).decode()


def make_core(**realtime: Any) -> CallCore:
    # No carrier messages flow in these tests: keep the idle timeout out of the way.
    settings = Settings(
        realtime={"transcription": {"model": "gpt-4o-mini-transcribe"}, **realtime}, server={"idle_timeout_s": 3600}
    )
    core = CallCore(settings, "c1", 0.0, Twilio())
    core.on_carrier(tel.Start("MZ1", "CA1", "AC1", "audio/x-mulaw", 8000, 1), 0.0)
    core.on_model_connected(0.1, session=1)
    core.on_model(rt.SessionUpdated({}), 0.2, session=1)
    assert core.state is CallState.ACTIVE
    return core


def of(actions: list[Any], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def sent(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in of(actions, SendModel)]


def speak(core: CallCore, now: float, session: int = 1, response: str = "resp_1") -> list[Any]:
    """The model starts answering: one second of audio goes to the carrier."""
    out = core.on_model(rt.ResponseCreated(response), now, session=session)
    delta = base64.b64encode(b"\xff" * 8000).decode()
    return out + core.on_model(rt.AudioDelta(response, f"item_{response}", delta), now, session=session)


def test_a_lost_session_mid_answer_is_replaced_seeded_and_fed_the_gap_audio_in_order() -> None:
    core = make_core()
    core.on_model(rt.InputTranscript("item_u", "Where is my order?", None), 1.0, session=1)
    core.on_model(rt.OutputTranscript("item_a0", "Let me check."), 1.5, session=1)
    speak(core, 2.0)
    out = core.on_model_closed(1011, "server error", 2.3, session=1)
    # The caller stays on; what was playing is cleared like a barge-in; a new session is opened.
    assert not of(out, EndCall)
    assert core.state is CallState.RECONNECTING
    assert [json.loads(a.frame)["event"] for a in of(out, SendCarrier)] == ["clear"]
    assert of(out, UseModel) == [UseModel(None)]
    assert [(a.session, a.delay_s) for a in of(out, ConnectModel)] == [(2, 0.0)]
    assert [n.fields["phase"] for n in of(out, Note) if n.kind is NoteKind.RECONNECT] == ["lost"]
    # Caller audio during the gap is kept, not sent anywhere.
    gap = [frame(i) for i in range(10)]
    for i, payload in enumerate(gap):
        assert not of(core.on_carrier(tel.Media(payload), 2.4 + i * 0.02), SendModel)
    first_update = core._session_update
    (update,) = sent(core.on_model_connected(2.6, session=2))
    assert update == first_update  # the same session configuration
    out = core.on_model(rt.SessionUpdated({}), 2.7, session=2)
    assert of(out, UseModel) == [UseModel(2)]
    messages = sent(out)
    seeded = [m["item"] for m in messages if m["type"] == "conversation.item.create"]
    assert [(i["role"], i["content"][0]["text"]) for i in seeded] == [
        ("user", "Where is my order?"),
        ("assistant", "Let me check."),
    ]
    appended = [m["audio"] for m in messages if m["type"] == "input_audio_buffer.append"]
    assert appended == gap
    assert core.state is CallState.ACTIVE
    assert core.stats.reconnects == 1
    (event,) = core.session_events
    assert event == {"kind": "reconnect", "cause": "closed", "gap_ms": 400, "attempts": 1}
    # The old session's late events change nothing; the new session's audio plays.
    assert core.on_model(rt.AudioDelta("resp_1", "item_a", frame(1)), 2.8, session=1) == []
    assert of(speak(core, 3.0, session=2, response="resp_2"), SendCarrier)


def test_tool_calls_and_outputs_are_replayed_and_a_pending_follow_up_is_asked_of_the_new_session() -> None:
    tool = {"name": "lookup", "url": "https://crm.example/lookup"}
    core = make_core(tools=[tool])
    core.on_model(rt.ResponseCreated("r1"), 1.0, session=1)
    core.on_model(rt.FunctionCallDone("r1", "item_f", "call_1", "lookup", "{}"), 1.1, session=1)
    core.on_model(rt.ResponseDone("r1", "completed", None), 1.2, session=1)
    core.on_model_closed(None, None, 1.3, session=1)  # lost while the tool runs
    out = core.on_tool_result("call_1", HttpResult(0.5, 200, b"found it"), 1.5)
    assert not of(out, EndCall)
    core.on_model_connected(1.6, session=2)
    messages = sent(core.on_model(rt.SessionUpdated({}), 1.7, session=2))
    items = [m["item"] for m in messages if m["type"] == "conversation.item.create"]
    assert [i["type"] for i in items] == ["function_call", "function_call_output"]
    assert items[1] == {"type": "function_call_output", "call_id": "call_1", "output": "found it"}
    assert [m["type"] for m in messages].count("response.create") == 1


def test_reconnect_retries_with_backoff_then_gives_up_with_a_reason() -> None:
    core = make_core(reconnect_timeout_s=1.0)
    out = core.on_model_closed(1006, "reset", 10.0, session=1)
    delays = []
    now = 10.0
    session = of(out, ConnectModel)[0].session
    while True:
        now += 0.05
        out = core.on_model_connect_failed("connection refused", now, session=session)
        ends = of(out, EndCall)
        if ends:
            break
        (connect,) = of(out, ConnectModel)
        delays.append(connect.delay_s)
        session = connect.session
        now += connect.delay_s
    assert delays == sorted(delays) and delays[0] > 0
    (end,) = ends
    assert end.reason is EndReason.MODEL_ERROR
    assert "reconnect failed" in end.detail and "connection refused" in end.detail
    assert core.session_events[-1]["failed"] is True


def test_a_reconnect_that_hangs_ends_the_call_when_the_budget_is_spent() -> None:
    core = make_core(reconnect_timeout_s=2.0)
    core.on_model_closed(1011, None, 5.0, session=1)
    assert not of(core.on_tick(6.5), EndCall)
    (end,) = of(core.on_tick(8.1), EndCall)
    assert end.reason is EndReason.MODEL_ERROR and "no new session within 2 s" in end.detail


def test_handover_at_a_quiet_moment_switches_without_a_gap() -> None:
    core = make_core(session_handover_s=60.0)
    assert not of(core.on_tick(59.0), ConnectModel)
    out = core.on_tick(61.0)
    (connect,) = of(out, ConnectModel)
    assert connect.session == 2
    # Audio keeps going to the old session while the new one opens.
    appended = sent(core.on_carrier(tel.Media(frame(1)), 61.1))
    assert appended == [{"type": "input_audio_buffer.append", "audio": frame(1)}]
    (update,) = of(core.on_model_connected(61.2, session=2), SendModel)
    assert update.session == 2
    out = core.on_model(rt.SessionUpdated({}), 61.3, session=2)
    assert of(out, UseModel) == [UseModel(2)]
    assert of(out, CloseModel) == [CloseModel(1, "handed over")]
    assert not of(out, SendCarrier)  # nothing was playing: nothing to clear
    assert core.state is CallState.ACTIVE and core.stats.handovers == 1
    assert core.session_events == [{"kind": "handover", "cause": "age", "gap_ms": 0}]
    # The next one is due 60 s after the switch, not after the call's start.
    assert not of(core.on_tick(100.0), ConnectModel)
    assert of(core.on_tick(121.4), ConnectModel)


def test_handover_waits_for_the_answer_to_finish_but_not_forever() -> None:
    core = make_core(session_handover_s=60.0)
    speak(core, 59.5)  # a one-second answer is playing
    assert not of(core.on_tick(60.1), ConnectModel)  # not quiet: not even opened yet
    core.on_model(rt.ResponseDone("resp_1", "completed", None), 60.2, session=1)
    out = core.on_tick(60.6)  # done and played out
    assert of(out, ConnectModel)
    core.on_model_connected(60.7, session=2)
    speak(core, 60.8, response="resp_2")  # a new answer starts before the new session is ready
    out = core.on_model(rt.SessionUpdated({}), 60.9, session=2)
    assert not of(out, UseModel)  # waits for quiet
    late = 60.0 + 60.0 + HANDOVER_LATEST_S
    out = core.on_tick(late + 0.1)  # too late to wait: switch, clearing what plays
    assert of(out, UseModel) == [UseModel(2)]
    assert [json.loads(a.frame)["event"] for a in of(out, SendCarrier)] == ["clear"]
    assert core.session_events[-1]["cause"] == "age_forced"


def test_a_lost_session_during_a_handover_is_replaced_by_the_ready_one_at_once() -> None:
    core = make_core(session_handover_s=60.0)
    speak(core, 60.0)
    core.on_model(rt.ResponseDone("resp_1", "completed", None), 60.1, session=1)
    core.on_tick(61.5)
    core.on_model_connected(61.6, session=2)
    speak(core, 61.7, response="resp_2")
    core.on_model(rt.SessionUpdated({}), 61.8, session=2)  # ready, but not quiet
    out = core.on_model_closed(1011, None, 62.0, session=1)
    assert of(out, UseModel)[-1] == UseModel(2)
    assert not of(out, ConnectModel)  # no third session needed
    assert core.state is CallState.ACTIVE and core.stats.reconnects == 1


def test_usage_of_every_session_is_billed() -> None:
    core = make_core(session_handover_s=60.0)
    usage = {"input_tokens": 100, "output_tokens": 50, "input_token_details": {"text_tokens": 100}}
    core.on_model(rt.ResponseDone("r1", "completed", usage), 10.0, session=1)
    core.on_tick(61.0)
    core.on_model_connected(61.1, session=2)
    core.on_model(rt.SessionUpdated({}), 61.2, session=2)
    core.on_model(rt.ResponseDone("r_late", "completed", usage), 61.3, session=1)  # the old one, late
    core.on_model(rt.ResponseDone("r2", "completed", usage), 70.0, session=2)
    assert core.meter is not None
    assert core.meter.tokens()["text_in"] == 300


def test_without_input_transcription_the_record_says_the_caller_was_not_replayed() -> None:
    core = CallCore(Settings(), "c1", 0.0, Twilio())
    core.on_carrier(tel.Start("MZ1", "CA1", "AC1", "audio/x-mulaw", 8000, 1), 0.0)
    core.on_model_connected(0.1)
    core.on_model(rt.SessionUpdated({}), 0.2)
    core.on_model_closed(1011, None, 5.0)
    core.on_model_connected(5.1, session=2)
    core.on_model(rt.SessionUpdated({}), 5.2, session=2)
    assert any("input transcription is off" in w for w in core.warnings)
