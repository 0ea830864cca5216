"""The model's events (``bridge.realtime.events.parse``) against whatever a server may send.

Contract: any text or bytes becomes a ``ModelEvent``; junk and ill-typed known events become
``Malformed``, unknown types ``Ignored``; never an exception. Well-formed events of the types
the call uses read back with exactly the values sent.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from hypothesis import given
from hypothesis import strategies as st

from bridge.realtime import events as rt
from tests.fuzz.strategies import dumps, json_values, mutated, scalars

MODEL_EVENT_TYPES = get_args(rt.ModelEvent)
KNOWN_TYPES = [
    "response.output_audio.delta", "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed", "response.created", "response.output_audio.done", "response.done",
    "conversation.item.truncated", "conversation.item.input_audio_transcription.completed",
    "response.output_audio_transcript.done", "response.function_call_arguments.done",
    "response.output_item.done", "conversation.item.done", "conversation.item.added", "conversation.item.created",
    "mcp_list_tools.in_progress", "mcp_list_tools.completed", "mcp_list_tools.failed",
    "response.mcp_call.in_progress", "response.mcp_call.completed", "response.mcp_call.failed",
    "session.updated", "session.created", "error",
]  # fmt: skip
EVENT_KEYS = [
    "type", "event_id", "response_id", "item_id", "delta", "audio_start_ms", "audio_end_ms", "response", "id",
    "status", "status_details", "reason", "error", "code", "message", "param", "usage", "transcript", "call_id",
    "name", "arguments", "item", "server_label", "session", "audio", "input", "output", "format",
]  # fmt: skip
keys = st.sampled_from(EVENT_KEYS)


@st.composite
def model_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A known event type with known fields of any type (nested with the same vocabulary)."""
    obj: dict[str, Any] = draw(st.dictionaries(keys, json_values(keys), max_size=7))
    obj["type"] = draw(st.sampled_from(KNOWN_TYPES) | scalars)
    return obj


ids = st.text(max_size=16)
ms = st.integers(min_value=0, max_value=2**53)


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[dict[str, Any], rt.ModelEvent]:
    """A valid event and what ``parse`` must make of it."""
    rid, iid, text = draw(ids), draw(ids), draw(st.text(max_size=30))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return {
            "type": "response.output_audio.delta",
            "response_id": rid,
            "item_id": iid,
            "delta": text,
        }, rt.AudioDelta(rid, iid, text)
    if kind == 1:
        n = draw(ms)
        return {"type": "input_audio_buffer.speech_started", "audio_start_ms": n, "item_id": iid}, rt.SpeechStarted(
            n, iid
        )
    if kind == 2:
        n = draw(ms)
        return {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": n, "item_id": iid}, rt.SpeechStopped(
            n, iid
        )
    if kind == 3:
        return {"type": "response.created", "response": {"id": rid, "status": "in_progress"}}, rt.ResponseCreated(rid)
    if kind == 4:
        usage = draw(st.none() | st.dictionaries(st.text(max_size=8), st.integers(0, 10**6)))
        status = draw(st.sampled_from(["completed", "cancelled", "failed", "incomplete"]))
        return (
            {"type": "response.done", "response": {"id": rid, "status": status, "usage": usage}},
            rt.ResponseDone(rid, status, usage),
        )
    if kind == 5:
        n = draw(ms)
        return {"type": "conversation.item.truncated", "item_id": iid, "audio_end_ms": n}, rt.ItemTruncated(iid, n)
    if kind == 6:
        call, name, args = draw(ids), draw(ids), draw(st.text(max_size=40))
        ev = {"type": "response.function_call_arguments.done", "response_id": rid, "item_id": iid, "call_id": call,
              "name": name, "arguments": args}  # fmt: skip
        return ev, rt.FunctionCallDone(rid, iid, call, name, args)
    if kind == 7:
        # No NaN here: it is a fine value to parse, but never equal to itself.
        session = draw(
            st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers() | st.none(), max_size=4)
        )
        return {"type": "session.updated", "session": session}, rt.SessionUpdated(session)
    if kind == 8:
        code, message = draw(st.text(min_size=1, max_size=20)), draw(st.text(max_size=30))
        return {
            "type": "error",
            "error": {"type": "invalid_request_error", "code": code, "message": message},
        }, rt.ModelError(code, message, "invalid_request_error")
    name = "x." + draw(st.text(max_size=10))
    return {"type": name, "x": text}, rt.Ignored(name)


def _check(event: object) -> None:
    assert isinstance(event, MODEL_EVENT_TYPES), f"parse returned {event!r}"
    if isinstance(event, rt.AudioDelta):
        assert all(isinstance(v, str) for v in (event.response_id, event.item_id, event.delta))
    elif isinstance(event, rt.SpeechStarted | rt.SpeechStopped | rt.ItemTruncated):
        assert isinstance(getattr(event, "audio_start_ms", getattr(event, "audio_end_ms", None)), int)
    elif isinstance(event, rt.ResponseDone):
        assert isinstance(event.response_id, str) and isinstance(event.status, str)
        assert event.usage is None or isinstance(event.usage, dict)
    elif isinstance(event, rt.FunctionCallDone):
        assert all(isinstance(v, str) for v in (event.call_id, event.name, event.arguments))
    elif isinstance(event, rt.ModelError):
        assert isinstance(event.code, str) and isinstance(event.message, str)


@given(
    message=st.text(max_size=200)
    | st.binary(max_size=200)
    | json_values().map(dumps)
    | model_shaped().map(dumps)
    | model_shaped().map(lambda v: dumps(v).encode())
    | mutated(well_formed().map(lambda pair: pair[0]))
)
def test_parse_never_raises(message: str | bytes) -> None:
    _check(rt.parse(message))


@given(pair=well_formed(), as_bytes=st.booleans())
def test_well_formed_events_read_back_as_sent(pair: tuple[dict[str, Any], rt.ModelEvent], as_bytes: bool) -> None:
    event, expected = pair
    text = json.dumps(event)
    assert rt.parse(text.encode() if as_bytes else text) == expected


@given(value=json_values())
def test_anything_but_an_object_with_a_string_type_is_malformed(value: Any) -> None:
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return
    assert isinstance(rt.parse(dumps(value)), rt.Malformed)


@given(payload=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=64))
def test_an_append_the_bridge_writes_is_json_with_the_audio_it_was_given(payload: str) -> None:
    assert json.loads(rt.append_audio(payload)) == {"type": "input_audio_buffer.append", "audio": payload}
