"""Realtime GA server events mapped to call events; client events validated against the SDK."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.realtime import events as ev

try:
    from tests.openai_types import validate_client, validate_server
except ModuleNotFoundError:  # bare `pytest` does not put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.openai_types import validate_client, validate_server

# Realistic GA server events (https://platform.openai.com/docs/api-reference/realtime-server-events;
# shapes checked against the SDK below).
SESSION = {
    "type": "realtime",
    "object": "realtime.session",
    "id": "sess_C9x",
    "model": "gpt-realtime",
    "output_modalities": ["audio"],
    "instructions": "Be brief.",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0},
    },
}
USAGE = {
    "total_tokens": 300,
    "input_tokens": 200,
    "output_tokens": 100,
    "input_token_details": {"text_tokens": 50, "audio_tokens": 150, "cached_tokens": 0},
    "output_token_details": {"text_tokens": 20, "audio_tokens": 80},
}

SERVER_EVENTS: dict[str, dict[str, Any]] = {
    "session.created": {"type": "session.created", "event_id": "event_1", "session": SESSION},
    "session.updated": {"type": "session.updated", "event_id": "event_2", "session": SESSION},
    "speech_started": {
        "type": "input_audio_buffer.speech_started",
        "event_id": "event_3",
        "audio_start_ms": 1000,
        "item_id": "item_in1",
    },
    "speech_stopped": {
        "type": "input_audio_buffer.speech_stopped",
        "event_id": "event_4",
        "audio_end_ms": 2000,
        "item_id": "item_in1",
    },
    "committed": {
        "type": "input_audio_buffer.committed",
        "event_id": "event_5",
        "previous_item_id": None,
        "item_id": "item_in1",
    },
    "response.created": {
        "type": "response.created",
        "event_id": "event_6",
        "response": {"object": "realtime.response", "id": "resp_1", "status": "in_progress", "output": []},
    },
    "audio.delta": {
        "type": "response.output_audio.delta",
        "event_id": "event_7",
        "response_id": "resp_1",
        "item_id": "item_out1",
        "output_index": 0,
        "content_index": 0,
        "delta": "/////w==",
    },
    "audio.done": {
        "type": "response.output_audio.done",
        "event_id": "event_8",
        "response_id": "resp_1",
        "item_id": "item_out1",
        "output_index": 0,
        "content_index": 0,
    },
    "transcript.done": {
        "type": "response.output_audio_transcript.done",
        "event_id": "event_9",
        "response_id": "resp_1",
        "item_id": "item_out1",
        "output_index": 0,
        "content_index": 0,
        "transcript": "Hello, how can I help?",
    },
    "response.done": {
        "type": "response.done",
        "event_id": "event_10",
        "response": {
            "object": "realtime.response",
            "id": "resp_1",
            "status": "completed",
            "status_details": None,
            "output": [],
            "usage": USAGE,
        },
    },
    "truncated": {
        "type": "conversation.item.truncated",
        "event_id": "event_11",
        "item_id": "item_out1",
        "content_index": 0,
        "audio_end_ms": 1500,
    },
    "input_transcript": {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": "event_12",
        "item_id": "item_in1",
        "content_index": 0,
        "transcript": "I'd like to book a table.",
        "usage": {
            "type": "tokens",
            "input_tokens": 30,
            "output_tokens": 8,
            "total_tokens": 38,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 30},
        },
    },
    "error": {
        "type": "error",
        "event_id": "event_13",
        "error": {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "message": "Invalid value: 'x'.",
            "param": "session.audio.input.format.type",
            "event_id": "client_evt_7",
        },
    },
}


def _parse(obj: dict[str, Any]) -> ev.ModelEvent:
    return ev.parse(json.dumps(obj))


@pytest.mark.parametrize("name", sorted(SERVER_EVENTS))
def test_fixtures_are_valid_ga_events(name: str) -> None:
    validate_server(SERVER_EVENTS[name])


# --- server events ------------------------------------------------------------------------


def test_session_created() -> None:
    assert _parse(SERVER_EVENTS["session.created"]) == ev.SessionCreated()


def test_session_updated_carries_the_session() -> None:
    got = _parse(SERVER_EVENTS["session.updated"])
    assert got == ev.SessionUpdated(session=SESSION)


def test_speech_started() -> None:
    assert _parse(SERVER_EVENTS["speech_started"]) == ev.SpeechStarted(audio_start_ms=1000, item_id="item_in1")


def test_speech_stopped() -> None:
    assert _parse(SERVER_EVENTS["speech_stopped"]) == ev.SpeechStopped(audio_end_ms=2000, item_id="item_in1")


def test_committed() -> None:
    assert _parse(SERVER_EVENTS["committed"]) == ev.Committed(item_id="item_in1")


def test_response_created() -> None:
    assert _parse(SERVER_EVENTS["response.created"]) == ev.ResponseCreated(response_id="resp_1")


def test_audio_delta() -> None:
    got = _parse(SERVER_EVENTS["audio.delta"])
    assert got == ev.AudioDelta(response_id="resp_1", item_id="item_out1", delta="/////w==")


def test_audio_delta_from_bytes() -> None:
    got = ev.parse(json.dumps(SERVER_EVENTS["audio.delta"]).encode())
    assert isinstance(got, ev.AudioDelta)


def test_audio_done() -> None:
    assert _parse(SERVER_EVENTS["audio.done"]) == ev.AudioDone(response_id="resp_1", item_id="item_out1")


def test_output_transcript() -> None:
    got = _parse(SERVER_EVENTS["transcript.done"])
    assert got == ev.OutputTranscript(item_id="item_out1", transcript="Hello, how can I help?")


def test_response_done_completed_with_usage() -> None:
    got = _parse(SERVER_EVENTS["response.done"])
    assert got == ev.ResponseDone(response_id="resp_1", status="completed", usage=USAGE, reason=None, error_code=None)


def test_response_done_cancelled_by_turn_detection() -> None:
    raw = {
        "type": "response.done",
        "event_id": "event_20",
        "response": {
            "object": "realtime.response",
            "id": "resp_2",
            "status": "cancelled",
            "status_details": {"type": "cancelled", "reason": "turn_detected"},
            "output": [],
            "usage": USAGE,
        },
    }
    validate_server(raw)
    got = _parse(raw)
    assert isinstance(got, ev.ResponseDone)
    assert (got.status, got.reason, got.error_code) == ("cancelled", "turn_detected", None)


def test_response_done_failed_with_error_code() -> None:
    raw = {
        "type": "response.done",
        "event_id": "event_21",
        "response": {
            "object": "realtime.response",
            "id": "resp_3",
            "status": "failed",
            "status_details": {"type": "failed", "error": {"type": "server_error", "code": "rate_limit_exceeded"}},
            "output": [],
            "usage": None,
        },
    }
    validate_server(raw)
    got = _parse(raw)
    assert got == ev.ResponseDone("resp_3", "failed", None, None, "rate_limit_exceeded")


def test_item_truncated() -> None:
    assert _parse(SERVER_EVENTS["truncated"]) == ev.ItemTruncated(item_id="item_out1", audio_end_ms=1500)


def test_input_transcript() -> None:
    got = _parse(SERVER_EVENTS["input_transcript"])
    assert isinstance(got, ev.InputTranscript)
    assert got.item_id == "item_in1"
    assert got.transcript == "I'd like to book a table."
    assert got.usage == SERVER_EVENTS["input_transcript"]["usage"]


def test_input_transcript_without_usage() -> None:
    raw = dict(SERVER_EVENTS["input_transcript"])
    del raw["usage"]
    got = _parse(raw)
    assert isinstance(got, ev.InputTranscript)
    assert got.usage is None


def test_error_event() -> None:
    got = _parse(SERVER_EVENTS["error"])
    assert got == ev.ModelError(
        code="invalid_value",
        message="Invalid value: 'x'.",
        type="invalid_request_error",
        param="session.audio.input.format.type",
        event_id="client_evt_7",
    )


def test_error_event_with_null_event_id_and_param() -> None:
    raw = {
        "type": "error",
        "event_id": "event_30",
        "error": {
            "type": "invalid_request_error",
            "code": "response_cancel_not_active",
            "message": "Cancellation failed: no active response found",
            "param": None,
            "event_id": None,
        },
    }
    validate_server(raw)
    got = _parse(raw)
    assert isinstance(got, ev.ModelError)
    assert got.code == "response_cancel_not_active"
    assert got.message == "Cancellation failed: no active response found"
    assert got.param is None
    assert got.event_id is None


def test_error_event_without_code_uses_type() -> None:
    got = _parse({"type": "error", "error": {"type": "server_error", "message": "boom"}})
    assert isinstance(got, ev.ModelError)
    assert (got.code, got.type, got.message) == ("server_error", "server_error", "boom")


@pytest.mark.parametrize("error", [None, "oops", [], {}])
def test_error_event_with_unusable_body_is_still_an_error(error: Any) -> None:
    got = _parse({"type": "error", "error": error})
    assert isinstance(got, ev.ModelError)
    assert got.code == "unknown"


# --- unknown and malformed ----------------------------------------------------------------


def test_items_other_than_function_calls_and_mcp_are_ignored() -> None:
    raw = {"type": "conversation.item.added", "event_id": "e", "item": {"id": "item_1", "type": "message"}}
    got = _parse(raw)
    assert isinstance(got, ev.Ignored) and got.event_type == "conversation.item.added"


@pytest.mark.parametrize(
    "kind",
    [
        "rate_limits.updated",
        "response.output_audio_transcript.delta",
        "input_audio_buffer.timeout_triggered",
        "some.future.event",
        "response.audio.delta",  # beta name: not ours on GA
    ],
)
def test_unknown_types_are_ignored(kind: str) -> None:
    raw = {"type": kind, "event_id": "event_x", "whatever": [1, 2]}
    got = _parse(raw)
    assert isinstance(got, ev.Ignored)
    assert got.event_type == kind
    assert got.data == raw


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i"}, "response.output_audio.delta"),
        (
            {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": 5},
            "response.output_audio.delta",
        ),
        ({"type": "input_audio_buffer.speech_started", "item_id": "i"}, "input_audio_buffer.speech_started"),
        (
            {"type": "input_audio_buffer.speech_started", "item_id": "i", "audio_start_ms": "10"},
            "input_audio_buffer.speech_started",
        ),
        (
            {"type": "input_audio_buffer.speech_started", "item_id": "i", "audio_start_ms": True},
            "input_audio_buffer.speech_started",
        ),
        ({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 5}, "input_audio_buffer.speech_stopped"),
        ({"type": "input_audio_buffer.committed"}, "input_audio_buffer.committed"),
        ({"type": "response.created"}, "response.created"),
        ({"type": "response.created", "response": "resp_1"}, "response.created"),
        ({"type": "response.created", "response": {"id": None}}, "response.created"),
        ({"type": "response.done", "response": {}}, "response.done"),
        ({"type": "response.done", "response": None}, "response.done"),
        ({"type": "response.done", "response": []}, "response.done"),
        ({"type": "response.output_audio.done", "response_id": "r"}, "response.output_audio.done"),
        ({"type": "conversation.item.truncated", "item_id": "i"}, "conversation.item.truncated"),
        (
            {"type": "conversation.item.input_audio_transcription.completed", "item_id": "i"},
            "conversation.item.input_audio_transcription.completed",
        ),
        (
            {"type": "response.output_audio_transcript.done", "item_id": "i", "transcript": None},
            "response.output_audio_transcript.done",
        ),
        ({"type": "session.updated"}, "session.updated"),
        ({"type": "session.updated", "session": "x"}, "session.updated"),
    ],
)
def test_malformed_known_types(raw: dict[str, Any], kind: str) -> None:
    got = _parse(raw)
    assert isinstance(got, ev.Malformed), got
    assert got.event_type == kind
    assert got.reason


def test_float_milliseconds_are_accepted_as_ints() -> None:
    got = _parse({"type": "input_audio_buffer.speech_started", "item_id": "i", "audio_start_ms": 1000.0})
    assert got == ev.SpeechStarted(1000, "i")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_malformed_not_a_crash(number: str) -> None:
    text = '{"type":"input_audio_buffer.speech_started","item_id":"i","audio_start_ms":' + number + "}"
    got = ev.parse(text)
    assert isinstance(got, ev.Malformed)
    assert got.event_type == "input_audio_buffer.speech_started"


@pytest.mark.parametrize(
    "text",
    ["", "{", "not json", b"\xff\xfe", "[" * 100_000],
    ids=["empty", "open-brace", "words", "bad-utf8", "deeply-nested"],
)
def test_not_json(text: str | bytes) -> None:
    got = ev.parse(text)
    assert isinstance(got, ev.Malformed)
    assert got.event_type == "?"


@pytest.mark.parametrize("text", ["[]", "1", '"error"', "null"])
def test_not_an_object(text: str) -> None:
    got = ev.parse(text)
    assert isinstance(got, ev.Malformed)
    assert "object" in got.reason


@pytest.mark.parametrize("text", ["{}", '{"type": null}', '{"type": 5}'])
def test_without_type(text: str) -> None:
    got = ev.parse(text)
    assert isinstance(got, ev.Malformed)
    assert "type" in got.reason


# --- client events ------------------------------------------------------------------------


def test_append_audio_is_byte_identical_to_json_dumps() -> None:
    payload = "/////w==" * 20 + "AbC+/9=="
    expected = json.dumps({"type": "input_audio_buffer.append", "audio": payload}, separators=(",", ":"))
    assert ev.append_audio(payload) == expected
    assert json.loads(ev.append_audio(payload)) == {"type": "input_audio_buffer.append", "audio": payload}


def test_append_audio_validates() -> None:
    model = validate_client(json.loads(ev.append_audio("AAAA")))
    assert model.type == "input_audio_buffer.append"
    assert model.audio == "AAAA"


def test_append_audio_empty_payload_is_still_json() -> None:
    assert json.loads(ev.append_audio("")) == {"type": "input_audio_buffer.append", "audio": ""}


def test_dumps_is_compact_json() -> None:
    text = ev.dumps(ev.commit())
    assert text == '{"type":"input_audio_buffer.commit"}'


def test_truncate() -> None:
    event = ev.truncate("item_out1", 1500)
    assert event == {
        "type": "conversation.item.truncate",
        "item_id": "item_out1",
        "content_index": 0,
        "audio_end_ms": 1500,
    }
    model = validate_client(json.loads(ev.dumps(event)))
    assert (model.item_id, model.content_index, model.audio_end_ms) == ("item_out1", 0, 1500)


def test_truncate_with_event_id() -> None:
    event = ev.truncate("item_out1", 0, event_id="evt_trunc_1")
    assert event["event_id"] == "evt_trunc_1"
    assert validate_client(event).event_id == "evt_trunc_1"


def test_cancel() -> None:
    assert ev.cancel() == {"type": "response.cancel"}
    validate_client(ev.cancel())
    event = ev.cancel("resp_1")
    assert event == {"type": "response.cancel", "response_id": "resp_1"}
    assert validate_client(event).response_id == "resp_1"


def test_commit() -> None:
    assert ev.commit() == {"type": "input_audio_buffer.commit"}
    assert validate_client(ev.commit()).type == "input_audio_buffer.commit"


def test_response_create() -> None:
    assert ev.response_create() == {"type": "response.create"}
    assert validate_client(ev.response_create()).type == "response.create"


def test_user_text() -> None:
    text = 'The caller pressed "1" & said <hello>'
    event = ev.user_text(text)
    model = validate_client(json.loads(ev.dumps(event)))
    assert model.type == "conversation.item.create"
    assert model.item.type == "message"
    assert model.item.role == "user"
    assert model.item.content[0].type == "input_text"
    assert model.item.content[0].text == text


def test_builders_return_fresh_dicts() -> None:
    a = ev.commit()
    a["event_id"] = "x"
    assert ev.commit() == {"type": "input_audio_buffer.commit"}
