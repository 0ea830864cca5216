"""A simulated OpenAI Realtime session (GA protocol), as pure protocol logic.

The simulator is the upstream for the demo, the tests and the load tests, so it follows the GA
protocol (https://platform.openai.com/docs/api-reference/realtime-server-events, and the ``openai``
package's ``types/realtime``) and the behaviour seen in live captures rather than what would be
convenient: strict ``session.update`` validation (``session.type`` required, beta keys rejected as
``unknown_parameter``), server VAD with ``speech_started`` / ``speech_stopped`` / ``committed``,
barge-in cancellation, audio deltas faster than real time, ``conversation.item.truncate`` with the
real API's error text, ``usage`` that re-bills the whole conversation on every response with the
earlier prefix counted as cached, function and MCP tool calls on deterministic triggers
(:mod:`bridge.testing.simulator_tools`), conversation items a client seeds after a reconnect, and
faults a reconnecting client must survive (a dropped socket, ``session_expired``).

Nothing here touches sockets, trio or clocks: the caller passes ``now`` (seconds, any monotonic
origin) to :meth:`SimulatedSession.connect`, :meth:`~SimulatedSession.receive` and
:meth:`~SimulatedSession.tick`, and asks :meth:`~SimulatedSession.next_deadline` when to call
``tick`` again. Every method returns server events as JSON strings, in wire order. How a fault
is carried out on the wire (close code, TCP reset, silence) is the server's job: the session only
says when (:attr:`SimulatedSession.fault`).

Simplifications (documented, deliberate): the VAD is an energy detector, not a model; semantic_vad
uses the same detector with a silence window chosen from ``eagerness``; ``idle_timeout_ms`` is
accepted but never fires; the model calls tools only when a trigger says so (never on its own, so
``tool_choice: "required"`` does not force a call); MCP approval requests are not simulated;
prompt caching is a longest-common-prefix model in 64-token steps (the granularity seen in real
``cached_tokens``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import re
import string
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from bridge.testing.simulator_audio import (
    PCM,
    PCM_RATE,
    PCMA,
    PCMU,
    assistant_audio,
    bytes_per_ms,
    dbfs_to_rms,
    decode_to_pcm16,
    design_lowpass,
    loop_slice,
    sample_rate,
    threshold_to_rms,
)
from bridge.testing.simulator_tools import (
    DEFAULT_MCP_FAILURE_REPLY,
    DEFAULT_TOOL_REPLY,
    McpCall,
    McpListing,
    SkippedCall,
    ToolCall,
    ToolCallRecord,
    ToolOutputRecord,
    ToolTrigger,
    mcp_identity,
    mcp_listed_tools,
    validate_tool_choice,
    validate_tools,
    why_not_callable,
)
from bridge.testing.simulator_validation import (
    AUDIO_INPUT_KEYS,
    AUDIO_OUTPUT_KEYS,
    JSON,
    RESPONSE_KEYS,
    SEMANTIC_SILENCE_MS,
    SESSION_KEYS,
    TRANSCRIPTION_KEYS,
    VOICES,
    ClientError,
    check_keys,
    error_event,
    error_payload,
    invalid_type,
    is_int,
    is_number,
    missing,
    normalize_turn_detection,
    require_obj,
    validate_format,
    validate_max_tokens,
    validate_modalities,
    validate_turn_detection,
    validate_voice,
)

DEFAULT_INSTRUCTIONS: Final = (
    "You are a helpful, witty, and friendly AI. Act like a human, but remember that you aren't a "
    "human and that you can't do human things in the real world. Your voice and personality should "
    "be warm and engaging, with a lively and playful tone. Talk quickly."
)

# What the bundled assistant recording is made to "say": the transcript deltas carry these words.
DEFAULT_ASSISTANT_TRANSCRIPT: Final = (
    "Thanks for calling. I can help you with that. Could you tell me your order number, please?"
)
DEFAULT_USER_TRANSCRIPT: Final = "Hi, I'd like to check on the status of my order."

# The client event types the GA endpoint accepts, in the order the real error message lists them.
CLIENT_EVENT_TYPES: Final = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)

DROP_MODES: Final = ("close", "reset", "silent")

_VAD_WINDOW_MS: Final = 20
_VAD_MIN_SPEECH_MS: Final = 60
_COMMIT_MIN_MS: Final = 100
_CACHE_GRANULARITY: Final = 64
_ARGUMENT_DELTA_CHARS: Final = 16  # the real API streams arguments a few tokens per delta

# Token accounting (https://developers.openai.com/api/docs/guides/realtime-costs): audio in 10 tokens/s,
# audio out 20 tokens/s, text about 4 characters per token.
_IN_AUDIO_MS_PER_TOKEN: Final = 100.0
_OUT_AUDIO_MS_PER_TOKEN: Final = 50.0
_CHARS_PER_TOKEN: Final = 4


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """Knobs for the simulator; the defaults behave like the real API for a phone bridge."""

    speed: float = 4.0
    """How much faster than real time the audio deltas are produced (``math.inf``: all at once)."""
    response_audio_ms: int | None = None
    """Length of every spoken answer; None plays the whole bundled recording (6.46 s), longer loops it."""
    delta_ms: int = 100
    """Audio carried by one ``response.output_audio.delta``."""
    response_delay_ms: float = 0.0
    """Wait between ``response.created`` and the first delta (the model's thinking time)."""
    vad_threshold_dbfs: float | None = None
    """Fixed VAD start level; None maps the session's ``threshold`` (0..1) onto -60..-20 dBFS."""
    seed: int | None = None
    """Seed for the ids, so a test run is reproducible."""
    max_session_s: float = 3600.0
    """The session ends with ``session_expired`` after this long (60 min on OpenAI, 30 on Azure)."""
    assistant_transcript: str = DEFAULT_ASSISTANT_TRANSCRIPT
    user_transcript: str = DEFAULT_USER_TRANSCRIPT
    record_events: bool = True
    """Keep every event in/out in ``received_events`` / ``emitted_events`` (turn off for load tests)."""
    record_audio: bool = True
    """Keep every appended audio byte in ``appended_audio``."""
    ping_interval_s: float = 20.0
    """Server-side WebSocket ping period (the real API pings about every 20 s); 0 disables."""

    # -- tools
    tool_triggers: tuple[ToolTrigger, ...] = ()
    """When the simulated model calls tools (see :class:`~bridge.testing.simulator_tools.ToolTrigger`)."""
    tool_reply: str = DEFAULT_TOOL_REPLY
    """Transcript of the answer that follows ``function_call_output`` items; ``{output}`` is their text."""
    mcp_list_fail: bool = False
    """Listing a declared MCP server's tools fails (``mcp_list_tools.failed``); its calls are skipped."""

    # -- faults (each applies to the sessions ``fault_sessions`` selects)
    drop_after_s: float | None = None
    """Drop the session's socket this long after it opened, as ``drop_mode`` says."""
    drop_mode: str = "close"
    """``close``: close frame 1011; ``reset``: TCP reset, no close frame; ``silent``: stop sending
    anything and stop answering pings, so the peer's keep-alive times out."""
    expire_after_s: float | None = None
    """Send ``session_expired`` (worded as at ``max_session_s``) this long after opening, then close."""
    fault_sessions: int | None = None
    """Faults hit only the first K sessions this server opens (None: every session)."""
    refuse_connections: int = 0
    """Refuse the first K connection attempts (HTTP ``refuse_status`` on the handshake), counted
    over the server's lifetime, so reconnect retries can be seen."""
    refuse_status: int = 503

    def __post_init__(self) -> None:
        if self.drop_mode not in DROP_MODES:
            raise ValueError(f"drop_mode must be one of {', '.join(DROP_MODES)}, got {self.drop_mode!r}")
        for name in ("drop_after_s", "expire_after_s"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be >= 0")
        if self.fault_sessions is not None and self.fault_sessions < 0:
            raise ValueError("fault_sessions must be >= 0")
        if self.refuse_connections < 0:
            raise ValueError("refuse_connections must be >= 0")
        if not 400 <= self.refuse_status <= 599:
            raise ValueError("refuse_status must be an HTTP error status (400-599)")
        if "{output}" not in self.tool_reply:
            raise ValueError("tool_reply must contain {output}")


# --------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class Item:
    """One conversation item as the simulator keeps it (no audio bytes, only durations)."""

    id: str
    type: str  # "message", "function_call", "function_call_output", "mcp_call", "mcp_list_tools"
    role: str | None  # "user", "assistant", "system"
    content_type: str  # "input_audio", "input_text", "output_audio", "output_text", or "" for others
    text: str = ""  # input text, the (possibly truncated) assistant transcript, or a tool item's text
    audio_ms: float = 0.0  # user audio length, or assistant audio generated so far
    kept_ms: float | None = None  # assistant audio still in context after a truncate (None: all of it)
    status: str = "completed"
    raw: JSON | None = None  # the item's own JSON (client items as sent; tool items as emitted)

    @property
    def context_audio_ms(self) -> float:
        return self.audio_ms if self.kept_ms is None else min(self.kept_ms, self.audio_ms)


@dataclass(slots=True)
class ResponseRecord:
    """What happened to one response; kept in ``SimulatedSession.responses`` for inspection."""

    id: str
    item_id: str | None  # the first assistant message item (None: the response only called tools)
    output_format: str
    status: str = "in_progress"
    reason: str | None = None
    audio_ms: float = 0.0
    audio_bytes: int = 0
    usage: JSON | None = None
    output_item_ids: list[str] = field(default_factory=list)
    transcript: str = ""  # what its messages said, in order (as far as they got)
    call_ids: list[str] = field(default_factory=list)  # function calls it made


@dataclass(frozen=True, slots=True)
class _Speech:
    """A planned message of a response: its transcript pieces and its audio length."""

    pieces: list[str]  # concatenated they are the transcript; one per transcript delta
    audio_ms: float | None  # None: the session's usual answer length


_Step = _Speech | ToolCall | McpCall


@dataclass(slots=True)
class _Message:
    """The message a response is streaming now."""

    item: Item
    output_index: int
    start: float  # when its audio began to be generated (virtual time, see _ActiveResponse.clock)
    delay_s: float
    source: bytes
    total_bytes: int
    chunk_bytes: int
    n_chunks: int
    pieces: list[str]
    sent_chunks: int = 0
    sent_pieces: int = 0
    audio_bytes: int = 0

    def deadline(self, interval_s: float) -> float:
        return self.start + self.delay_s + self.sent_chunks * interval_s


@dataclass(slots=True)
class _ActiveResponse:
    record: ResponseRecord
    in_band: bool  # False: conversation "none" (nothing joins the conversation)
    modality: str  # "audio" or "text"
    fmt: JSON
    voice: Any
    clock: float  # where the response's own timeline stands (starts at response.created)
    plan: list[_Step]
    input_usage: tuple[int, int, int, int]  # text, audio, cached text, cached audio
    context_keys: list[tuple[str, int, int]]
    outputs: list[Item] = field(default_factory=list)
    message: _Message | None = None
    text_out_tokens: int = 0


@dataclass(slots=True)
class _Vad:
    speaking: bool = False
    run_ms: int = 0
    run_start_ms: float = 0.0
    quiet_ms: int = 0
    item_id: str | None = None
    start_ms: float = 0.0
    pending: bytes = b""  # samples short of a whole 20 ms window

    def end_turn(self) -> None:
        """Forget the current turn but keep the partial window (it belongs to the next one)."""
        self.speaking = False
        self.run_ms = 0
        self.quiet_ms = 0
        self.item_id = None
        self.start_ms = 0.0


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


def _pieces(text: str) -> list[str]:
    """Split text into transcript deltas (a word with its leading space) that join back exactly."""
    return re.findall(r"\s*\S+", text.strip())


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


_ID_ALPHABET: Final = string.ascii_letters + string.digits


# ------------------------------------------------------------------------------------- session


class SimulatedSession:
    """One simulated Realtime session: client event JSON in, server event JSON out."""

    def __init__(
        self,
        options: SimulatorOptions | None = None,
        *,
        model: str = "gpt-realtime",
        created_at_unix: int = 0,
        index: int = 0,
    ) -> None:
        self.options = options or SimulatorOptions()
        self.model = model
        self.index = index
        """0-based number of this session among those its server opened (faults pick by it)."""
        self.faulty = self.options.fault_sessions is None or index < self.options.fault_sessions
        self._created_at_unix = created_at_unix
        self._rng = random.Random(self.options.seed)
        # A per-session random tag plus a counter: unique within the session by construction and
        # across sessions with overwhelming probability.
        self._tag = "".join(self._rng.choices(_ID_ALPHABET, k=10))
        self._counter = 0
        self.session_id = self._new_id("sess")
        self.conversation_id = self._new_id("conv")

        self.config: JSON = self._default_config()
        self.items: list[Item] = []
        self.responses: list[ResponseRecord] = []
        self._active: _ActiveResponse | None = None
        self._assistant_spoke = False  # locks the voice (cannot_update_voice)
        self._cache_keys: list[tuple[str, int, int]] = []

        # input audio: everything is measured in ms of audio written this session
        self.audio_ms_written = 0.0
        self._buffer_start_ms = 0.0
        self._odd_byte = b""  # a PCM16 append may split a sample across two events
        self._vad = _Vad()

        # inspection
        self.received_events: list[JSON] = []
        self.emitted_events: list[JSON] = []
        self.appended_audio = bytearray()
        self.truncations: list[tuple[str, int, bool]] = []
        self.errors: list[JSON] = []
        self.connected_at: float | None = None
        self.closed_at: float | None = None  # set by the server when the socket is gone
        self.close_code: int | None = None
        self.expired = False
        self.close_requested: tuple[int, str] | None = None  # the server should close with this
        self.fault: str | None = None
        self._end_at = math.inf  # the first of expiry and drop, once connected
        """Set to ``options.drop_mode`` when the drop fault is due: the server then drops the socket
        that way, and the session is dead (it answers nothing more)."""

        # tools and conversation: what the client declared, seeded and answered, and what we called
        self.caller_turns = 0
        """Caller audio turns committed in this session (VAD or manual commit); triggers count these."""
        self._fired: set[int] = set()  # indexes of tool_triggers that have fired
        self._mcp_listed: dict[str, tuple[str, McpListing]] = {}  # label -> (identity, listing)
        self.created_items: list[JSON] = []
        """Every item a ``conversation.item.create`` added, as sent plus its ``id`` (seeding, outputs)."""
        self.tool_calls: list[ToolCallRecord] = []
        self.tool_outputs: list[ToolOutputRecord] = []
        self.skipped_calls: list[SkippedCall] = []
        self.mcp_listings: list[McpListing] = []

    # ------------------------------------------------------------------ public API

    def connect(self, now: float) -> list[str]:
        """Start the session; returns ``[session.created]``."""
        self.connected_at = now
        drop_at = self._drop_at()
        self._end_at = min(self._expiry_at(), math.inf if drop_at is None else drop_at)
        return self._dump([self._event("session.created", session=self.effective_session())])

    def receive(self, text: str, now: float) -> list[str]:
        """Handle one client text frame."""
        if self._ended(now):
            return []
        out: list[JSON] = self._expire_if_due(now)
        if out:
            return self._dump(out)
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            if self.options.record_events:
                self.received_events.append({"_invalid_json": text[:200]})
            message = f"Invalid event: failed to parse JSON value. {exc.msg} at line {exc.lineno} column {exc.colno}."
            out.append(self._error("invalid_json", message, None, None))
            return self._dump(out)
        if self.options.record_events:
            self.received_events.append(event if isinstance(event, dict) else {"_not_an_object": event})
        client_event_id = None
        if isinstance(event, dict) and isinstance(event.get("event_id"), str):
            client_event_id = event["event_id"]
        try:
            if not isinstance(event, dict):
                raise ClientError("invalid_type", "Invalid event: expected a JSON object.", None)
            out.extend(self._dispatch(event, now))
        except ClientError as err:
            out.append(self._error(err.code, err.message, err.param, client_event_id))
        return self._dump(out)

    def receive_bytes(self, data: bytes, now: float) -> list[str]:
        """Handle a binary frame, which the real API refuses (the session stays open)."""
        if self._ended(now):
            return []
        return self._dump(
            [
                self._error(
                    "invalid_event",
                    "Expected a text WebSocket message; binary frames are not supported.",
                    None,
                    None,
                )
            ]
        )

    def tick(self, now: float) -> list[str]:
        """Produce the timed output due at ``now`` (audio deltas, response end, session expiry, faults)."""
        if self._ended(now):
            return []
        out = self._expire_if_due(now)
        if not out and self._active is not None:
            out = self._advance(self._active, now, emit_audio=True)
        return self._dump(out)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to emit (None: only client input can change that)."""
        if self.close_requested is not None or self.fault is not None or self.connected_at is None:
            return None
        deadline = self._end_at
        active = self._active
        if active is not None and active.message is not None and active.modality == "audio":
            deadline = min(deadline, active.message.deadline(self._interval_s))
        return deadline

    @property
    def response_active(self) -> bool:
        return self._active is not None

    @property
    def input_format(self) -> str:
        fmt: str = self.config["audio"]["input"]["format"]["type"]
        return fmt

    @property
    def output_format(self) -> str:
        fmt: str = self.config["audio"]["output"]["format"]["type"]
        return fmt

    @property
    def turn_detection(self) -> JSON | None:
        td: JSON | None = self.config["audio"]["input"]["turn_detection"]
        return td

    def effective_session(self) -> JSON:
        """The full session object as ``session.created`` / ``session.updated`` carry it."""
        session = json.loads(json.dumps(self.config))
        session.update(
            {
                "object": "realtime.session",
                "id": self.session_id,
                "expires_at": self._created_at_unix + int(self.options.max_session_s),
            }
        )
        return dict(session)

    def item(self, item_id: str) -> Item | None:
        for it in self.items:
            if it.id == item_id:
                return it
        return None

    # ------------------------------------------------------------------ plumbing

    @property
    def _interval_s(self) -> float:
        speed = self.options.speed
        if speed <= 0 or math.isinf(speed):
            return 0.0
        return self.options.delta_ms / 1000.0 / speed

    @property
    def _delay_s(self) -> float:
        return max(0.0, self.options.response_delay_ms / 1000.0)

    def _new_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._tag}{self._counter:06d}"

    def _event(self, type_: str, **fields: Any) -> JSON:
        return {"type": type_, "event_id": self._new_id("event"), **fields}

    def _error(self, code: str | None, message: str, param: str | None, client_event_id: str | None) -> JSON:
        ev = error_payload(self._new_id("event"), code, message, param, client_event_id)
        self.errors.append(ev["error"])
        return ev

    def _dump(self, events: list[JSON]) -> list[str]:
        if self.options.record_events:
            self.emitted_events.extend(events)
        return [json.dumps(ev, separators=(",", ":")) for ev in events]

    def _expiry_at(self) -> float:
        assert self.connected_at is not None
        limit = self.options.max_session_s
        if self.faulty and self.options.expire_after_s is not None:
            limit = min(limit, self.options.expire_after_s)
        return self.connected_at + limit

    def _drop_at(self) -> float | None:
        if self.connected_at is None or not self.faulty or self.options.drop_after_s is None:
            return None
        return self.connected_at + self.options.drop_after_s

    def _ended(self, now: float) -> bool:
        """True once the session can say nothing more (closing, or dropped by a fault, maybe now)."""
        if self.close_requested is not None or self.fault is not None:
            return True
        if now < self._end_at:
            return False
        drop_at = self._drop_at()
        if drop_at is not None and now >= drop_at:
            self.fault = self.options.drop_mode
            self._active = None
            return True
        return False

    def _expire_if_due(self, now: float) -> list[JSON]:
        if self.connected_at is None or now < self._end_at or now < self._expiry_at():
            return []
        self.expired = True
        minutes = self.options.max_session_s / 60.0
        shown = f"{minutes:g}"
        self.close_requested = (1000, "session_expired")
        self._active = None
        return [
            self._error("session_expired", f"Your session hit the maximum duration of {shown} minutes.", None, None)
        ]

    def _default_config(self) -> JSON:
        return {
            "type": "realtime",
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": DEFAULT_INSTRUCTIONS,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "audio": {
                "input": {
                    "format": {"type": PCM, "rate": PCM_RATE},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": normalize_turn_detection({"type": "server_vad"}),
                },
                "output": {"format": {"type": PCM, "rate": PCM_RATE}, "voice": "alloy", "speed": 1.0},
            },
        }

    def _dispatch(self, event: JSON, now: float) -> list[JSON]:
        kind = event.get("type")
        if kind is None:
            raise missing("type")
        if not isinstance(kind, str):
            raise invalid_type("type", "a string", kind)
        handler = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.truncate": self._on_truncate,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }.get(kind)
        if handler is None:
            listed = ", ".join(f"'{t}'" for t in CLIENT_EVENT_TYPES[:-1])
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: {listed}, and '{CLIENT_EVENT_TYPES[-1]}'.",
                "type",
            )
        return handler(event, now)

    # ------------------------------------------------------------------ session.update

    def _on_session_update(self, event: JSON, now: float) -> list[JSON]:
        if "session" not in event:
            raise missing("session")
        patch = require_obj(event["session"], "session")
        # Validate everything before applying anything: a rejected update changes nothing, which is
        # exactly the trap the real API sets (the session carries on with defaults).
        new = json.loads(json.dumps(self.config))
        if "type" not in patch:
            raise missing("session.type")
        if patch["type"] == "transcription":
            raise ClientError(
                "invalid_value",
                "Passing a transcription session update event to a realtime session is not allowed.",
                "session.type",
            )
        if patch["type"] != "realtime":
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{patch['type']}'. Supported values are: 'realtime' and 'transcription'.",
                "session.type",
            )
        check_keys(patch, SESSION_KEYS, "session")
        if "model" in patch:
            if not isinstance(patch["model"], str):
                raise invalid_type("session.model", "a string", patch["model"])
            if patch["model"] != self.model:
                raise ClientError("invalid_value", "Cannot change the model of an existing session.", "session.model")
        if "instructions" in patch:
            if not isinstance(patch["instructions"], str):
                raise invalid_type("session.instructions", "a string", patch["instructions"])
            new["instructions"] = patch["instructions"]
        if "output_modalities" in patch:
            new["output_modalities"] = validate_modalities(patch["output_modalities"], "session.output_modalities")
        if "max_output_tokens" in patch:
            new["max_output_tokens"] = validate_max_tokens(patch["max_output_tokens"], "session.max_output_tokens")
        if "tools" in patch:
            new["tools"] = validate_tools(patch["tools"], "session.tools")
        if "tool_choice" in patch or "tools" in patch:
            # A choice naming a tool must name one of the tools the session will have.
            new["tool_choice"] = validate_tool_choice(
                patch.get("tool_choice", new["tool_choice"]), "session.tool_choice", new["tools"]
            )
        for key in ("tracing", "truncation", "prompt", "include"):
            if key in patch:
                new[key] = patch[key]
        if "parallel_tool_calls" in patch and not isinstance(patch["parallel_tool_calls"], bool):
            raise invalid_type("session.parallel_tool_calls", "a boolean", patch["parallel_tool_calls"])
        for key in ("reasoning", "parallel_tool_calls"):
            if key in patch:
                new[key] = patch[key]
        if "audio" in patch:
            audio = require_obj(patch["audio"], "session.audio")
            check_keys(audio, frozenset({"input", "output"}), "session.audio")
            if "input" in audio:
                self._patch_input(require_obj(audio["input"], "session.audio.input"), new["audio"]["input"])
            if "output" in audio:
                self._patch_output(require_obj(audio["output"], "session.audio.output"), new["audio"]["output"])
        old_td = self.turn_detection
        old_in = self.input_format
        self.config = new
        if self.turn_detection != old_td or self.input_format != old_in:
            # A new detector or a new input encoding starts from a clean slate.
            self._vad = _Vad()
            self._odd_byte = b""
        return [self._event("session.updated", session=self.effective_session()), *self._list_mcp_tools()]

    def _list_mcp_tools(self) -> list[JSON]:
        """List the tools of each MCP server the session declares anew (or changed), as the API does
        right after the update: an ``mcp_list_tools`` item, ``in_progress``, then the outcome."""
        out: list[JSON] = []
        for server in self.config["tools"]:
            if server.get("type") != "mcp":
                continue
            label = str(server["server_label"])
            identity = mcp_identity(server)
            known = self._mcp_listed.get(label)
            if known is not None and known[0] == identity:
                continue
            names = mcp_listed_tools(server, self.options.tool_triggers)
            failed = self.options.mcp_list_fail
            item = Item(
                id=self._new_id("mcpl"),
                type="mcp_list_tools",
                role=None,
                content_type="",
                status="in_progress",
                raw={"type": "mcp_list_tools", "server_label": label, "tools": []},
            )
            previous = self.items[-1].id if self.items else None
            self.items.append(item)
            out.append(self._event("conversation.item.added", previous_item_id=previous, item=self._item_json(item)))
            out.append(self._event("mcp_list_tools.in_progress", item_id=item.id))
            if failed:
                item.status = "incomplete"
                out.append(self._event("mcp_list_tools.failed", item_id=item.id))
            else:
                tools = [
                    {
                        "name": name,
                        "description": f"The {name} tool of {label}.",
                        "input_schema": {"type": "object", "properties": {}},
                        "annotations": None,
                    }
                    for name in names
                ]
                assert item.raw is not None
                item.raw["tools"] = tools
                item.text = json.dumps(tools)  # the listing joins the model's context
                item.status = "completed"
                out.append(self._event("mcp_list_tools.completed", item_id=item.id))
                out.append(self._event("conversation.item.done", previous_item_id=previous, item=self._item_json(item)))
            listing = McpListing(label, server.get("server_url"), item.id, names if not failed else (), failed)
            self._mcp_listed[label] = (identity, listing)
            self.mcp_listings.append(listing)
        return out

    def _patch_input(self, patch: JSON, target: JSON) -> None:
        p = "session.audio.input"
        check_keys(patch, AUDIO_INPUT_KEYS, p)
        if "format" in patch:
            target["format"] = validate_format(patch["format"], f"{p}.format")
        if "turn_detection" in patch:
            target["turn_detection"] = validate_turn_detection(patch["turn_detection"], f"{p}.turn_detection")
        if "transcription" in patch:
            tr = patch["transcription"]
            if tr is None:
                target["transcription"] = None
            else:
                tr = require_obj(tr, f"{p}.transcription")
                check_keys(tr, TRANSCRIPTION_KEYS, f"{p}.transcription")
                target["transcription"] = {"model": None, "language": None, "prompt": None, **tr}
        if "noise_reduction" in patch:
            nr = patch["noise_reduction"]
            if nr is not None:
                nr = require_obj(nr, f"{p}.noise_reduction")
                check_keys(nr, frozenset({"type"}), f"{p}.noise_reduction")
                if nr.get("type") not in ("near_field", "far_field"):
                    raise ClientError(
                        "invalid_value",
                        f"Invalid value: '{nr.get('type')}'. Supported values are: 'near_field' and 'far_field'.",
                        f"{p}.noise_reduction.type",
                    )
            target["noise_reduction"] = nr

    def _patch_output(self, patch: JSON, target: JSON) -> None:
        p = "session.audio.output"
        check_keys(patch, AUDIO_OUTPUT_KEYS, p)
        if "format" in patch:
            target["format"] = validate_format(patch["format"], f"{p}.format")
        if "voice" in patch:
            voice = validate_voice(patch["voice"], f"{p}.voice")
            if self._assistant_spoke and voice != target["voice"]:
                raise ClientError(
                    "cannot_update_voice",
                    "Cannot update a conversation's voice if assistant audio is present.",
                    f"{p}.voice",
                )
            target["voice"] = voice
        if "speed" in patch:
            speed = patch["speed"]
            if not is_number(speed):
                raise invalid_type(f"{p}.speed", "a decimal", speed)
            if not 0.25 <= speed <= 1.5:
                raise ClientError(
                    "invalid_value",
                    f"Invalid '{p}.speed': expected a value between 0.25 and 1.5.",
                    f"{p}.speed",
                )
            target["speed"] = speed

    # ------------------------------------------------------------------ input audio

    def _on_append(self, event: JSON, now: float) -> list[JSON]:
        if "audio" not in event:
            raise missing("audio")
        audio = event["audio"]
        if not isinstance(audio, str):
            raise invalid_type("audio", "a string", audio)
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError(
                "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio"
            ) from None
        if self.options.record_audio:
            self.appended_audio += data
        fmt = self.input_format
        if fmt == PCM:
            data = self._odd_byte + data
            if len(data) % 2:
                self._odd_byte, data = data[-1:], data[:-1]
            else:
                self._odd_byte = b""
        start_ms = self.audio_ms_written
        self.audio_ms_written += len(data) / bytes_per_ms(fmt)
        if self.turn_detection is None:
            return []
        return self._run_vad(decode_to_pcm16(data, fmt), sample_rate(fmt), start_ms, now)

    def _run_vad(self, pcm: bytes, rate: int, start_ms: float, now: float) -> list[JSON]:
        td = self.turn_detection
        assert td is not None
        vad = self._vad
        if self.options.vad_threshold_dbfs is not None:
            start_level = dbfs_to_rms(self.options.vad_threshold_dbfs)
        else:
            start_level = threshold_to_rms(float(td.get("threshold", 0.5)))
        # Hysteresis: once speaking, quieter syllables (half the start level, -6 dB) keep the turn open.
        keep_level = start_level / 2.0
        silence_ms = (
            int(td["silence_duration_ms"])
            if td["type"] == "server_vad"
            else SEMANTIC_SILENCE_MS[td.get("eagerness", "auto")]
        )
        prefix_ms = int(td.get("prefix_padding_ms", 300)) if td["type"] == "server_vad" else 300

        win_bytes = rate * _VAD_WINDOW_MS // 1000 * 2
        data = vad.pending + pcm
        # Windows are positioned on the session's audio clock, counting back from this append's end.
        pos_ms = start_ms - len(vad.pending) / 2 / rate * 1000.0
        out: list[JSON] = []
        usable = len(data) - len(data) % win_bytes
        if usable:
            samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float64)
            rms = np.sqrt(np.mean(samples.reshape(-1, win_bytes // 2) ** 2, axis=1))
        else:
            rms = np.empty(0)
        vad.pending = data[usable:]
        for level in rms.tolist():
            win_start = pos_ms
            pos_ms += _VAD_WINDOW_MS
            if not vad.speaking:
                if level >= start_level:
                    if vad.run_ms == 0:
                        vad.run_start_ms = win_start
                    vad.run_ms += _VAD_WINDOW_MS
                    if vad.run_ms >= _VAD_MIN_SPEECH_MS:
                        out.extend(self._speech_started(now, prefix_ms))
                else:
                    vad.run_ms = 0
            else:
                if level >= keep_level:
                    vad.quiet_ms = 0
                else:
                    vad.quiet_ms += _VAD_WINDOW_MS
                    if vad.quiet_ms >= silence_ms:
                        out.extend(self._speech_stopped(pos_ms, now))
        return out

    def _speech_started(self, now: float, prefix_ms: int) -> list[JSON]:
        vad = self._vad
        vad.speaking = True
        vad.quiet_ms = 0
        vad.item_id = self._new_id("item")
        vad.start_ms = max(self._buffer_start_ms, vad.run_start_ms - prefix_ms)
        out = [self._event("input_audio_buffer.speech_started", audio_start_ms=int(vad.start_ms), item_id=vad.item_id)]
        td = self.turn_detection
        if self._active is not None and td is not None and td.get("interrupt_response", True):
            out.extend(self._finish_response(self._active, "cancelled", "turn_detected"))
        return out

    def _speech_stopped(self, end_ms: float, now: float) -> list[JSON]:
        vad = self._vad
        item_id = vad.item_id or self._new_id("item")
        start_ms = vad.start_ms
        vad.end_turn()
        out = [self._event("input_audio_buffer.speech_stopped", audio_end_ms=int(end_ms), item_id=item_id)]
        out.extend(self._commit_audio(item_id, end_ms - start_ms))
        self._buffer_start_ms = end_ms
        td = self.turn_detection
        if td is not None and td.get("create_response", True):
            if self._active is not None:
                # interrupt_response false and the last answer still running: the auto-response
                # fails the way a client's racing response.create does.
                out.append(self._active_response_error(None))
            else:
                out.extend(self._start_response(now, None))
        return out

    def _commit_audio(self, item_id: str, duration_ms: float) -> list[JSON]:
        previous = self.items[-1].id if self.items else None
        item = Item(id=item_id, type="message", role="user", content_type="input_audio", audio_ms=duration_ms)
        self.items.append(item)
        self.caller_turns += 1
        out = [
            self._event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id),
            self._event("conversation.item.added", previous_item_id=previous, item=self._item_json(item)),
            self._event("conversation.item.done", previous_item_id=previous, item=self._item_json(item)),
        ]
        transcription = self.config["audio"]["input"]["transcription"]
        if transcription is not None:
            item.text = self.options.user_transcript
            prompt = transcription.get("prompt") or ""
            audio_tokens = round(duration_ms / _IN_AUDIO_MS_PER_TOKEN)
            text_tokens = _text_tokens(prompt) if isinstance(prompt, str) else 0
            output_tokens = _text_tokens(item.text)
            out.append(
                self._event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=item.text,
                    usage={
                        "type": "tokens",
                        "total_tokens": audio_tokens + text_tokens + output_tokens,
                        "input_tokens": audio_tokens + text_tokens,
                        "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
                        "output_tokens": output_tokens,
                    },
                )
            )
        return out

    def _on_commit(self, event: JSON, now: float) -> list[JSON]:
        buffered = self.audio_ms_written - self._buffer_start_ms
        if buffered < _COMMIT_MIN_MS:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{_COMMIT_MIN_MS}ms of audio, but buffer only has {buffered:.2f}ms of audio.",
                None,
            )
        item_id = self._vad.item_id or self._new_id("item")
        start = self._vad.start_ms if self._vad.speaking else self._buffer_start_ms
        self._vad.end_turn()
        out = self._commit_audio(item_id, self.audio_ms_written - start)
        self._buffer_start_ms = self.audio_ms_written
        return out

    def _on_clear(self, event: JSON, now: float) -> list[JSON]:
        self._buffer_start_ms = self.audio_ms_written
        self._vad = _Vad()
        self._odd_byte = b""
        return [self._event("input_audio_buffer.cleared")]

    # ------------------------------------------------------------------ conversation items

    def _item_json(self, item: Item, *, final: bool = True) -> JSON:
        if item.raw is not None:
            return {**item.raw, "id": item.id, "object": "realtime.item", "status": item.status}
        content: list[JSON]
        if item.content_type == "input_audio":
            content = [{"type": "input_audio", "transcript": item.text or None}]
        elif item.content_type == "output_audio":
            content = [{"type": "output_audio", "transcript": item.text}] if final else []
        elif item.content_type == "output_text":
            content = [{"type": "output_text", "text": item.text}] if final else []
        else:
            content = [{"type": "input_text", "text": item.text}]
        return {
            "id": item.id,
            "type": "message",
            "object": "realtime.item",
            "status": item.status,
            "role": item.role,
            "content": content,
        }

    def _on_item_create(self, event: JSON, now: float) -> list[JSON]:
        if "item" not in event:
            raise missing("item")
        raw = require_obj(event["item"], "item")
        if "type" not in raw:
            raise missing("item.type")
        kind = raw["type"]
        item_id = raw.get("id")
        if item_id is not None:
            if not isinstance(item_id, str):
                raise invalid_type("item.id", "a string", item_id)
            if self.item(item_id) is not None:
                raise ClientError("invalid_value", f"Item with id '{item_id}' already exists.", "item.id")
        else:
            item_id = self._new_id("item")
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and self.item(str(previous)) is None:
            raise ClientError(
                "invalid_value", f"Previous item with id '{previous}' does not exist.", "previous_item_id"
            )
        if kind == "message":
            item = self._message_item(raw, item_id)
        elif kind == "function_call":
            item = self._function_call_item(raw, item_id)
        elif kind == "function_call_output":
            item = self._function_call_output_item(raw, item_id, now)
        else:
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', and "
                "'function_call_output'.",
                "item.type",
            )
        prev_id = self._insert(item, previous)
        self.created_items.append({**raw, "id": item_id})
        return [
            self._event("conversation.item.added", previous_item_id=prev_id, item=self._item_json(item)),
            self._event("conversation.item.done", previous_item_id=prev_id, item=self._item_json(item)),
        ]

    def _insert(self, item: Item, previous: Any) -> str | None:
        """Add a client item after ``previous`` (an id, "root" for the start, None for the end);
        returns the id of the item now before it."""
        if previous is None:
            prev_id = self.items[-1].id if self.items else None
            self.items.append(item)
            return prev_id
        if previous == "root":
            self.items.insert(0, item)
            return None
        at = next(i for i, it in enumerate(self.items) if it.id == previous)
        self.items.insert(at + 1, item)
        return str(previous)

    def _function_call_item(self, raw: JSON, item_id: str) -> Item:
        # A client adds these when it replays a conversation into a new session (after a reconnect).
        check_keys(raw, frozenset({"type", "id", "object", "status", "call_id", "name", "arguments"}), "item")
        for key in ("name", "arguments"):
            if key not in raw:
                raise missing(f"item.{key}")
            if not isinstance(raw[key], str):
                raise invalid_type(f"item.{key}", "a string", raw[key])
        call_id = raw.get("call_id")
        if call_id is not None and not isinstance(call_id, str):
            raise invalid_type("item.call_id", "a string", call_id)
        echo = {k: v for k, v in raw.items() if k not in ("id", "object", "status")}
        if call_id is None:
            echo["call_id"] = self._new_id("call")
        return Item(
            id=item_id, type="function_call", role=None, content_type="", text=raw["name"] + raw["arguments"], raw=echo
        )

    def _function_call_output_item(self, raw: JSON, item_id: str, now: float) -> Item:
        check_keys(raw, frozenset({"type", "id", "object", "status", "call_id", "output"}), "item")
        for key in ("call_id", "output"):
            if key not in raw:
                raise missing(f"item.{key}")
            if not isinstance(raw[key], str):
                raise invalid_type(f"item.{key}", "a string", raw[key])
        call_id, output = raw["call_id"], raw["output"]
        call = next(
            (it for it in self.items if it.type == "function_call" and it.raw and it.raw.get("call_id") == call_id),
            None,
        )
        if call is None:
            raise ClientError(
                "invalid_value",
                f"No tool call found for function call output with call_id '{call_id}'.",
                "item.call_id",
            )
        assert call.raw is not None
        name = call.raw.get("name")
        self.tool_outputs.append(
            ToolOutputRecord(call_id, output, item_id, name if isinstance(name, str) else None, now)
        )
        echo = {k: v for k, v in raw.items() if k not in ("id", "object", "status")}
        return Item(id=item_id, type="function_call_output", role=None, content_type="", text=output, raw=echo)

    def _message_item(self, raw: JSON, item_id: str) -> Item:
        role = raw.get("role")
        if role is None:
            raise missing("item.role")
        if role not in ("user", "assistant", "system"):
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', and 'system'.",
                "item.role",
            )
        content = raw.get("content")
        if content is None:
            raise missing("item.content")
        if not isinstance(content, list):
            raise invalid_type("item.content", "an array", content)
        allowed = {
            "user": ("input_text", "input_audio", "input_image"),
            "system": ("input_text",),
            "assistant": ("output_text", "output_audio"),
        }[role]
        text_parts: list[str] = []
        audio_ms = 0.0
        for i, part in enumerate(content):
            part = require_obj(part, f"item.content[{i}]")
            ptype = part.get("type")
            if ptype not in allowed:
                listed = ", ".join(f"'{a}'" for a in allowed)
                raise ClientError(
                    "invalid_value",
                    f"Invalid value: '{ptype}'. Supported values are: {listed}.",
                    f"item.content[{i}].type",
                )
            if ptype in ("input_text", "output_text"):
                text = part.get("text")
                if not isinstance(text, str):
                    raise invalid_type(f"item.content[{i}].text", "a string", text)
                text_parts.append(text)
            elif ptype in ("input_audio", "output_audio"):
                audio = part.get("audio")
                if ptype == "output_audio":
                    # An assistant turn replayed as audio carries its transcript; the audio is optional.
                    transcript = part.get("transcript")
                    if transcript is not None and not isinstance(transcript, str):
                        raise invalid_type(f"item.content[{i}].transcript", "a string", transcript)
                    if transcript:
                        text_parts.append(transcript)
                    if audio is None:
                        continue
                if not isinstance(audio, str):
                    raise invalid_type(f"item.content[{i}].audio", "a string", audio)
                fmt = self.input_format if ptype == "input_audio" else self.output_format
                try:
                    audio_ms += len(base64.b64decode(audio, validate=True)) / bytes_per_ms(fmt)
                except (binascii.Error, ValueError):
                    raise ClientError(
                        "invalid_value",
                        f"Invalid 'item.content[{i}].audio'. Expected base64-encoded audio bytes.",
                        f"item.content[{i}].audio",
                    ) from None
        raw_echo = dict(raw)
        raw_echo.pop("id", None)
        if role == "assistant":
            content_type = "output_audio" if audio_ms else "output_text"
        else:
            content_type = "input_audio" if audio_ms and not text_parts else "input_text"
        return Item(
            id=item_id,
            type="message",
            role=str(role),
            content_type=content_type,
            text=" ".join(text_parts),
            audio_ms=audio_ms,
            raw=raw_echo,
        )

    def _existing_item(self, event: JSON, code: str, doing: str) -> Item:
        item_id = event.get("item_id")
        if item_id is None:
            raise missing("item_id")
        item = self.item(str(item_id))
        if item is None:
            raise ClientError(code, f"Error {doing} item: the item with id '{item_id}' does not exist.", "item_id")
        return item

    def _on_item_delete(self, event: JSON, now: float) -> list[JSON]:
        item = self._existing_item(event, "item_delete_invalid_item_id", "deleting")
        self.items.remove(item)
        return [self._event("conversation.item.deleted", item_id=item.id)]

    def _on_item_retrieve(self, event: JSON, now: float) -> list[JSON]:
        item = self._existing_item(event, "item_retrieve_invalid_item_id", "retrieving")
        return [self._event("conversation.item.retrieved", item=self._item_json(item))]

    def _on_truncate(self, event: JSON, now: float) -> list[JSON]:
        for key in ("item_id", "content_index", "audio_end_ms"):
            if key not in event:
                raise missing(key)
        item_id, content_index, end_ms = event["item_id"], event["content_index"], event["audio_end_ms"]
        if not isinstance(item_id, str):
            raise invalid_type("item_id", "a string", item_id)
        if not is_int(content_index):
            raise invalid_type("content_index", "an integer", content_index)
        if not is_int(end_ms):
            raise invalid_type("audio_end_ms", "an integer", end_ms)
        item = self.item(item_id)
        try:
            if item is None:
                raise ClientError(
                    "item_truncate_invalid_item_id",
                    f"Error truncating item: the item with id '{item_id}' does not exist.",
                    "item_id",
                )
            if item.role != "assistant" or item.content_type != "output_audio":
                raise ClientError("invalid_value", "Only model output audio messages can be truncated", "item_id")
            if content_index != 0:
                raise ClientError(
                    "invalid_value",
                    f"Invalid 'content_index': the item has no content part {content_index}.",
                    "content_index",
                )
            if end_ms < 0:
                raise ClientError(
                    "integer_below_min_value",
                    f"Invalid 'audio_end_ms': integer below minimum value. Expected a value >= 0, but got "
                    f"{end_ms} instead.",
                    "audio_end_ms",
                )
            have = item.context_audio_ms
            if end_ms > have:
                raise ClientError(
                    "invalid_value",
                    f"Audio content of {int(have)}ms is already shorter than {end_ms}ms",
                    "audio_end_ms",
                )
        except ClientError:
            self.truncations.append((item_id, end_ms, False))
            raise
        # The server deletes the transcript past the cut; keep the share of words heard.
        words = item.text.split()
        if item.audio_ms > 0 and words:
            item.text = " ".join(words[: math.floor(len(words) * min(1.0, end_ms / item.audio_ms))])
        item.kept_ms = float(end_ms)
        self.truncations.append((item_id, end_ms, True))
        return [
            self._event(
                "conversation.item.truncated",
                item_id=item_id,
                content_index=content_index,
                audio_end_ms=end_ms,
            )
        ]

    # ------------------------------------------------------------------ responses

    def _active_response_error(self, client_event_id: str | None) -> JSON:
        active = self._active
        rid = active.record.id if active is not None else ""
        return self._error(
            "conversation_already_has_active_response",
            f"Conversation already has an active response in progress: {rid}. Wait until the response is "
            "finished before creating a new one.",
            None,
            client_event_id,
        )

    def _on_response_create(self, event: JSON, now: float) -> list[JSON]:
        params: JSON = {}
        if event.get("response") is not None:
            params = require_obj(event["response"], "response")
            check_keys(params, RESPONSE_KEYS, "response")
        if self._active is not None:
            cid = event.get("event_id")
            return [self._active_response_error(cid if isinstance(cid, str) else None)]
        return self._start_response(now, params)

    def _on_response_cancel(self, event: JSON, now: float) -> list[JSON]:
        active = self._active
        rid = event.get("response_id")
        if active is None:
            raise ClientError("response_cancel_not_active", "Cancellation failed: no active response found", None)
        if rid is not None and rid != active.record.id:
            raise ClientError("invalid_value", f"Response '{rid}' does not exist.", "response_id")
        return self._finish_response(active, "cancelled", "client_cancelled")

    def _start_response(self, now: float, params: JSON | None) -> list[JSON]:
        params = params or {}
        instructions = params.get("instructions", self.config["instructions"])
        if not isinstance(instructions, str):
            raise invalid_type("response.instructions", "a string", instructions)
        modalities = self.config["output_modalities"]
        if "output_modalities" in params:
            modalities = validate_modalities(params["output_modalities"], "response.output_modalities")
        fmt = self.config["audio"]["output"]["format"]
        voice = self.config["audio"]["output"]["voice"]
        audio_params = params.get("audio")
        if audio_params is not None:
            audio_params = require_obj(audio_params, "response.audio")
            check_keys(audio_params, frozenset({"output"}), "response.audio")
            out_params = require_obj(audio_params.get("output", {}), "response.audio.output")
            check_keys(out_params, frozenset({"format", "voice"}), "response.audio.output")
            if "format" in out_params:
                fmt = validate_format(out_params["format"], "response.audio.output.format")
            if "voice" in out_params:
                voice = validate_voice(out_params["voice"], "response.audio.output.voice")
        conversation = params.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{conversation}'. Supported values are: 'auto' and 'none'.",
                "response.conversation",
            )
        tools = self.config["tools"]
        if "tools" in params:
            tools = validate_tools(params["tools"], "response.tools")
        tool_choice = self.config["tool_choice"]
        if "tool_choice" in params or "tools" in params:
            tool_choice = validate_tool_choice(params.get("tool_choice", tool_choice), "response.tool_choice", tools)
        in_band = conversation == "auto"

        # Bill the whole conversation so far as input (https://developers.openai.com/api/docs/guides/realtime-costs),
        # before this answer joins it; tool definitions are input text too.
        keys: list[tuple[str, int, int]] = [("instructions:" + instructions, _text_tokens(instructions), 0)]
        if tools:
            listed = json.dumps(tools, sort_keys=True)
            keys.append(("tools:" + listed, _text_tokens(listed), 0))
        for it in self.items:
            keys.append(self._context_key(it))
        text_in = sum(k[1] for k in keys)
        audio_in = sum(k[2] for k in keys)
        cached_text, cached_audio = self._cached(keys)

        record = ResponseRecord(id=self._new_id("resp"), item_id=None, output_format=fmt["type"])
        self.responses.append(record)
        active = _ActiveResponse(
            record=record,
            in_band=in_band,
            modality=modalities[0],
            fmt=fmt,
            voice=voice,
            clock=now,
            plan=self._plan(record, in_band, tools, tool_choice),
            input_usage=(text_in, audio_in, cached_text, cached_audio),
            context_keys=keys,
        )
        self._active = active
        out = [self._event("response.created", response=self._response_json(active, "in_progress", None))]
        # Open the first output now; its audio starts on the next tick (the model's first delta).
        out.extend(self._advance(active, now, emit_audio=False))
        return out

    # -- what a response says and does

    def _plan(self, record: ResponseRecord, in_band: bool, tools: list[JSON], tool_choice: Any) -> list[_Step]:
        """Decide the response's outputs: an answer to tool outputs, a triggered tool call, or speech."""
        default = _Speech(self._default_pieces(), None)
        if not in_band:
            return [default]
        outputs = self._unanswered_outputs()
        if outputs:
            return [_Speech(_pieces(self.options.tool_reply.format(output=" ".join(outputs))), None)]
        trigger = self._due_trigger()
        if trigger is None:
            return [default]
        calls: list[ToolCall | McpCall] = []
        for call in trigger.calls:
            reason = why_not_callable(call, tools, tool_choice)
            if reason is None and isinstance(call, McpCall):
                listed = self._mcp_listed.get(call.server_label)
                if listed is not None and listed[1].failed:
                    reason = f"listing the tools of MCP server '{call.server_label}' failed"
            if reason is None and calls and self.config.get("parallel_tool_calls") is False:
                reason = "parallel_tool_calls is false and the response already calls a tool"
            if reason is not None:
                label = call.server_label if isinstance(call, McpCall) else None
                self.skipped_calls.append(SkippedCall(call.name, label, reason, record.id))
            else:
                calls.append(call)
        if not calls:
            return [default]
        plan: list[_Step] = []
        if trigger.preamble:
            plan.append(_Speech(_pieces(trigger.preamble), float(trigger.preamble_ms)))
        plan.extend(calls)
        mcp = [c for c in calls if isinstance(c, McpCall)]
        if mcp and len(mcp) == len(calls):
            # The API ran the MCP tools itself, so the same response goes on to say what they gave.
            said = " ".join(
                self._mcp_output(c) if not c.fail else DEFAULT_MCP_FAILURE_REPLY.format(name=c.name) for c in mcp
            )
            plan.append(_Speech(_pieces(said), None))
        return plan

    def _due_trigger(self) -> ToolTrigger | None:
        for i, trigger in enumerate(self.options.tool_triggers):
            if i not in self._fired and self.caller_turns >= trigger.after_turn:
                self._fired.add(i)
                return trigger
        return None

    def _unanswered_outputs(self) -> list[str]:
        """The ``function_call_output`` texts at the end of the conversation, not yet followed by
        anything the model or the caller said: what the next answer should be about."""
        outputs: list[str] = []
        for it in reversed(self.items):
            if it.type == "function_call_output":
                outputs.append(it.text)
            elif it.type not in ("function_call", "mcp_call", "mcp_list_tools"):
                break
        return outputs[::-1]

    def _default_pieces(self) -> list[str]:
        """The usual answer's transcript, cut or looped to the answer's audio length."""
        words = self.options.assistant_transcript.split()
        if not words:
            return []
        total_ms = self._answer_ms(None)
        full_ms = len(assistant_audio(PCMU)) / bytes_per_ms(PCMU)
        n_words = max(1, round(len(words) * total_ms / full_ms))
        said = (words * (n_words // len(words) + 1))[:n_words]
        return [w if i == 0 else " " + w for i, w in enumerate(said)]

    def _answer_ms(self, audio_ms: float | None) -> float:
        if audio_ms is not None:
            return audio_ms
        if self.options.response_audio_ms is not None:
            return float(self.options.response_audio_ms)
        return len(assistant_audio(PCMU)) / bytes_per_ms(PCMU)

    @staticmethod
    def _mcp_output(call: McpCall) -> str:
        return call.output.format(name=call.name, server_label=call.server_label, arguments=call.arguments_json())

    # -- streaming the plan

    def _advance(self, active: _ActiveResponse, now: float, *, emit_audio: bool) -> list[JSON]:
        """Emit what is due at ``now``: audio of the current message, then the next outputs."""
        out: list[JSON] = []
        while True:
            msg = active.message
            if msg is not None:
                if emit_audio:
                    out.extend(self._emit_due_audio(active, msg, now))
                if msg.sent_chunks < msg.n_chunks:
                    return out
                out.extend(self._close_message(active, msg, "completed"))
                continue
            if not active.plan:
                out.extend(self._finish_response(active, "completed", None))
                return out
            step = active.plan.pop(0)
            if isinstance(step, _Speech):
                out.extend(self._open_message(active, step))
            elif isinstance(step, ToolCall):
                out.extend(self._function_call(active, step))
            else:
                out.extend(self._mcp_call(active, step))

    def _add_output(self, active: _ActiveResponse, item: Item) -> tuple[int, list[JSON]]:
        """Make ``item`` the response's next output; returns its index and the "added" events."""
        index = len(active.outputs)
        active.outputs.append(item)
        active.record.output_item_ids.append(item.id)
        prev_id = self.items[-1].id if self.items else None
        out = [
            self._event(
                "response.output_item.added",
                response_id=active.record.id,
                output_index=index,
                item=self._item_json(item, final=False),
            )
        ]
        if active.in_band:
            self.items.append(item)
            out.append(
                self._event(
                    "conversation.item.added", previous_item_id=prev_id, item=self._item_json(item, final=False)
                )
            )
        return index, out

    def _done_output(self, active: _ActiveResponse, item: Item, index: int) -> list[JSON]:
        out: list[JSON] = []
        item_json = self._item_json(item)
        if active.in_band:
            out.append(
                self._event("conversation.item.done", previous_item_id=self._previous_id(item.id), item=item_json)
            )
        out.append(
            self._event("response.output_item.done", response_id=active.record.id, output_index=index, item=item_json)
        )
        return out

    def _open_message(self, active: _ActiveResponse, speech: _Speech) -> list[JSON]:
        audio = active.modality == "audio"
        item = Item(
            id=self._new_id("item"),
            type="message",
            role="assistant",
            content_type="output_audio" if audio else "output_text",
            status="in_progress",
        )
        rec = active.record
        if rec.item_id is None:
            rec.item_id = item.id
        index, out = self._add_output(active, item)
        fmt_type = active.fmt["type"]
        source = assistant_audio(fmt_type)
        bpm = bytes_per_ms(fmt_type)
        total_bytes = int(self._answer_ms(speech.audio_ms) * bpm) if audio else 0
        if fmt_type == PCM:
            total_bytes -= total_bytes % 2
        chunk_bytes = max(2, self.options.delta_ms * bpm)
        first = not any(o.type == "message" for o in active.outputs[:-1])
        msg = _Message(
            item=item,
            output_index=index,
            start=active.clock,
            delay_s=self._delay_s if first else 0.0,
            source=source,
            total_bytes=total_bytes,
            chunk_bytes=chunk_bytes,
            n_chunks=math.ceil(total_bytes / chunk_bytes) if total_bytes else 0,
            pieces=list(speech.pieces),
        )
        active.message = msg
        common = {"response_id": rec.id, "item_id": item.id, "output_index": index, "content_index": 0}
        part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        out.append(self._event("response.content_part.added", part=part, **common))
        if not audio:
            # Text answers are tiny; the real API streams them within a few ms, so all at once is faithful.
            for piece in msg.pieces:
                out.append(self._event("response.output_text.delta", delta=piece, **common))
            msg.sent_pieces = len(msg.pieces)
        return out

    def _emit_due_audio(self, active: _ActiveResponse, msg: _Message, now: float) -> list[JSON]:
        out: list[JSON] = []
        rec = active.record
        interval = self._interval_s
        bpm = bytes_per_ms(active.fmt["type"])
        common = {"response_id": rec.id, "item_id": msg.item.id, "output_index": msg.output_index, "content_index": 0}
        n_pieces = len(msg.pieces)
        while msg.sent_chunks < msg.n_chunks:
            due = msg.deadline(interval)
            if due > now:
                break
            active.clock = due
            lo = msg.sent_chunks * msg.chunk_bytes
            hi = min(msg.total_bytes, lo + msg.chunk_bytes)
            chunk = loop_slice(msg.source, lo, hi)
            msg.sent_chunks += 1
            msg.audio_bytes += len(chunk)
            rec.audio_bytes += len(chunk)
            rec.audio_ms = rec.audio_bytes / bpm
            msg.item.audio_ms = msg.audio_bytes / bpm
            self._assistant_spoke = True
            out.append(
                self._event("response.output_audio.delta", delta=base64.b64encode(chunk).decode("ascii"), **common)
            )
            # The transcript keeps pace with the audio: each delta is due with its share of the audio.
            due_pieces = n_pieces * msg.sent_chunks // msg.n_chunks
            while msg.sent_pieces < due_pieces:
                out.append(
                    self._event("response.output_audio_transcript.delta", delta=msg.pieces[msg.sent_pieces], **common)
                )
                msg.sent_pieces += 1
        return out

    def _close_message(self, active: _ActiveResponse, msg: _Message, status: str) -> list[JSON]:
        rec = active.record
        item = msg.item
        spoken = "".join(msg.pieces[: msg.sent_pieces]).strip()
        if item.kept_ms is None:
            item.text = spoken
        item.status = status
        rec.transcript = f"{rec.transcript} {spoken}".strip()
        active.text_out_tokens += _text_tokens(spoken)
        active.message = None
        common = {"response_id": rec.id, "item_id": item.id, "output_index": msg.output_index, "content_index": 0}
        out: list[JSON] = []
        if active.modality == "audio":
            out.append(self._event("response.output_audio.done", **common))
            out.append(self._event("response.output_audio_transcript.done", transcript=spoken, **common))
            part: JSON = {"type": "audio", "transcript": spoken}
        else:
            out.append(self._event("response.output_text.done", text=spoken, **common))
            part = {"type": "text", "text": spoken}
        out.append(self._event("response.content_part.done", part=part, **common))
        out.extend(self._done_output(active, item, msg.output_index))
        return out

    def _function_call(self, active: _ActiveResponse, call: ToolCall) -> list[JSON]:
        rec = active.record
        arguments = call.arguments_json()
        call_id = self._new_id("call")
        item = Item(
            id=self._new_id("item"),
            type="function_call",
            role=None,
            content_type="",
            text=call.name + arguments,
            status="in_progress",
            raw={"type": "function_call", "call_id": call_id, "name": call.name, "arguments": ""},
        )
        index, out = self._add_output(active, item)
        common = {"response_id": rec.id, "item_id": item.id, "output_index": index, "call_id": call_id}
        for delta in _chunks(arguments, _ARGUMENT_DELTA_CHARS):
            out.append(self._event("response.function_call_arguments.delta", delta=delta, **common))
        out.append(self._event("response.function_call_arguments.done", name=call.name, arguments=arguments, **common))
        assert item.raw is not None
        item.raw["arguments"] = arguments
        item.status = "completed"
        out.extend(self._done_output(active, item, index))
        active.text_out_tokens += _text_tokens(call.name + arguments)
        rec.call_ids.append(call_id)
        self.tool_calls.append(ToolCallRecord("function", call.name, arguments, item.id, rec.id, call_id=call_id))
        return out

    def _mcp_call(self, active: _ActiveResponse, call: McpCall) -> list[JSON]:
        rec = active.record
        arguments = call.arguments_json()
        item = Item(
            id=self._new_id("mcp"),
            type="mcp_call",
            role=None,
            content_type="",
            text=call.name + arguments,
            status="in_progress",
            raw={
                "type": "mcp_call",
                "server_label": call.server_label,
                "name": call.name,
                "arguments": "",
                "output": None,
                "error": None,
                "approval_request_id": None,
            },
        )
        index, out = self._add_output(active, item)
        common = {"item_id": item.id, "output_index": index}
        for delta in _chunks(arguments, _ARGUMENT_DELTA_CHARS):
            out.append(self._event("response.mcp_call_arguments.delta", response_id=rec.id, delta=delta, **common))
        out.append(self._event("response.mcp_call_arguments.done", response_id=rec.id, arguments=arguments, **common))
        out.append(self._event("response.mcp_call.in_progress", **common))
        assert item.raw is not None
        item.raw["arguments"] = arguments
        if call.fail:
            item.raw["error"] = {"type": "tool_execution_error", "message": call.error_message}
            item.status = "incomplete"
            out.append(self._event("response.mcp_call.failed", **common))
        else:
            output = self._mcp_output(call)
            item.raw["output"] = output
            item.text += output  # the result joins the model's context
            item.status = "completed"
            out.append(self._event("response.mcp_call.completed", **common))
        out.extend(self._done_output(active, item, index))
        active.text_out_tokens += _text_tokens(call.name + arguments)
        self.tool_calls.append(
            ToolCallRecord(
                "mcp",
                call.name,
                arguments,
                item.id,
                rec.id,
                server_label=call.server_label,
                status="failed" if call.fail else "completed",
            )
        )
        return out

    # -- accounting

    def _context_key(self, it: Item) -> tuple[str, int, int]:
        if it.role == "assistant" and it.content_type == "output_audio" and it.raw is None:
            # Assistant audio stays in context as audio input tokens, only as much as was kept.
            return (it.id, 0, round(it.context_audio_ms / _IN_AUDIO_MS_PER_TOKEN))
        # The model hears user audio, not its transcript: the transcript of VAD-committed audio is
        # billed by the transcription model, not as context. Client-sent text always counts, and
        # so do tool calls, their outputs and MCP listings (text the model reads).
        text = _text_tokens(it.text) if it.raw is not None or it.content_type != "input_audio" else 0
        return (it.id, text, round(it.context_audio_ms / _IN_AUDIO_MS_PER_TOKEN))

    def _cached(self, keys: list[tuple[str, int, int]]) -> tuple[int, int]:
        prefix: list[tuple[str, int, int]] = []
        for mine, seen in zip(keys, self._cache_keys, strict=False):
            if mine != seen:
                break
            prefix.append(mine)
        budget = sum(k[1] + k[2] for k in prefix) // _CACHE_GRANULARITY * _CACHE_GRANULARITY
        cached_text = cached_audio = 0
        for _, text, audio in prefix:
            if budget <= 0:
                break
            t = min(text, budget)
            cached_text += t
            budget -= t
            a = min(audio, budget)
            cached_audio += a
            budget -= a
        return cached_text, cached_audio

    def _finish_response(self, active: _ActiveResponse, status: str, reason: str | None) -> list[JSON]:
        rec = active.record
        rec.status = status
        rec.reason = reason
        out: list[JSON] = []
        if active.message is not None:
            out.extend(self._close_message(active, active.message, "incomplete"))
        text_in, audio_in, cached_text, cached_audio = active.input_usage
        text_out = active.text_out_tokens
        audio_out = round(rec.audio_ms / _OUT_AUDIO_MS_PER_TOKEN)
        usage: JSON = {
            "total_tokens": text_in + audio_in + text_out + audio_out,
            "input_tokens": text_in + audio_in,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": cached_text + cached_audio,
                "cached_tokens_details": {
                    "text_tokens": cached_text,
                    "audio_tokens": cached_audio,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }
        rec.usage = usage
        details = {"type": status, "reason": reason} if status != "completed" else None
        out.append(self._event("response.done", response=self._response_json(active, status, details, usage)))
        # Live captures show rate_limits.updated following response.done, not preceding it.
        spent = text_in + audio_in + text_out + audio_out
        out.append(
            self._event(
                "rate_limits.updated",
                rate_limits=[
                    {"name": "requests", "limit": 20000, "remaining": 19999, "reset_seconds": 0.003},
                    {
                        "name": "tokens",
                        "limit": 15000000,
                        "remaining": 15000000 - spent,
                        "reset_seconds": 0.001,
                    },
                ],
            )
        )
        # The next request's cache holds this request's input plus the answer as it stood then.
        self._cache_keys = list(active.context_keys)
        if active.in_band:
            self._cache_keys.extend(self._context_key(it) for it in active.outputs)
        self._active = None
        return out

    def _previous_id(self, item_id: str) -> str | None:
        for i, it in enumerate(self.items):
            if it.id == item_id:
                return self.items[i - 1].id if i > 0 else None
        return None

    def _response_json(
        self, active: _ActiveResponse, status: str, details: JSON | None, usage: JSON | None = None
    ) -> JSON:
        output = [self._item_json(it) for it in active.outputs] if status != "in_progress" else []
        return {
            "object": "realtime.response",
            "id": active.record.id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": self.conversation_id if active.in_band else None,
            "output_modalities": [active.modality],
            "max_output_tokens": self.config["max_output_tokens"],
            "audio": {"output": {"format": active.fmt, "voice": active.voice}},
            "usage": usage,
            "metadata": None,
        }


__all__ = [
    "CLIENT_EVENT_TYPES",
    "DROP_MODES",
    "PCM",
    "PCMA",
    "PCMU",
    "PCM_RATE",
    "VOICES",
    "ClientError",
    "Item",
    "McpCall",
    "McpListing",
    "ResponseRecord",
    "SimulatedSession",
    "SimulatorOptions",
    "SkippedCall",
    "ToolCall",
    "ToolCallRecord",
    "ToolOutputRecord",
    "ToolTrigger",
    "assistant_audio",
    "bytes_per_ms",
    "dbfs_to_rms",
    "decode_to_pcm16",
    "design_lowpass",
    "error_event",
    "sample_rate",
    "threshold_to_rms",
    "validate_format",
]
