"""A simulated OpenAI Realtime session (GA protocol), as pure protocol logic.

The simulator is the upstream for the demo, the tests and the load tests, so it follows the GA
reference (``/work/shared/reference/openai-realtime.md``) and the behaviour seen in live captures
rather than what would be convenient: strict ``session.update`` validation (``session.type``
required, beta keys rejected as ``unknown_parameter``), server VAD with ``speech_started`` /
``speech_stopped`` / ``committed``, barge-in cancellation, audio deltas faster than real time,
``conversation.item.truncate`` with the real API's error text, and ``usage`` that re-bills the whole
conversation on every response with the earlier prefix counted as cached.

Nothing here touches sockets, trio or clocks: the caller passes ``now`` (seconds, any monotonic
origin) to :meth:`SimulatedSession.connect`, :meth:`~SimulatedSession.receive` and
:meth:`~SimulatedSession.tick`, and asks :meth:`~SimulatedSession.next_deadline` when to call
``tick`` again. Every method returns server events as JSON strings, in wire order.

Simplifications (documented, deliberate): the VAD is an energy detector, not a model; semantic_vad
uses the same detector with a silence window chosen from ``eagerness``; ``idle_timeout_ms`` is
accepted but never fires; tools are accepted but the model never calls them; prompt caching is a
longest-common-prefix model in 64-token steps (the granularity seen in real ``cached_tokens``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import random
import string
import warnings
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bridge.audio.wavfile import ASSISTANT_PCM16, bundled

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 and gone in 3.13, where the audioop-lts package provides
    # the same module; the warning is noise for us, not a signal.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

JSON = dict[str, Any]

PCMU: Final = "audio/pcmu"
PCMA: Final = "audio/pcma"
PCM: Final = "audio/pcm"
PCM_RATE: Final = 24000

VOICES: Final = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
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

_SESSION_KEYS: Final = frozenset(
    {
        "type",
        "model",
        "output_modalities",
        "instructions",
        "audio",
        "include",
        "max_output_tokens",
        "tools",
        "tool_choice",
        "tracing",
        "truncation",
        "prompt",
        "reasoning",
        "parallel_tool_calls",
    }
)
_AUDIO_INPUT_KEYS: Final = frozenset({"format", "transcription", "noise_reduction", "turn_detection"})
_AUDIO_OUTPUT_KEYS: Final = frozenset({"format", "voice", "speed"})
_SERVER_VAD_KEYS: Final = frozenset(
    {
        "type",
        "threshold",
        "prefix_padding_ms",
        "silence_duration_ms",
        "create_response",
        "interrupt_response",
        "idle_timeout_ms",
    }
)
_SEMANTIC_VAD_KEYS: Final = frozenset({"type", "eagerness", "create_response", "interrupt_response"})
_TRANSCRIPTION_KEYS: Final = frozenset({"model", "language", "prompt", "delay", "keywords", "languages"})
_RESPONSE_KEYS: Final = frozenset(
    {
        "output_modalities",
        "instructions",
        "audio",
        "conversation",
        "input",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "metadata",
        "prompt",
    }
)

# semantic_vad decides from the words; the energy stand-in waits longer the less eager it is.
_SEMANTIC_SILENCE_MS: Final = {"low": 1500, "medium": 800, "auto": 800, "high": 400}

_VAD_WINDOW_MS: Final = 20
_VAD_MIN_SPEECH_MS: Final = 60
_COMMIT_MIN_MS: Final = 100
_CACHE_GRANULARITY: Final = 64

# Token accounting (reference §5.2): audio in 10 tokens/s, audio out 20 tokens/s, text ≈ 4 chars/token.
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


class ClientError(Exception):
    """A client event the real API would answer with an ``error`` event (the session stays open)."""

    def __init__(self, code: str | None, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


# --------------------------------------------------------------------------------------- audio


def design_lowpass(
    cutoff_hz: float, rate: int, taps: int = 161, beta: float = 8.0
) -> npt.NDArray[np.float64]:
    """Kaiser-windowed sinc low-pass FIR with unity DC gain.

    161 taps at beta 8 give a ~570 Hz transition band at 24 kHz and ~80 dB of stopband, so a 3.6 kHz
    cutoff is fully attenuated by 4 kHz, the Nyquist frequency after keeping every third sample.
    """
    n = np.arange(taps) - (taps - 1) / 2.0
    fc = cutoff_hz / rate
    h = 2.0 * fc * np.sinc(2.0 * fc * n) * np.kaiser(taps, beta)
    result: npt.NDArray[np.float64] = h / h.sum()
    return result


@functools.cache
def _assistant_pcm24k() -> bytes:
    wav = bundled(ASSISTANT_PCM16)
    if wav.encoding != "pcm16" or wav.sample_rate != PCM_RATE:
        raise ValueError(f"{ASSISTANT_PCM16}: expected 24 kHz PCM16, got {wav.encoding} {wav.sample_rate}")
    return wav.data


@functools.cache
def _assistant_pcm8k() -> bytes:
    # Offline over the whole signal, once: no streaming state to get wrong, and the cost is paid at
    # first use rather than per delta.
    samples = np.frombuffer(_assistant_pcm24k(), dtype="<i2").astype(np.float64)
    filtered = np.convolve(samples, design_lowpass(3600.0, PCM_RATE), mode="same")
    decimated = np.clip(np.round(filtered[::3]), -32768, 32767).astype("<i2")
    return decimated.tobytes()


@functools.cache
def assistant_audio(fmt_type: str) -> bytes:
    """The assistant recording in one of the three GA wire formats (cached per format)."""
    if fmt_type == PCM:
        return _assistant_pcm24k()
    if fmt_type == PCMU:
        return audioop.lin2ulaw(_assistant_pcm8k(), 2)
    if fmt_type == PCMA:
        return audioop.lin2alaw(_assistant_pcm8k(), 2)
    raise ValueError(f"unknown audio format {fmt_type!r}")


def bytes_per_ms(fmt_type: str) -> int:
    """48 bytes/ms for 24 kHz PCM16, 8 for G.711 at 8 kHz."""
    return 48 if fmt_type == PCM else 8


def _sample_rate(fmt_type: str) -> int:
    return PCM_RATE if fmt_type == PCM else 8000


def _decode_to_pcm16(data: bytes, fmt_type: str) -> bytes:
    if fmt_type == PCMU:
        return audioop.ulaw2lin(data, 2)
    if fmt_type == PCMA:
        return audioop.alaw2lin(data, 2)
    return data


def threshold_to_rms(threshold: float) -> float:
    """Map the API's 0..1 VAD threshold onto an RMS level of 16-bit audio.

    0.5 (the default) is -40 dBFS, 0 is -60 dBFS and 1 is -20 dBFS: quiet phone-line noise sits near
    -60 dBFS and speech peaks well above -30 dBFS, so the default triggers on speech but not hiss,
    and "higher needs louder audio", as the real parameter promises.
    """
    return _dbfs_to_rms(-60.0 + 40.0 * threshold)


def _dbfs_to_rms(dbfs: float) -> float:
    return float(32768.0 * 10.0 ** (dbfs / 20.0))


# --------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class Item:
    """One conversation item as the simulator keeps it (no audio bytes, only durations)."""

    id: str
    type: str  # "message", "function_call", "function_call_output"
    role: str | None  # "user", "assistant", "system"
    content_type: str  # "input_audio", "input_text", "output_audio", "output_text", or "" for others
    text: str = ""  # input text, or the (possibly truncated) assistant transcript
    audio_ms: float = 0.0  # user audio length, or assistant audio generated so far
    kept_ms: float | None = None  # assistant audio still in context after a truncate (None: all of it)
    status: str = "completed"
    raw: JSON | None = None  # the client's own item for conversation.item.create (echoed back)

    @property
    def context_audio_ms(self) -> float:
        return self.audio_ms if self.kept_ms is None else min(self.kept_ms, self.audio_ms)


@dataclass(slots=True)
class ResponseRecord:
    """What happened to one response; kept in ``SimulatedSession.responses`` for inspection."""

    id: str
    item_id: str | None
    output_format: str
    status: str = "in_progress"
    reason: str | None = None
    audio_ms: float = 0.0
    audio_bytes: int = 0
    usage: JSON | None = None


@dataclass(slots=True)
class _ActiveResponse:
    record: ResponseRecord
    item: Item | None  # None for an out-of-band response (conversation "none")
    modality: str  # "audio" or "text"
    fmt: JSON
    voice: Any
    start: float
    source: bytes
    total_bytes: int
    chunk_bytes: int
    n_chunks: int
    words: list[str]
    input_usage: tuple[int, int, int, int]  # text, audio, cached text, cached audio
    context_keys: list[tuple[str, int, int]]
    sent_chunks: int = 0
    sent_words: int = 0
    audio_done: bool = False

    def deadline(self, delay_s: float, interval_s: float) -> float:
        return self.start + delay_s + self.sent_chunks * interval_s


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


def _normalize_turn_detection(td: JSON) -> JSON:
    if td["type"] == "server_vad":
        return {
            "type": "server_vad",
            "threshold": td.get("threshold", 0.5),
            "prefix_padding_ms": td.get("prefix_padding_ms", 300),
            "silence_duration_ms": td.get("silence_duration_ms", 500),
            "idle_timeout_ms": td.get("idle_timeout_ms"),
            "create_response": td.get("create_response", True),
            "interrupt_response": td.get("interrupt_response", True),
        }
    return {
        "type": "semantic_vad",
        "eagerness": td.get("eagerness", "auto"),
        "create_response": td.get("create_response", True),
        "interrupt_response": td.get("interrupt_response", True),
    }


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(param: str, expected: str, value: Any) -> ClientError:
    return ClientError(
        "invalid_type",
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param,
    )


def _unknown(param: str) -> ClientError:
    return ClientError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def _missing(param: str) -> ClientError:
    return ClientError("missing_required_parameter", f"Missing required parameter: '{param}'.", param)


def _check_keys(obj: JSON, allowed: frozenset[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _unknown(f"{prefix}.{key}")


def _require_obj(value: Any, param: str) -> JSON:
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object", value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_format(value: Any, param: str) -> JSON:
    """Validate a GA audio format object; returns it normalised."""
    fmt = _require_obj(value, param)
    if "type" not in fmt:
        raise _missing(f"{param}.type")
    kind = fmt["type"]
    if kind not in (PCM, PCMU, PCMA):
        raise ClientError(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: 'audio/pcm', 'audio/pcmu', and 'audio/pcma'.",
            f"{param}.type",
        )
    if kind != PCM:
        _check_keys(fmt, frozenset({"type"}), param)
        return {"type": kind}
    _check_keys(fmt, frozenset({"type", "rate"}), param)
    if "rate" not in fmt:
        # An adapter reports the real API rejecting PCM without a rate (reference §2.1).
        raise _missing(f"{param}.rate")
    rate = fmt["rate"]
    if not _is_int(rate):
        raise _invalid_type(f"{param}.rate", "an integer", rate)
    # Codes as seen live: 16000 got integer_below_min_value ("Expected a value >= 24000").
    if rate < PCM_RATE:
        raise ClientError(
            "integer_below_min_value",
            f"Invalid '{param}.rate': integer below minimum value. "
            f"Expected a value >= {PCM_RATE}, but got {rate} instead.",
            f"{param}.rate",
        )
    if rate > PCM_RATE:
        raise ClientError(
            "integer_above_max_value",
            f"Invalid '{param}.rate': integer above maximum value. "
            f"Expected a value <= {PCM_RATE}, but got {rate} instead.",
            f"{param}.rate",
        )
    return {"type": PCM, "rate": PCM_RATE}


def _validate_turn_detection(value: Any, param: str) -> JSON | None:
    if value is None:
        return None
    td = _require_obj(value, param)
    if "type" not in td:
        raise _missing(f"{param}.type")
    kind = td["type"]
    if kind == "server_vad":
        _check_keys(td, _SERVER_VAD_KEYS, param)
    elif kind == "semantic_vad":
        _check_keys(td, _SEMANTIC_VAD_KEYS, param)
        eagerness = td.get("eagerness", "auto")
        if eagerness not in _SEMANTIC_SILENCE_MS:
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{eagerness}'. Supported values are: 'low', 'medium', 'high', and 'auto'.",
                f"{param}.eagerness",
            )
    else:
        raise ClientError(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: 'server_vad' and 'semantic_vad'.",
            f"{param}.type",
        )
    for key in ("create_response", "interrupt_response"):
        # `create_response: null` is rejected as invalid_type by the real API (reference §8.3).
        if key in td and not isinstance(td[key], bool):
            raise _invalid_type(f"{param}.{key}", "a boolean", td[key])
    if "threshold" in td:
        threshold = td["threshold"]
        if not _is_number(threshold):
            raise _invalid_type(f"{param}.threshold", "a decimal", threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ClientError(
                "invalid_value",
                f"Invalid '{param}.threshold': expected a value between 0.0 and 1.0, got {threshold}.",
                f"{param}.threshold",
            )
    for key in ("prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"):
        if key in td and not (td[key] is None and key == "idle_timeout_ms"):
            v = td[key]
            if not _is_int(v):
                raise _invalid_type(f"{param}.{key}", "an integer", v)
            if v < 0:
                raise ClientError(
                    "integer_below_min_value",
                    f"Invalid '{param}.{key}': integer below minimum value. "
                    f"Expected a value >= 0, but got {v} instead.",
                    f"{param}.{key}",
                )
    return _normalize_turn_detection(td)


def _validate_voice(value: Any, param: str) -> Any:
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return {"id": value["id"]}
    if not isinstance(value, str):
        raise _invalid_type(param, "a string", value)
    if value not in VOICES:
        listed = ", ".join(f"'{v}'" for v in sorted(VOICES))
        raise ClientError(
            "invalid_value", f"Invalid value: '{value}'. Supported values are: {listed}.", param
        )
    return value


def _validate_modalities(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise _invalid_type(param, "an array of strings", value)
    if len(value) != 1 or value[0] not in ("audio", "text"):
        # Both at once is not allowed in GA (reference §2.3).
        raise ClientError(
            "invalid_value",
            f"Invalid value for '{param}': expected exactly one of 'audio' or 'text'.",
            param,
        )
    return list(value)


def _validate_max_tokens(value: Any, param: str) -> Any:
    if value == "inf":
        return value
    if not _is_int(value):
        raise _invalid_type(param, "an integer or 'inf'", value)
    if not 1 <= value <= 4096:
        raise ClientError("invalid_value", f"Invalid '{param}': expected a value between 1 and 4096.", param)
    return value


def _error_payload(
    event_id: str, code: str | None, message: str, param: str | None, client_event_id: str | None
) -> JSON:
    return {
        "type": "error",
        "event_id": event_id,
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }


def error_event(code: str | None, message: str, *, event_id: str = "event_sim_error") -> str:
    """A connection-level ``error`` event (auth, beta shape, model), for the server to send before closing."""
    return json.dumps(_error_payload(event_id, code, message, None, None), separators=(",", ":"))


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
    ) -> None:
        self.options = options or SimulatorOptions()
        self.model = model
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

    # ------------------------------------------------------------------ public API

    def connect(self, now: float) -> list[str]:
        """Start the session; returns ``[session.created]``."""
        self.connected_at = now
        return self._dump([self._event("session.created", session=self.effective_session())])

    def receive(self, text: str, now: float) -> list[str]:
        """Handle one client text frame."""
        if self.close_requested is not None:
            return []
        out: list[JSON] = self._expire_if_due(now)
        if out:
            return self._dump(out)
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            if self.options.record_events:
                self.received_events.append({"_invalid_json": text[:200]})
            message = (
                f"Invalid event: failed to parse JSON value. {exc.msg} at line {exc.lineno} "
                f"column {exc.colno}."
            )
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
        if self.close_requested is not None:
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
        """Produce the timed output due at ``now`` (audio deltas, response end, session expiry)."""
        if self.close_requested is not None:
            return []
        out = self._expire_if_due(now)
        if not out:
            out = self._advance_response(now)
        return self._dump(out)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to emit (None: only client input can change that)."""
        if self.close_requested is not None or self.connected_at is None:
            return None
        deadlines = [self.connected_at + self.options.max_session_s]
        active = self._active
        if active is not None and active.modality == "audio":
            deadlines.append(active.deadline(self._delay_s, self._interval_s))
        return min(deadlines)

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
        ev = _error_payload(self._new_id("event"), code, message, param, client_event_id)
        self.errors.append(ev["error"])
        return ev

    def _dump(self, events: list[JSON]) -> list[str]:
        if self.options.record_events:
            self.emitted_events.extend(events)
        return [json.dumps(ev, separators=(",", ":")) for ev in events]

    def _expire_if_due(self, now: float) -> list[JSON]:
        if self.connected_at is None or now < self.connected_at + self.options.max_session_s:
            return []
        self.expired = True
        minutes = self.options.max_session_s / 60.0
        shown = f"{minutes:g}"
        self.close_requested = (1000, "session_expired")
        self._active = None
        return [
            self._error(
                "session_expired", f"Your session hit the maximum duration of {shown} minutes.", None, None
            )
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
                    "turn_detection": _normalize_turn_detection({"type": "server_vad"}),
                },
                "output": {"format": {"type": PCM, "rate": PCM_RATE}, "voice": "alloy", "speed": 1.0},
            },
        }

    def _dispatch(self, event: JSON, now: float) -> list[JSON]:
        kind = event.get("type")
        if kind is None:
            raise _missing("type")
        if not isinstance(kind, str):
            raise _invalid_type("type", "a string", kind)
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
            raise _missing("session")
        patch = _require_obj(event["session"], "session")
        # Validate everything before applying anything: a rejected update changes nothing, which is
        # exactly the trap the real API sets (the session carries on with defaults).
        new = json.loads(json.dumps(self.config))
        if "type" not in patch:
            raise _missing("session.type")
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
        _check_keys(patch, _SESSION_KEYS, "session")
        if "model" in patch:
            if not isinstance(patch["model"], str):
                raise _invalid_type("session.model", "a string", patch["model"])
            if patch["model"] != self.model:
                raise ClientError(
                    "invalid_value", "Cannot change the model of an existing session.", "session.model"
                )
        if "instructions" in patch:
            if not isinstance(patch["instructions"], str):
                raise _invalid_type("session.instructions", "a string", patch["instructions"])
            new["instructions"] = patch["instructions"]
        if "output_modalities" in patch:
            new["output_modalities"] = _validate_modalities(
                patch["output_modalities"], "session.output_modalities"
            )
        if "max_output_tokens" in patch:
            new["max_output_tokens"] = _validate_max_tokens(
                patch["max_output_tokens"], "session.max_output_tokens"
            )
        if "tools" in patch:
            if not isinstance(patch["tools"], list):
                raise _invalid_type("session.tools", "an array", patch["tools"])
            new["tools"] = patch["tools"]
        for key in ("tool_choice", "tracing", "truncation", "prompt", "include"):
            if key in patch:
                new[key] = patch[key]
        for key in ("reasoning", "parallel_tool_calls"):
            if key in patch:
                new[key] = patch[key]
        if "audio" in patch:
            audio = _require_obj(patch["audio"], "session.audio")
            _check_keys(audio, frozenset({"input", "output"}), "session.audio")
            if "input" in audio:
                self._patch_input(_require_obj(audio["input"], "session.audio.input"), new["audio"]["input"])
            if "output" in audio:
                self._patch_output(
                    _require_obj(audio["output"], "session.audio.output"), new["audio"]["output"]
                )
        old_td = self.turn_detection
        old_in = self.input_format
        self.config = new
        if self.turn_detection != old_td or self.input_format != old_in:
            # A new detector or a new input encoding starts from a clean slate.
            self._vad = _Vad()
            self._odd_byte = b""
        return [self._event("session.updated", session=self.effective_session())]

    def _patch_input(self, patch: JSON, target: JSON) -> None:
        p = "session.audio.input"
        _check_keys(patch, _AUDIO_INPUT_KEYS, p)
        if "format" in patch:
            target["format"] = validate_format(patch["format"], f"{p}.format")
        if "turn_detection" in patch:
            target["turn_detection"] = _validate_turn_detection(
                patch["turn_detection"], f"{p}.turn_detection"
            )
        if "transcription" in patch:
            tr = patch["transcription"]
            if tr is None:
                target["transcription"] = None
            else:
                tr = _require_obj(tr, f"{p}.transcription")
                _check_keys(tr, _TRANSCRIPTION_KEYS, f"{p}.transcription")
                target["transcription"] = {"model": None, "language": None, "prompt": None, **tr}
        if "noise_reduction" in patch:
            nr = patch["noise_reduction"]
            if nr is not None:
                nr = _require_obj(nr, f"{p}.noise_reduction")
                _check_keys(nr, frozenset({"type"}), f"{p}.noise_reduction")
                if nr.get("type") not in ("near_field", "far_field"):
                    raise ClientError(
                        "invalid_value",
                        f"Invalid value: '{nr.get('type')}'. Supported values are: 'near_field' and "
                        "'far_field'.",
                        f"{p}.noise_reduction.type",
                    )
            target["noise_reduction"] = nr

    def _patch_output(self, patch: JSON, target: JSON) -> None:
        p = "session.audio.output"
        _check_keys(patch, _AUDIO_OUTPUT_KEYS, p)
        if "format" in patch:
            target["format"] = validate_format(patch["format"], f"{p}.format")
        if "voice" in patch:
            voice = _validate_voice(patch["voice"], f"{p}.voice")
            if self._assistant_spoke and voice != target["voice"]:
                raise ClientError(
                    "cannot_update_voice",
                    "Cannot update a conversation's voice if assistant audio is present.",
                    f"{p}.voice",
                )
            target["voice"] = voice
        if "speed" in patch:
            speed = patch["speed"]
            if not _is_number(speed):
                raise _invalid_type(f"{p}.speed", "a decimal", speed)
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
            raise _missing("audio")
        audio = event["audio"]
        if not isinstance(audio, str):
            raise _invalid_type("audio", "a string", audio)
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
        return self._run_vad(_decode_to_pcm16(data, fmt), _sample_rate(fmt), start_ms, now)

    def _run_vad(self, pcm: bytes, rate: int, start_ms: float, now: float) -> list[JSON]:
        td = self.turn_detection
        assert td is not None
        vad = self._vad
        if self.options.vad_threshold_dbfs is not None:
            start_level = _dbfs_to_rms(self.options.vad_threshold_dbfs)
        else:
            start_level = threshold_to_rms(float(td.get("threshold", 0.5)))
        # Hysteresis: once speaking, quieter syllables (half the start level, -6 dB) keep the turn open.
        keep_level = start_level / 2.0
        silence_ms = (
            int(td["silence_duration_ms"])
            if td["type"] == "server_vad"
            else _SEMANTIC_SILENCE_MS[td.get("eagerness", "auto")]
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
        out = [
            self._event(
                "input_audio_buffer.speech_started", audio_start_ms=int(vad.start_ms), item_id=vad.item_id
            )
        ]
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
            raise _missing("item")
        raw = _require_obj(event["item"], "item")
        if "type" not in raw:
            raise _missing("item.type")
        kind = raw["type"]
        item_id = raw.get("id")
        if item_id is not None:
            if not isinstance(item_id, str):
                raise _invalid_type("item.id", "a string", item_id)
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
        elif kind in ("function_call", "function_call_output"):
            text = str(raw.get("output", raw.get("arguments", "")))
            item = Item(id=item_id, type=kind, role=None, content_type="", text=text, raw=dict(raw))
        else:
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', and "
                "'function_call_output'.",
                "item.type",
            )
        prev_id = self.items[-1].id if self.items else None
        self.items.append(item)
        return [
            self._event("conversation.item.added", previous_item_id=prev_id, item=self._item_json(item)),
            self._event("conversation.item.done", previous_item_id=prev_id, item=self._item_json(item)),
        ]

    def _message_item(self, raw: JSON, item_id: str) -> Item:
        role = raw.get("role")
        if role is None:
            raise _missing("item.role")
        if role not in ("user", "assistant", "system"):
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', and 'system'.",
                "item.role",
            )
        content = raw.get("content")
        if content is None:
            raise _missing("item.content")
        if not isinstance(content, list):
            raise _invalid_type("item.content", "an array", content)
        allowed = {
            "user": ("input_text", "input_audio", "input_image"),
            "system": ("input_text",),
            "assistant": ("output_text", "output_audio"),
        }[role]
        text_parts: list[str] = []
        audio_ms = 0.0
        for i, part in enumerate(content):
            part = _require_obj(part, f"item.content[{i}]")
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
                    raise _invalid_type(f"item.content[{i}].text", "a string", text)
                text_parts.append(text)
            elif ptype == "input_audio":
                audio = part.get("audio")
                if not isinstance(audio, str):
                    raise _invalid_type(f"item.content[{i}].audio", "a string", audio)
                try:
                    audio_ms += len(base64.b64decode(audio, validate=True)) / bytes_per_ms(self.input_format)
                except (binascii.Error, ValueError):
                    raise ClientError(
                        "invalid_value",
                        f"Invalid 'item.content[{i}].audio'. Expected base64-encoded audio bytes.",
                        f"item.content[{i}].audio",
                    ) from None
        raw_echo = dict(raw)
        raw_echo.pop("id", None)
        return Item(
            id=item_id,
            type="message",
            role=str(role),
            content_type="input_audio" if audio_ms and not text_parts else "input_text",
            text=" ".join(text_parts),
            audio_ms=audio_ms,
            raw=raw_echo,
        )

    def _existing_item(self, event: JSON, code: str, doing: str) -> Item:
        item_id = event.get("item_id")
        if item_id is None:
            raise _missing("item_id")
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
                raise _missing(key)
        item_id, content_index, end_ms = event["item_id"], event["content_index"], event["audio_end_ms"]
        if not isinstance(item_id, str):
            raise _invalid_type("item_id", "a string", item_id)
        if not _is_int(content_index):
            raise _invalid_type("content_index", "an integer", content_index)
        if not _is_int(end_ms):
            raise _invalid_type("audio_end_ms", "an integer", end_ms)
        item = self.item(item_id)
        try:
            if item is None:
                raise ClientError(
                    "item_truncate_invalid_item_id",
                    f"Error truncating item: the item with id '{item_id}' does not exist.",
                    "item_id",
                )
            if item.role != "assistant" or item.content_type != "output_audio":
                raise ClientError(
                    "invalid_value", "Only model output audio messages can be truncated", "item_id"
                )
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
            params = _require_obj(event["response"], "response")
            _check_keys(params, _RESPONSE_KEYS, "response")
        if self._active is not None:
            cid = event.get("event_id")
            return [self._active_response_error(cid if isinstance(cid, str) else None)]
        return self._start_response(now, params)

    def _on_response_cancel(self, event: JSON, now: float) -> list[JSON]:
        active = self._active
        rid = event.get("response_id")
        if active is None:
            raise ClientError(
                "response_cancel_not_active", "Cancellation failed: no active response found", None
            )
        if rid is not None and rid != active.record.id:
            raise ClientError("invalid_value", f"Response '{rid}' does not exist.", "response_id")
        return self._finish_response(active, "cancelled", "client_cancelled")

    def _start_response(self, now: float, params: JSON | None) -> list[JSON]:
        params = params or {}
        instructions = params.get("instructions", self.config["instructions"])
        if not isinstance(instructions, str):
            raise _invalid_type("response.instructions", "a string", instructions)
        modalities = self.config["output_modalities"]
        if "output_modalities" in params:
            modalities = _validate_modalities(params["output_modalities"], "response.output_modalities")
        fmt = self.config["audio"]["output"]["format"]
        voice = self.config["audio"]["output"]["voice"]
        audio_params = params.get("audio")
        if audio_params is not None:
            audio_params = _require_obj(audio_params, "response.audio")
            _check_keys(audio_params, frozenset({"output"}), "response.audio")
            out_params = _require_obj(audio_params.get("output", {}), "response.audio.output")
            _check_keys(out_params, frozenset({"format", "voice"}), "response.audio.output")
            if "format" in out_params:
                fmt = validate_format(out_params["format"], "response.audio.output.format")
            if "voice" in out_params:
                voice = _validate_voice(out_params["voice"], "response.audio.output.voice")
        conversation = params.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{conversation}'. Supported values are: 'auto' and 'none'.",
                "response.conversation",
            )
        in_band = conversation == "auto"

        # Bill the whole conversation so far as input (reference §5.4), before this answer joins it.
        keys: list[tuple[str, int, int]] = [("instructions:" + instructions, _text_tokens(instructions), 0)]
        for it in self.items:
            keys.append(self._context_key(it))
        text_in = sum(k[1] for k in keys)
        audio_in = sum(k[2] for k in keys)
        cached_text, cached_audio = self._cached(keys)

        modality = modalities[0]
        record = ResponseRecord(id=self._new_id("resp"), item_id=None, output_format=fmt["type"])
        self.responses.append(record)
        item = Item(
            id=self._new_id("item"),
            type="message",
            role="assistant",
            content_type="output_audio" if modality == "audio" else "output_text",
            status="in_progress",
        )
        record.item_id = item.id
        source = assistant_audio(fmt["type"])
        bpm = bytes_per_ms(fmt["type"])
        total_ms = (
            self.options.response_audio_ms
            if self.options.response_audio_ms is not None
            else len(source) / bpm
        )
        total_bytes = int(total_ms * bpm) if modality == "audio" else 0
        if fmt["type"] == PCM:
            total_bytes -= total_bytes % 2
        chunk_bytes = max(2, self.options.delta_ms * bpm)
        full_ms = len(source) / bpm
        words = self.options.assistant_transcript.split()
        if modality == "audio":
            n_words = max(1, round(len(words) * total_ms / full_ms)) if words else 0
            resp_words = (words * (n_words // max(1, len(words)) + 1))[:n_words]
        else:
            resp_words = words
        active = _ActiveResponse(
            record=record,
            item=item if in_band else None,
            modality=modality,
            fmt=fmt,
            voice=voice,
            start=now,
            source=source,
            total_bytes=total_bytes,
            chunk_bytes=chunk_bytes,
            n_chunks=math.ceil(total_bytes / chunk_bytes) if total_bytes else 0,
            words=resp_words,
            input_usage=(text_in, audio_in, cached_text, cached_audio),
            context_keys=keys,
        )
        self._active = active
        prev_id = self.items[-1].id if self.items else None
        if in_band:
            self.items.append(item)
        out = [
            self._event("response.created", response=self._response_json(active, "in_progress", None)),
            self._event(
                "response.output_item.added",
                response_id=record.id,
                output_index=0,
                item=self._item_json(item, final=False),
            ),
        ]
        if in_band:
            out.append(
                self._event(
                    "conversation.item.added",
                    previous_item_id=prev_id,
                    item=self._item_json(item, final=False),
                )
            )
        part = {"type": "audio", "transcript": ""} if modality == "audio" else {"type": "text", "text": ""}
        out.append(
            self._event(
                "response.content_part.added",
                response_id=record.id,
                item_id=item.id,
                output_index=0,
                content_index=0,
                part=part,
            )
        )
        if modality == "text":
            # Text answers are tiny; the real API streams them within a few ms, so all at once is faithful.
            for i, word in enumerate(resp_words):
                out.append(
                    self._event(
                        "response.output_text.delta",
                        response_id=record.id,
                        item_id=item.id,
                        output_index=0,
                        content_index=0,
                        delta=word if i == 0 else " " + word,
                    )
                )
            active.sent_words = len(resp_words)
            out.extend(self._finish_response(active, "completed", None))
        elif active.n_chunks == 0:
            out.extend(self._finish_response(active, "completed", None))
        return out

    def _context_key(self, it: Item) -> tuple[str, int, int]:
        if it.role == "assistant" and it.content_type == "output_audio":
            # Assistant audio stays in context as audio input tokens, only as much as was kept.
            return (it.id, 0, round(it.context_audio_ms / _IN_AUDIO_MS_PER_TOKEN))
        # The model hears user audio, not its transcript: the transcript of VAD-committed audio is
        # billed by the transcription model, not as context. Client-sent text always counts.
        text = _text_tokens(it.text) if it.raw is not None or it.content_type != "input_audio" else 0
        return (it.id, text, round(it.audio_ms / _IN_AUDIO_MS_PER_TOKEN))

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

    def _advance_response(self, now: float) -> list[JSON]:
        active = self._active
        if active is None or active.modality != "audio":
            return []
        out: list[JSON] = []
        rec = active.record
        item = active.item
        item_id = rec.item_id or ""
        n_words = len(active.words)
        bpm = bytes_per_ms(active.fmt["type"])
        while (
            active.sent_chunks < active.n_chunks and active.deadline(self._delay_s, self._interval_s) <= now
        ):
            k = active.sent_chunks
            lo = k * active.chunk_bytes
            hi = min(active.total_bytes, lo + active.chunk_bytes)
            chunk = _loop_slice(active.source, lo, hi)
            active.sent_chunks += 1
            rec.audio_bytes += len(chunk)
            rec.audio_ms = rec.audio_bytes / bpm
            if item is not None:
                item.audio_ms = rec.audio_ms
            self._assistant_spoke = True
            out.append(
                self._event(
                    "response.output_audio.delta",
                    response_id=rec.id,
                    item_id=item_id,
                    output_index=0,
                    content_index=0,
                    delta=base64.b64encode(chunk).decode("ascii"),
                )
            )
            due_words = n_words * active.sent_chunks // active.n_chunks
            while active.sent_words < due_words:
                word = active.words[active.sent_words]
                out.append(
                    self._event(
                        "response.output_audio_transcript.delta",
                        response_id=rec.id,
                        item_id=item_id,
                        output_index=0,
                        content_index=0,
                        delta=word if active.sent_words == 0 else " " + word,
                    )
                )
                active.sent_words += 1
        if active.sent_chunks >= active.n_chunks:
            out.extend(self._finish_response(active, "completed", None))
        return out

    def _finish_response(self, active: _ActiveResponse, status: str, reason: str | None) -> list[JSON]:
        rec = active.record
        rec.status = status
        rec.reason = reason
        item_id = rec.item_id or ""
        spoken = " ".join(active.words[: active.sent_words])
        out: list[JSON] = []
        common = {"response_id": rec.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        item = active.item or Item(
            id=item_id, type="message", role="assistant", content_type="output_audio", audio_ms=rec.audio_ms
        )
        if item.kept_ms is None:
            item.text = spoken
        item.status = "completed" if status == "completed" else "incomplete"
        if active.modality == "audio":
            out.append(self._event("response.output_audio.done", **common))
            out.append(self._event("response.output_audio_transcript.done", transcript=spoken, **common))
            part: JSON = {"type": "audio", "transcript": spoken}
        else:
            out.append(self._event("response.output_text.done", text=spoken, **common))
            part = {"type": "text", "text": spoken}
        out.append(self._event("response.content_part.done", part=part, **common))
        item_json = self._item_json(item)
        if active.item is not None:
            prev = self._previous_id(item.id)
            out.append(self._event("conversation.item.done", previous_item_id=prev, item=item_json))
        out.append(
            self._event("response.output_item.done", response_id=rec.id, output_index=0, item=item_json)
        )

        text_in, audio_in, cached_text, cached_audio = active.input_usage
        text_out = _text_tokens(spoken)
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
        if active.item is not None:
            self._cache_keys.append(self._context_key(item))
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
        output: list[JSON] = []
        if status != "in_progress" and active.record.item_id is not None:
            item = active.item or self.item(active.record.item_id)
            if item is not None:
                output = [self._item_json(item)]
        return {
            "object": "realtime.response",
            "id": active.record.id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": self.conversation_id if active.item is not None else None,
            "output_modalities": [active.modality],
            "max_output_tokens": self.config["max_output_tokens"],
            "audio": {"output": {"format": active.fmt, "voice": active.voice}},
            "usage": usage,
            "metadata": None,
        }


def _loop_slice(source: bytes, lo: int, hi: int) -> bytes:
    """``source[lo:hi]`` as if ``source`` repeated forever (answers longer than the recording loop it)."""
    n = len(source)
    if hi <= n:
        return source[lo:hi]
    parts: list[bytes] = []
    pos = lo
    while pos < hi:
        start = pos % n
        take = min(hi - pos, n - start)
        parts.append(source[start : start + take])
        pos += take
    return b"".join(parts)


__all__ = [
    "CLIENT_EVENT_TYPES",
    "PCM",
    "PCMA",
    "PCMU",
    "ClientError",
    "Item",
    "ResponseRecord",
    "SimulatedSession",
    "SimulatorOptions",
    "assistant_audio",
    "bytes_per_ms",
    "design_lowpass",
    "error_event",
    "threshold_to_rms",
    "validate_format",
]
