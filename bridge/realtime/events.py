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
class FunctionCallDone:
    """The model finished a function call's arguments (``response.function_call_arguments.done``,
    or the ``function_call`` item of ``response.output_item.done``; the core dedupes by call_id)."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it: untrusted


@dataclass(frozen=True, slots=True)
class McpItem:
    """An MCP item the API created (``mcp_list_tools`` or ``mcp_call``): names the server and tool."""

    item_id: str
    kind: str  # "mcp_list_tools" | "mcp_call"
    server_label: str
    name: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class McpProgress:
    """``mcp_list_tools.*`` and ``response.mcp_call.*`` status events."""

    item_id: str
    kind: str  # "list_tools" | "call"
    status: str  # "in_progress" | "completed" | "failed"


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
    | FunctionCallDone
    | McpItem
    | McpProgress
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
    if kind == "response.function_call_arguments.done":
        return FunctionCallDone(
            _s(ev, "response_id"), _s(ev, "item_id"), _s(ev, "call_id"), _s(ev, "name"), _s(ev, "arguments")
        )
    if kind in _ITEM_EVENTS:
        return _item(kind, ev)
    if kind in _MCP_PROGRESS:
        what, status = _MCP_PROGRESS[kind]
        return McpProgress(_s(ev, "item_id"), what, status)
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


_ITEM_EVENTS = frozenset(
    {"response.output_item.done", "conversation.item.done", "conversation.item.added", "conversation.item.created"}
)
_MCP_PROGRESS = {
    "mcp_list_tools.in_progress": ("list_tools", "in_progress"),
    "mcp_list_tools.completed": ("list_tools", "completed"),
    "mcp_list_tools.failed": ("list_tools", "failed"),
    "response.mcp_call.in_progress": ("call", "in_progress"),
    "response.mcp_call.completed": ("call", "completed"),
    "response.mcp_call.failed": ("call", "failed"),
}


def _item(kind: str, ev: dict[str, Any]) -> ModelEvent:
    """The items a call cares about: function calls (done) and MCP items; others are ignored."""
    item = ev["item"]
    if not isinstance(item, dict):
        raise TypeError("item")
    item_type = item.get("type")
    if item_type == "function_call" and kind == "response.output_item.done":
        return FunctionCallDone(
            _s(ev, "response_id"), _s(item, "id"), _s(item, "call_id"), _s(item, "name"), _s(item, "arguments")
        )
    if item_type in ("mcp_list_tools", "mcp_call"):
        error = item.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        name = item.get("name")
        return McpItem(
            _s(item, "id"),
            item_type,
            _s(item, "server_label"),
            name if isinstance(name, str) else None,
            message if isinstance(message, str) else (str(error) if error else None),
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


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    """The answer to one of the model's function calls."""
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }
