"""Realtime GA server events mapped to what a call needs, and client events built. Pure.

Unknown event types are not errors: the API adds new ones over time, so they map to
:class:`Ignored`. Only the fields the call uses are read; a malformed event of a known type
becomes :class:`Malformed` with a reason instead of an exception.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SessionCreated:
    pass


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    session: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class Committed:
    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    delta: str  # base64 in the session's output format


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str
    usage: dict[str, Any] | None
    reason: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputTranscript:
    item_id: str
    transcript: str
    usage: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class OutputTranscript:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class ModelError:
    code: str
    message: str
    type: str = "error"
    param: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class Malformed:
    event_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    event_type: str
    data: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


ModelEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | Committed
    | ResponseCreated
    | AudioDelta
    | AudioDone
    | ResponseDone
    | ItemTruncated
    | InputTranscript
    | OutputTranscript
    | ModelError
    | Malformed
    | Ignored
)


def _s(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise KeyError(key)
    return v


def _i(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise KeyError(key)  # json.loads accepts NaN and Infinity, int() does not
    return int(v)


def parse(text: str | bytes) -> ModelEvent:
    try:
        ev = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # too deeply nested: RecursionError
        return Malformed("?", f"not JSON: {exc}")
    if not isinstance(ev, dict):
        return Malformed("?", "event is not a JSON object")
    kind = ev.get("type")
    if not isinstance(kind, str):
        return Malformed("?", "event without a type")
    try:
        return _map(kind, ev)
    except (KeyError, TypeError, AttributeError) as exc:
        return Malformed(kind, f"missing or ill-typed field {exc}")


def _map(kind: str, ev: dict[str, Any]) -> ModelEvent:
    # The audio delta is by far the most frequent event: test it first.
    if kind == "response.output_audio.delta":
        return AudioDelta(_s(ev, "response_id"), _s(ev, "item_id"), _s(ev, "delta"))
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(_i(ev, "audio_start_ms"), _s(ev, "item_id"))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(_i(ev, "audio_end_ms"), _s(ev, "item_id"))
    if kind == "input_audio_buffer.committed":
        return Committed(_s(ev, "item_id"))
    if kind == "response.created":
        return ResponseCreated(_s(ev["response"], "id"))
    if kind == "response.output_audio.done":
        return AudioDone(_s(ev, "response_id"), _s(ev, "item_id"))
    if kind == "response.done":
        resp = ev["response"]
        details = resp.get("status_details") or {}
        error = details.get("error") if isinstance(details, dict) else None
        usage = resp.get("usage")
        return ResponseDone(
            _s(resp, "id"),
            str(resp.get("status", "")),
            usage if isinstance(usage, dict) else None,
            details.get("reason") if isinstance(details, dict) else None,
            error.get("code") if isinstance(error, dict) else None,
        )
    if kind == "conversation.item.truncated":
        return ItemTruncated(_s(ev, "item_id"), _i(ev, "audio_end_ms"))
    if kind == "conversation.item.input_audio_transcription.completed":
        usage = ev.get("usage")
        return InputTranscript(
            _s(ev, "item_id"), _s(ev, "transcript"), usage if isinstance(usage, dict) else None
        )
    if kind == "response.output_audio_transcript.done":
        return OutputTranscript(_s(ev, "item_id"), _s(ev, "transcript"))
    if kind == "session.updated":
        session = ev["session"]
        if not isinstance(session, dict):
            raise TypeError("session")
        return SessionUpdated(session)
    if kind == "session.created":
        return SessionCreated()
    if kind == "error":
        err = ev.get("error") or {}
        if not isinstance(err, dict):
            err = {}
        return ModelError(
            code=str(err.get("code") or err.get("type") or "unknown"),
            message=str(err.get("message") or ""),
            type=str(err.get("type") or "error"),
            param=err.get("param") if isinstance(err.get("param"), str) else None,
            event_id=err.get("event_id") if isinstance(err.get("event_id"), str) else None,
        )
    return Ignored(kind, ev)


# --- client events -----------------------------------------------------------------------

_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'


def append_audio(payload_b64: str) -> str:
    """Hot path: one string concatenation, no JSON encoder (base64 needs no escaping)."""
    return _APPEND_HEAD + payload_b64 + '"}'


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def truncate(item_id: str, audio_end_ms: int, event_id: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    }
    if event_id:
        ev["event_id"] = event_id
    return ev


def cancel(response_id: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "response.cancel"}
    if response_id:
        ev["response_id"] = response_id
    return ev


def commit() -> dict[str, Any]:
    return {"type": "input_audio_buffer.commit"}


def response_create() -> dict[str, Any]:
    return {"type": "response.create"}


def user_text(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }
