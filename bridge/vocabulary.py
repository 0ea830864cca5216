"""The words a call is described in, each defined once.

States, turns, end reasons, note kinds, token kinds and WebSocket close codes are used by the
call core, the records, the metrics, the logs and the admin port alike; they live here so a
record, a metric label and a log line can never spell the same thing two ways. Pure: enums only.
"""

from __future__ import annotations

import enum

__all__ = [
    "NORMAL_END_REASONS",
    "CallState",
    "CloseCode",
    "Direction",
    "EndReason",
    "NoteKind",
    "Side",
    "TokenKind",
    "ToolOutcome",
    "Turn",
]


class CallState(enum.StrEnum):
    """Where a call is in its life (see :mod:`bridge.call.core` for the transitions)."""

    CONNECTING = "connecting"
    """Carrier WebSocket open, waiting for the stream's ``start``."""
    STARTING = "starting"
    """``start`` received, the model session is opening; caller audio is kept meanwhile."""
    ACTIVE = "active"
    """Audio flows both ways."""
    RECONNECTING = "reconnecting"
    """The model socket was lost mid-call; a new session is being opened, the caller stays on."""
    CLOSING = "closing"
    """The end was decided; both sockets are being closed."""
    ENDED = "ended"
    """Closed normally (a caller, the agent, an operator or a drain ended it)."""
    FAILED = "failed"
    """Closed by an error."""


class Turn(enum.StrEnum):
    """Who holds the floor, a sub-state of ``active``."""

    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    ASSISTANT_SPEAKING = "assistant_speaking"


class EndReason(enum.StrEnum):
    """Why a call ended: in records, the ``outcome`` metric label, logs and ``bridge cdr``."""

    CALLER_HANGUP = "caller_hangup"
    """The carrier ended the stream (``stop`` or the media socket closed): the caller hung up."""
    AGENT_HANGUP = "agent_hangup"
    """The model called the ``end_call`` tool and the caller heard its last words."""
    TRANSFERRED = "transferred"
    """The model called ``transfer_call`` and the carrier moved the caller to a configured target."""
    MODEL_ERROR = "model_error"
    """The Realtime session failed and could not be replaced (connect error, fatal error event)."""
    OPERATOR = "operator"
    """An operator ended it (``DELETE /sessions/{id}``)."""
    TIMEOUT = "timeout"
    """A limit ran out: maximum call length, no media from the carrier, no answer to a ping."""
    WORKER_LOST = "worker_lost"
    """The worker process died with the call live; set by the supervisor from the last update."""
    DRAIN = "drain"
    """The worker shut down (SIGTERM drain) and the call outlived the drain period."""
    BRIDGE_ERROR = "bridge_error"
    """A bug or unexpected failure in the bridge itself."""
    PROTOCOL_ERROR = "protocol_error"
    """The carrier sent something the bridge cannot work with (bad ``start``, oversized message)."""


#: End reasons of a call that ended the way calls are meant to end (state ``ended``, not ``failed``).
NORMAL_END_REASONS: frozenset[EndReason] = frozenset(
    {
        EndReason.CALLER_HANGUP,
        EndReason.AGENT_HANGUP,
        EndReason.TRANSFERRED,
        EndReason.OPERATOR,
        EndReason.DRAIN,
    }
)


class CloseCode(enum.IntEnum):
    """WebSocket close codes the bridge sends (RFC 6455, section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


class Side(enum.StrEnum):
    """The two sockets of a call."""

    CARRIER = "carrier"
    MODEL = "model"


class Direction(enum.StrEnum):
    """Which way audio flows (the ``direction`` metric label)."""

    TO_MODEL = "to_model"
    TO_CARRIER = "to_carrier"


class TokenKind(enum.StrEnum):
    """Usage buckets, each billed at one price.

    The input buckets are disjoint: ``text_in`` is the uncached text input and ``cached_text_in``
    the cached part, so together they are the API's ``input_token_details.text_tokens``.
    ``transcription_audio_ms`` is the duration of duration-billed transcription, in milliseconds.
    """

    TEXT_IN = "text_in"
    CACHED_TEXT_IN = "cached_text_in"
    AUDIO_IN = "audio_in"
    CACHED_AUDIO_IN = "cached_audio_in"
    IMAGE_IN = "image_in"
    TEXT_OUT = "text_out"
    AUDIO_OUT = "audio_out"
    TRANSCRIPTION_TEXT_IN = "transcription_text_in"
    TRANSCRIPTION_AUDIO_IN = "transcription_audio_in"
    TRANSCRIPTION_TEXT_OUT = "transcription_text_out"
    TRANSCRIPTION_AUDIO_MS = "transcription_audio_ms"


class NoteKind(enum.StrEnum):
    """What the core reports to the shell for logging, metrics and records (never a decision)."""

    STATE = "state"
    CARRIER_ERROR = "carrier_error"
    AUDIO_ERROR = "audio_error"
    MODEL_PROTOCOL_ERROR = "model_protocol_error"
    MODEL_ERROR = "model_error"
    PROFILE_FALLBACK = "profile_fallback"
    RESPONSE_DONE = "response_done"
    RESPONSE_LATENCY = "response_latency"
    BARGE_IN = "barge_in"
    DTMF = "dtmf"
    TRANSCRIPT = "transcript"
    TRUNCATED = "truncated"
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"
    TOOL_CALL = "tool_call"
    """The model called a tool; the call is being made (or refused at once)."""
    TOOL_RESULT = "tool_result"
    """A tool call finished: its outcome and duration."""
    MCP = "mcp"
    """The Realtime API listed or called an MCP server's tools."""
    RECONNECT = "reconnect"
    """The model session was lost (phase lost), replaced (restored) or could not be (failed)."""
    HANDOVER = "handover"
    """The model session was replaced before it aged out (phase started, done, failed)."""
    SESSION_LOOKUP = "session_lookup"
    """The per-call session lookup answered and changed the session."""


class ToolOutcome(enum.StrEnum):
    """How a tool call ended (the ``outcome`` label of ``bridge_tool_calls_total``)."""

    OK = "ok"
    """The tool answered 2xx; its body went to the model."""
    INVALID_ARGUMENTS = "invalid_arguments"
    """The model's arguments were not JSON or broke the tool's schema; nothing was sent."""
    UNKNOWN_TOOL = "unknown_tool"
    """The model named a tool this call does not have."""
    HTTP_ERROR = "http_error"
    """The tool answered with a non-2xx status."""
    TIMEOUT = "timeout"
    """No answer within the tool's ``timeout_s``."""
    UNREACHABLE = "unreachable"
    """The connection failed (refused, DNS, TLS, reset)."""
    CANCELLED = "cancelled"
    """The caller interrupted the response that made the call, or the call ended."""
