"""A simulated phone caller that speaks the Twilio Media Streams protocol (``bridge call``).

It plays the carrier's side of a bidirectional ``<Connect><Stream>``: it opens the WebSocket,
sends ``connected`` and ``start``, streams 20 ms G.711 frames (``media``) and optional ``dtmf``,
and ends with ``stop``. What the bridge sends back is treated the way Twilio treats it: ``media``
goes into a playback buffer that plays at real time, a ``mark`` is echoed when the audio queued
before it has played (at once when nothing is buffered), and ``clear`` drops the buffered audio
and echoes every pending mark. Everything is recorded in a :class:`CallResult` so the demo,
the end-to-end tests and load tests can assert on what a real caller would have heard.

Pure parts (no trio, no sockets): :class:`PlaybackBuffer`, the option/step types and
:func:`summarise`. The trio part is :func:`run_call`; :func:`main` is the CLI.

Times in a :class:`CallResult` are seconds since the WebSocket opened ("stream start") on the
trio clock, except ``started_at``/``ended_at`` which are Unix wall-clock times for logs.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from bridge.audio.wavfile import CALLER_ALAW, CALLER_ULAW, Wav, bundled, parse_wav

__all__ = [
    "ALAW",
    "LIVE_CALLS",
    "MULAW",
    "CallRegistry",
    "CallResult",
    "CallUpdate",
    "CallerOptions",
    "ClearEvent",
    "InterruptEvent",
    "LiveCall",
    "MarkEvent",
    "Pause",
    "PlaybackBuffer",
    "Say",
    "Step",
    "Utterance",
    "WaitForReply",
    "main",
    "result_to_dict",
    "run_call",
    "summarise",
]

MULAW = "audio/x-mulaw"
ALAW = "audio/x-alaw"
SAMPLE_RATE = 8000
BYTES_PER_MS = 8  # G.711: one byte per sample at 8 kHz
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS  # 160, what Twilio sends per media message
SILENCE_BYTE = {MULAW: 0xFF, ALAW: 0xD5}
DTMF_DIGITS = frozenset("0123456789*#ABCD")

# How long the buffer must have been empty before new audio counts as a new response.
RESPONSE_GAP_MS = 500
# A frame is "voiced" when some sample reaches this linear magnitude (16-bit scale, about
# -36 dBFS). The bundled recording's pauses peak at 8; its quietest speech frames at ~500.
VOICE_THRESHOLD = 500
_MAX_ERRORS_KEPT = 100
# Added before flooring a byte position so that waking exactly at a mark's due time counts
# that mark's audio as played despite float rounding (far below one sample).
_EPSILON_BYTES = 1e-6


# --------------------------------------------------------------------------------------------
# Pure playback model


class PlaybackBuffer:
    """Twilio's outbound playback buffer on a virtual clock (pure: ``now`` is passed in).

    Audio is played in the order received at ``BYTES_PER_MS`` bytes per ms, starting the
    moment it is enqueued into an empty buffer. Marks are remembered at the byte position of
    the end of the audio queued before them and are due when playback reaches it.

    Every method that takes ``now`` first plays the buffer forward to ``now`` and returns the
    names of marks to echo *now*, in order: so no echo is ever lost, whichever method the
    caller happens to call first after a mark became due.

    "Response" (for barge-in metrics): a response begins with the first audio enqueued at the
    start of the call, after a ``clear``, or after the buffer has been empty for more than
    ``response_gap_ms``; it covers all audio received until the next such point. Short gaps
    (the model streaming slower than real time for a moment) therefore do not split a response.
    """

    def __init__(
        self,
        *,
        bytes_per_ms: int = BYTES_PER_MS,
        response_gap_ms: float = RESPONSE_GAP_MS,
        keep_audio: bool = True,
    ) -> None:
        self._bps = bytes_per_ms * 1000.0
        self._response_gap_s = response_gap_ms / 1000.0
        self._keep_audio = keep_audio
        self._chunks: deque[bytes] = deque()
        self._head_offset = 0  # bytes of _chunks[0] already consumed
        # Stream positions count every byte ever enqueued; _pos is what has been consumed
        # (played or cleared), _end is the end of the queued audio.
        self._pos = 0
        self._end = 0
        # While playing: playback (re)started at _anchor_time from position _anchor_pos.
        self._anchor_time = 0.0
        self._anchor_pos = 0
        self._idle_since = -math.inf  # when the buffer last ran empty (-inf: never had audio)
        self._marks: deque[tuple[int, str]] = deque()
        self._new_response_pending = True
        self._response_played_base = 0  # played_bytes when the current response began
        self.played = bytearray()  # audio actually played, in order (when keep_audio)
        self.cleared = bytearray()  # audio dropped by clear, in order (when keep_audio)
        self.played_bytes = 0
        self.cleared_bytes = 0
        self.flushed_marks: list[str] = []  # marks echoed because of a clear, not playback
        self.response_count = 0
        self.response_received_bytes = 0  # audio received in the current response

    # -- queries (no state change) ----------------------------------------------------------

    @property
    def played_ms(self) -> float:
        """Milliseconds of audio played as of the last call that took ``now``."""
        return self.played_bytes / (self._bps / 1000.0)

    def _position_at(self, now: float) -> int:
        if self._pos >= self._end:
            return self._pos
        reached = self._anchor_pos + math.floor((now - self._anchor_time) * self._bps + _EPSILON_BYTES)
        return max(self._pos, min(self._end, reached))

    def buffered_bytes(self, now: float) -> int:
        """Audio queued and not yet played at ``now``."""
        return self._end - self._position_at(now)

    def response_played_ms(self, now: float) -> float:
        """How much of the current response has played at ``now`` (see the class docstring)."""
        played = self.played_bytes + (self._position_at(now) - self._pos)
        return (played - self._response_played_base) / (self._bps / 1000.0)

    def idle_for(self, now: float) -> float | None:
        """Seconds the buffer has been empty at ``now`` (inf if it never held audio), else None."""
        if self._position_at(now) < self._end:
            return None
        if self._pos < self._end:  # ran empty since the last update: when exactly
            return now - (self._anchor_time + (self._end - self._anchor_pos) / self._bps)
        return now - self._idle_since

    def next_due(self) -> float | None:
        """When the next pending mark becomes due, or None when no mark is pending."""
        if not self._marks:
            return None
        return self._anchor_time + (self._marks[0][0] - self._anchor_pos) / self._bps

    def pending_marks(self) -> list[str]:
        return [name for _, name in self._marks]

    # -- updates ----------------------------------------------------------------------------

    def advance(self, now: float) -> list[str]:
        """Play forward to ``now``; return the marks whose audio has now finished playing."""
        target = self._position_at(now)
        if target > self._pos:
            self._consume(target - self._pos, into_played=True)
            if self._pos >= self._end:
                self._idle_since = self._anchor_time + (self._end - self._anchor_pos) / self._bps
        due: list[str] = []
        while self._marks and self._marks[0][0] <= self._pos:
            due.append(self._marks.popleft()[1])
        return due

    def enqueue(self, data: bytes, now: float) -> list[str]:
        """Queue audio for playback; returns marks that became due before ``now``."""
        due = self.advance(now)
        if not data:
            return due
        if self._pos >= self._end:  # empty: playback of this audio starts now
            if self._new_response_pending or now - self._idle_since > self._response_gap_s:
                self._start_response()
            self._anchor_time = now
            self._anchor_pos = self._pos
        self._chunks.append(bytes(data))
        self._end += len(data)
        self.response_received_bytes += len(data)
        return due

    def mark(self, name: str, now: float) -> list[str]:
        """Queue a mark; it is returned at once (after any due ones) if nothing is buffered."""
        due = self.advance(now)
        if self._pos >= self._end:
            due.append(name)
        else:
            self._marks.append((self._end, name))
        return due

    def clear(self, now: float) -> list[str]:
        """Drop all buffered audio; returns the marks due by playback, then all pending ones."""
        due = self.advance(now)
        remaining = self._end - self._pos
        if remaining:
            self._consume(remaining, into_played=False)
        flushed = [name for _, name in self._marks]
        self._marks.clear()
        self.flushed_marks.extend(flushed)
        self._idle_since = now
        self._new_response_pending = True
        return due + flushed

    def _start_response(self) -> None:
        self._new_response_pending = False
        self.response_count += 1
        self.response_received_bytes = 0
        self._response_played_base = self.played_bytes

    def _consume(self, count: int, *, into_played: bool) -> None:
        self._pos += count
        if into_played:
            self.played_bytes += count
        else:
            self.cleared_bytes += count
        sink = self.played if into_played else self.cleared
        while count:
            head = self._chunks[0]
            take = min(count, len(head) - self._head_offset)
            if self._keep_audio:
                sink += head[self._head_offset : self._head_offset + take]
            self._head_offset += take
            count -= take
            if self._head_offset == len(head):
                self._chunks.popleft()
                self._head_offset = 0


# --------------------------------------------------------------------------------------------
# Options and script


@dataclass(frozen=True)
class Say:
    """Send a recording (None: the call's recording) as speech frames."""

    audio: Wav | str | Path | bytes | None = None


@dataclass(frozen=True)
class Pause:
    """Send silence frames for ``ms`` milliseconds."""

    ms: int


@dataclass(frozen=True)
class WaitForReply:
    """Send silence until the assistant's reply has finished playing, at most ``timeout_ms``.

    "Finished": some media arrived after the caller's last voiced frame (or after the wait
    began, if the caller has not spoken) and the playback buffer has then been empty for
    ``settle_ms`` (default: the options' ``reply_settle_ms``). Frames are paced in real time
    even with ``realtime=False``, because the reply plays in real time.
    """

    timeout_ms: int
    settle_ms: int | None = None


Step = Say | Pause | WaitForReply


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class LiveCall:
    """A simulated call in progress, as Twilio's REST API sees it (see :class:`CallRegistry`)."""

    call_sid: str
    account_sid: str
    stream_sid: str
    end_stream: Callable[[CallUpdate], None]
    """Twilio changed the call (new TwiML, a URL, or ``Status=completed``): the stream must end."""


@dataclass(frozen=True)
class CallUpdate:
    """What a REST update of a live call asked for (``POST .../Calls/{CallSid}.json``)."""

    twiml: str | None = None  # the Twiml parameter
    targets: tuple[str, ...] = ()  # what its <Dial> dials (numbers, SIP URIs, clients)
    url: str | None = None  # the Url parameter
    status: str | None = None  # the Status parameter ("completed": hang up)


class CallRegistry:
    """The simulated calls in progress by CallSid, so a fake of Twilio's REST API can act on them
    the way Twilio acts on a real call: a redirect ends the call's media stream (``stop``, then the
    WebSocket closes). Calls register themselves for as long as :func:`run_call` runs."""

    _ENDED_KEPT = 10_000

    def __init__(self) -> None:
        self._live: dict[str, LiveCall] = {}
        self._ended: dict[str, str] = {}  # call_sid -> account_sid, most recent last

    def add(self, call: LiveCall) -> None:
        self._live[call.call_sid] = call

    def remove(self, call_sid: str) -> None:
        call = self._live.pop(call_sid, None)
        if call is not None:
            self._ended[call_sid] = call.account_sid
            while len(self._ended) > self._ENDED_KEPT:
                del self._ended[next(iter(self._ended))]

    def live(self, call_sid: str) -> LiveCall | None:
        return self._live.get(call_sid)

    def ended_account(self, call_sid: str) -> str | None:
        """The account of a call that was live here and has ended (None: never seen, or live)."""
        return self._ended.get(call_sid)


LIVE_CALLS = CallRegistry()
"""Where simulated calls register unless ``CallerOptions.registry`` names another registry."""


@dataclass
class CallerOptions:
    """What the simulated caller does. With ``script`` unset the call is:
    ``leading_silence_ms`` of silence, then ``turns`` times the recording separated by ``gap_ms``
    of silence, then ``trailing_silence_ms`` of silence, then (if set) a ``WaitForReply`` of
    ``wait_for_reply_ms``; then ``stop``. A ``script`` replaces all of that, for example
    ``[Say(), Pause(800), Say()]``.
    """

    url: str
    audio: Wav | str | Path | bytes | None = None  # None: bundled recording for the encoding
    encoding: str = MULAW  # start.mediaFormat.encoding: MULAW or ALAW
    params: dict[str, str] = field(default_factory=dict)  # start.customParameters
    call_sid: str | None = None  # generated "CA" + 32 hex when None
    stream_sid: str | None = None  # "MZ" + 32 hex
    account_sid: str | None = None  # "AC" + 32 hex
    realtime: bool = True  # pace frames every 20 ms; False: as fast as the socket takes them
    speed: float = 1.0  # pacing factor when paced (2.0: a frame every 10 ms)
    leading_silence_ms: int = 0
    trailing_silence_ms: int = 0
    turns: int = 1
    gap_ms: int = 1000
    script: list[Step] | None = None
    hang_up_after_ms: int | None = None  # send stop and close this long after stream start
    wait_for_reply_ms: int | None = None
    reply_settle_ms: int = RESPONSE_GAP_MS
    interrupt_after_assistant_ms: int | None = None  # barge in after this much of a response
    interrupt_audio: Wav | str | Path | bytes | None = None  # None: the call's recording
    max_interrupts: int = 1
    dtmf: list[tuple[int, str]] = field(default_factory=list)  # (ms since stream start, digit)
    extra_headers: dict[str, str] = field(default_factory=dict)
    max_message_size: int = 1 << 20
    connect_timeout_s: float = 10.0
    close_timeout_s: float = 5.0
    send_timeout_s: float = 10.0  # a single send blocked this long aborts the call
    record_audio: bool = True  # keep sent/played/cleared bytes (turn off for load tests)
    registry: CallRegistry | None = None  # where the call registers while live (None: LIVE_CALLS)


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class MarkEvent:
    name: str
    at: float  # seconds since stream start
    cleared: bool = False  # echoed because of a clear rather than playback (echoes only)


@dataclass
class ClearEvent:
    at: float
    response_played_ms: float  # how much of the current response had played
    cleared_bytes: int
    marks_flushed: list[str]


@dataclass
class Utterance:
    index: int  # 0-based, in the order spoken (interrupts included)
    started_at: float
    last_voiced_at: float | None = None  # when the last voiced frame was sent
    ended_at: float | None = None
    reply_at: float | None = None  # first media received after last_voiced_at
    interrupt: bool = False

    @property
    def reply_latency_ms(self) -> float | None:
        """End of caller speech to first model audio, as seen by the caller."""
        if self.last_voiced_at is None or self.reply_at is None:
            return None
        return (self.reply_at - self.last_voiced_at) * 1000.0


@dataclass
class InterruptEvent:
    at: float  # when the barge-in speech began
    response_index: int  # PlaybackBuffer.response_count of the interrupted response
    response_played_ms: float
    clear_at: float | None = None  # first clear received after the barge-in began

    @property
    def clear_latency_ms(self) -> float | None:
        return None if self.clear_at is None else (self.clear_at - self.at) * 1000.0


@dataclass
class CallResult:
    url: str
    call_sid: str
    stream_sid: str
    account_sid: str
    encoding: str
    connected: bool = False
    connect_error: str | None = None
    started_at: float = 0.0  # Unix time when connecting began
    ended_at: float = 0.0  # Unix time when the call was over
    duration_s: float = 0.0  # stream start to end, trio clock
    frames_sent: int = 0
    bytes_sent: int = 0
    audio_sent: bytearray = field(default_factory=bytearray)
    dtmf_sent: list[tuple[float, str]] = field(default_factory=list)
    stop_sent: bool = False
    hung_up_early: bool = False  # hang_up_after_ms cut the script short
    messages_received: int = 0
    media_received: int = 0
    bytes_received: int = 0
    audio_played: bytearray = field(default_factory=bytearray)
    audio_cleared: bytearray = field(default_factory=bytearray)
    played_bytes: int = 0
    cleared_bytes: int = 0
    unplayed_bytes: int = 0  # still buffered when the call ended
    marks_received: list[MarkEvent] = field(default_factory=list)
    marks_echoed: list[MarkEvent] = field(default_factory=list)
    clears: list[ClearEvent] = field(default_factory=list)
    responses: int = 0  # see PlaybackBuffer for what counts as one
    response_starts: list[float] = field(default_factory=list)
    first_media_at: float | None = None
    utterances: list[Utterance] = field(default_factory=list)
    interrupts: list[InterruptEvent] = field(default_factory=list)
    closed_by: Literal["caller", "server"] | None = None
    close_code: int | None = None
    close_reason: str | None = None
    errors: list[str] = field(default_factory=list)  # protocol errors (first 100 kept)
    error_count: int = 0
    unknown_events: dict[str, int] = field(default_factory=dict)
    failure: str | None = None  # why the call ended abnormally on our side (send timeout)
    closed_at: float | None = None  # when the media WebSocket closed (by either side)
    redirected_at: float | None = None  # when Twilio's REST API changed the call (it then stopped)
    redirect: CallUpdate | None = None  # what that update asked for (TwiML and its <Dial> targets)

    @property
    def redirected(self) -> bool:
        return self.redirect is not None

    @property
    def last_mark_echoed_at(self) -> float | None:
        """When the last mark was echoed (its audio had played, or a clear flushed it)."""
        return self.marks_echoed[-1].at if self.marks_echoed else None

    @property
    def ok(self) -> bool:
        """Connected and ended normally (clean close, no send failure)."""
        return self.connected and self.failure is None and self.close_code in (1000, 1001)

    @property
    def reply_latencies_ms(self) -> list[float]:
        return [lat for u in self.utterances if (lat := u.reply_latency_ms) is not None]

    def add_error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < _MAX_ERRORS_KEPT:
            self.errors.append(message)


def result_to_dict(result: CallResult) -> dict[str, Any]:
    """A JSON-ready view of the result: raw audio replaced by byte counts, latencies added."""
    # replace() first so asdict does not deep-copy megabytes of audio only to drop them.
    light = replace(result, audio_sent=bytearray(), audio_played=bytearray(), audio_cleared=bytearray())
    data = asdict(light)
    for key in ("audio_sent", "audio_played", "audio_cleared"):
        data.pop(key)
    data["ok"] = result.ok
    data["reply_latencies_ms"] = result.reply_latencies_ms
    data["last_mark_echoed_at"] = result.last_mark_echoed_at
    for u, raw in zip(result.utterances, data["utterances"], strict=True):
        raw["reply_latency_ms"] = u.reply_latency_ms
    for i, raw in zip(result.interrupts, data["interrupts"], strict=True):
        raw["clear_latency_ms"] = i.clear_latency_ms
    return data


# --------------------------------------------------------------------------------------------
# Audio helpers (pure)


def _g711_magnitudes(encoding: str) -> list[int]:
    """Linear magnitude (16-bit scale) of each G.711 byte; ITU-T G.711 expansion."""
    out = []
    for byte in range(256):
        if encoding == MULAW:
            u = ~byte & 0xFF
            exp, mant = (u >> 4) & 7, u & 0x0F
            out.append((((mant << 3) + 0x84) << exp) - 0x84)
        else:
            a = byte ^ 0x55
            exp, mant = (a >> 4) & 7, a & 0x0F
            out.append((mant << 4) + 8 if exp == 0 else ((mant << 4) + 0x108) << (exp - 1))
    return out


def _loud_table(encoding: str) -> bytes:
    # bytes.translate to 0/1 per sample makes "is any sample loud" one C-level scan per frame.
    return bytes(1 if m >= VOICE_THRESHOLD else 0 for m in _g711_magnitudes(encoding))


def _frames(data: bytes, silence: int) -> list[bytes]:
    """Split into 160-byte frames; the last one is padded with silence, as a phone would."""
    frames = [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]
    if frames and len(frames[-1]) < FRAME_BYTES:
        frames[-1] = frames[-1] + bytes([silence]) * (FRAME_BYTES - len(frames[-1]))
    return frames


def _load_audio(spec: Wav | str | Path | bytes | None, encoding: str) -> bytes:
    if spec is None:
        return bundled(CALLER_ULAW if encoding == MULAW else CALLER_ALAW).data
    if isinstance(spec, bytes | bytearray):
        return bytes(spec)  # raw G.711 in the call's encoding
    wav = spec if isinstance(spec, Wav) else parse_wav(Path(spec).read_bytes())
    wanted = "ulaw" if encoding == MULAW else "alaw"
    if wav.encoding != wanted or wav.sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"caller audio must be {wanted} at {SAMPLE_RATE} Hz to match {encoding}; "
            f"got {wav.encoding} at {wav.sample_rate} Hz"
        )
    return wav.data


def _validate(options: CallerOptions) -> None:
    if not options.url.startswith(("ws://", "wss://")):
        raise ValueError(f"url must start with ws:// or wss://, got {options.url!r}")
    if options.encoding not in SILENCE_BYTE:
        raise ValueError(f"encoding must be {MULAW} or {ALAW}, got {options.encoding!r}")
    if not options.speed > 0:
        raise ValueError("speed must be positive")
    if options.turns < 0:
        raise ValueError("turns must be >= 0")
    for at_ms, digit in options.dtmf:
        if digit not in DTMF_DIGITS or at_ms < 0:
            raise ValueError(f"bad DTMF entry {(at_ms, digit)!r}: digit one of 0-9 * # A-D, time >= 0")


def _default_script(options: CallerOptions) -> list[Step]:
    steps: list[Step] = []
    if options.leading_silence_ms > 0:
        steps.append(Pause(options.leading_silence_ms))
    for turn in range(options.turns):
        if turn:
            steps.append(Pause(options.gap_ms))
        steps.append(Say())
    if options.trailing_silence_ms > 0:
        steps.append(Pause(options.trailing_silence_ms))
    if options.wait_for_reply_ms is not None:
        steps.append(WaitForReply(options.wait_for_reply_ms))
    return steps


# --------------------------------------------------------------------------------------------
# The call (trio)


class _HangUp(Exception):
    """The call cannot go on from our side (a send failed or timed out)."""


@dataclass(frozen=True)
class _Speech:
    frames: list[bytes]
    last_voiced: int  # index of the last voiced frame, -1 if none


class _Call:
    def __init__(self, options: CallerOptions) -> None:
        _validate(options)
        self.options = o = options
        self.silence = SILENCE_BYTE[options.encoding]
        self.silence_frame = bytes([self.silence]) * FRAME_BYTES
        self._loud = _loud_table(options.encoding)
        self.recording = self._speech(_load_audio(options.audio, options.encoding))
        self.interrupt_speech = (
            self.recording
            if options.interrupt_audio is None
            else self._speech(_load_audio(options.interrupt_audio, options.encoding))
        )
        self.script = options.script if options.script is not None else _default_script(options)
        # Resolve every Say up front so bad audio fails before we dial.
        self._said: dict[int, _Speech] = {
            i: self.recording if step.audio is None else self._speech(_load_audio(step.audio, o.encoding))
            for i, step in enumerate(self.script)
            if isinstance(step, Say)
        }
        self.result = CallResult(
            url=options.url,
            call_sid=options.call_sid or _new_sid("CA"),
            stream_sid=options.stream_sid or _new_sid("MZ"),
            account_sid=options.account_sid or _new_sid("AC"),
            encoding=options.encoding,
        )
        self.buffer = PlaybackBuffer(keep_audio=options.record_audio)
        self.t0 = 0.0
        self._seq = 0
        self._chunk = 0
        self._send_lock = trio.StrictFIFOLock()
        self._changed = trio.Event()
        self._echo_tx, self._echo_rx = trio.open_memory_channel[tuple[str, bool]](math.inf)
        self._hanging_up = False
        self._next_send_at = 0.0
        # Sorted by time only (stable), so digits given for the same moment keep their order.
        self._dtmf = deque(sorted(options.dtmf, key=lambda entry: entry[0]))
        self._last_voiced_at: float | None = None
        self._last_media_at: float | None = None
        # The script runs in this scope: a hang-up deadline or a REST redirect ends it early.
        self._script_scope = trio.CancelScope()
        self.registry = options.registry or LIVE_CALLS

    def _speech(self, data: bytes) -> _Speech:
        frames = _frames(data, self.silence)
        last = -1
        for i, frame in enumerate(frames):
            if 1 in frame.translate(self._loud):
                last = i
        return _Speech(frames, last)

    def _rel(self, now: float) -> float:
        return now - self.t0

    # -- sending ----------------------------------------------------------------------------

    async def _send(self, ws: WebSocketConnection, message: dict[str, Any], *, numbered: bool = True) -> None:
        # The lock makes wire order equal sequenceNumber order across the sender and the mark
        # echoer. The send is shielded so a hang-up deadline never cuts a frame in half (which
        # would break the stream); its own deadline still bounds it.
        async with self._send_lock:
            if numbered:
                self._seq += 1
                message["sequenceNumber"] = str(self._seq)
            text = json.dumps(message, separators=(",", ":"))
            deadline = trio.current_time() + self.options.send_timeout_s
            with trio.CancelScope(shield=True, deadline=deadline) as scope:
                await ws.send_message(text)
            if scope.cancelled_caught:
                self.result.failure = f"a send blocked for more than {self.options.send_timeout_s} s"
                raise _HangUp(self.result.failure)

    async def _send_frame(self, ws: WebSocketConnection, frame: bytes, *, paced: bool) -> None:
        now = trio.current_time()
        if paced:
            if now - self._next_send_at > 0.2:
                # We fell far behind (a stalled send): resume the cadence from now rather than
                # bursting the backlog, as a phone network would.
                self._next_send_at = now
            await trio.sleep_until(self._next_send_at)
            self._next_send_at += FRAME_MS / 1000.0 / self.options.speed
        else:
            self._next_send_at = now  # the send lock below is still a cancellation point
        timestamp_ms = self._chunk * FRAME_MS  # media clock: exact in fast mode too
        while self._dtmf and self._dtmf[0][0] <= timestamp_ms:
            _, digit = self._dtmf.popleft()
            await self._send(
                ws,
                {
                    "event": "dtmf",
                    "streamSid": self.result.stream_sid,
                    "dtmf": {"track": "inbound_track", "digit": digit},
                },
            )
            self.result.dtmf_sent.append((self._rel(trio.current_time()), digit))
        self._chunk += 1
        await self._send(
            ws,
            {
                "event": "media",
                "streamSid": self.result.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(timestamp_ms),
                    "payload": base64.b64encode(frame).decode("ascii"),
                },
            },
        )
        self.result.frames_sent += 1
        self.result.bytes_sent += len(frame)
        if self.options.record_audio:
            self.result.audio_sent += frame

    async def _say(self, ws: WebSocketConnection, speech: _Speech, *, interrupt: bool = False) -> None:
        utterance = Utterance(
            index=len(self.result.utterances),
            started_at=self._rel(trio.current_time()),
            interrupt=interrupt,
        )
        self.result.utterances.append(utterance)
        for i, frame in enumerate(speech.frames):
            await self._send_frame(ws, frame, paced=self.options.realtime)
            if i == speech.last_voiced:
                self._last_voiced_at = trio.current_time()
                utterance.last_voiced_at = self._rel(self._last_voiced_at)
        utterance.ended_at = self._rel(trio.current_time())

    async def _maybe_interrupt(self, ws: WebSocketConnection) -> None:
        threshold = self.options.interrupt_after_assistant_ms
        if threshold is None or len(self.result.interrupts) >= self.options.max_interrupts:
            return
        now = trio.current_time()
        index = self.buffer.response_count
        if index == 0 or any(i.response_index == index for i in self.result.interrupts):
            return
        played = self.buffer.response_played_ms(now)
        if played < threshold or self.buffer.buffered_bytes(now) == 0:
            return  # not far enough in yet, or the response already finished playing
        self.result.interrupts.append(InterruptEvent(self._rel(now), index, played))
        await self._say(ws, self.interrupt_speech, interrupt=True)

    async def _silence(self, ws: WebSocketConnection, ms: int) -> None:
        for _ in range(math.ceil(ms / FRAME_MS)):
            await self._maybe_interrupt(ws)
            await self._send_frame(ws, self.silence_frame, paced=self.options.realtime)

    async def _wait_for_reply(self, ws: WebSocketConnection, step: WaitForReply) -> None:
        settle_s = (step.settle_ms if step.settle_ms is not None else self.options.reply_settle_ms) / 1000
        began = trio.current_time()
        self._next_send_at = max(self._next_send_at, began)
        with trio.move_on_after(step.timeout_ms / 1000.0):
            while True:
                await self._maybe_interrupt(ws)
                now = trio.current_time()
                since = self._last_voiced_at if self._last_voiced_at is not None else began
                idle = self.buffer.idle_for(now)
                replied = self._last_media_at is not None and self._last_media_at > since
                if replied and idle is not None and idle >= settle_s:
                    return
                await self._send_frame(ws, self.silence_frame, paced=True)

    async def _run_script(self, ws: WebSocketConnection) -> None:
        for i, step in enumerate(self.script):
            if isinstance(step, Say):
                await self._say(ws, self._said[i])
            elif isinstance(step, Pause):
                await self._silence(ws, step.ms)
            else:
                await self._wait_for_reply(ws, step)

    async def _speak(self, ws: WebSocketConnection) -> None:
        r = self.result
        await self._send(ws, {"event": "connected", "protocol": "Call", "version": "1.0.0"}, numbered=False)
        await self._send(
            ws,
            {
                "event": "start",
                "start": {
                    "accountSid": r.account_sid,
                    "streamSid": r.stream_sid,
                    "callSid": r.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": dict(self.options.params),
                    "mediaFormat": {"encoding": r.encoding, "sampleRate": SAMPLE_RATE, "channels": 1},
                },
                "streamSid": r.stream_sid,
            },
        )
        self._next_send_at = trio.current_time()
        deadline = math.inf
        if self.options.hang_up_after_ms is not None:
            deadline = self.t0 + self.options.hang_up_after_ms / 1000.0
        self._script_scope.deadline = deadline
        with self._script_scope as scope:
            await self._run_script(ws)
        r.hung_up_early = scope.cancelled_caught and r.redirect is None
        self._hanging_up = True
        await self._send(
            ws,
            {
                "event": "stop",
                "streamSid": r.stream_sid,
                "stop": {"accountSid": r.account_sid, "callSid": r.call_sid},
            },
        )
        r.stop_sent = True

    # -- receiving --------------------------------------------------------------------------

    async def _reader(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        # Always draining: trio-websocket stops answering pings and close frames when its
        # message queue is full, so nothing here may block on the network.
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                if self.result.closed_at is None:
                    self.result.closed_at = self._rel(trio.current_time())
                if not self._hanging_up:
                    self.result.closed_by = "server"
                    scope.cancel()
                return
            self._on_message(message, trio.current_time())

    def _on_message(self, raw: str | bytes, now: float) -> None:
        r = self.result
        r.messages_received += 1
        if isinstance(raw, bytes):
            r.add_error(f"binary message of {len(raw)} bytes (Twilio expects JSON text)")
            return
        try:
            msg = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            r.add_error(f"non-JSON message: {raw[:80]!r}")
            return
        if not isinstance(msg, dict):
            r.add_error(f"JSON message is not an object: {raw[:80]!r}")
            return
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            key = str(event)[:40]
            r.unknown_events[key] = r.unknown_events.get(key, 0) + 1
            r.add_error(f"unknown event {key!r}")
            return
        if msg.get("streamSid") != r.stream_sid:
            # Twilio routes by streamSid; a message for another stream would not play here.
            r.add_error(f"{event} with streamSid {msg.get('streamSid')!r}, expected {r.stream_sid!r}")
            return
        body = msg.get(event)
        if event == "media":
            payload = body.get("payload") if isinstance(body, dict) else None
            if not isinstance(payload, str):
                r.add_error("media without media.payload string")
                return
            try:
                audio = base64.b64decode(payload, validate=True)
            except binascii.Error:
                r.add_error("media.payload is not valid base64")
                return
            self._on_media(audio, now)
        elif event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                r.add_error("mark without mark.name string")
                return
            r.marks_received.append(MarkEvent(name, self._rel(now)))
            self._echo(self.buffer.mark(name, now), cleared=False)
        else:
            self._on_clear(now)
        self._changed.set()

    def _on_media(self, audio: bytes, now: float) -> None:
        r = self.result
        r.media_received += 1
        r.bytes_received += len(audio)
        self._last_media_at = now
        if r.first_media_at is None:
            r.first_media_at = self._rel(now)
        if self._last_voiced_at is not None and now > self._last_voiced_at:
            last = next((u for u in reversed(r.utterances) if u.last_voiced_at is not None), None)
            if last is not None and last.reply_at is None:
                last.reply_at = self._rel(now)
        before = self.buffer.response_count
        self._echo(self.buffer.enqueue(audio, now), cleared=False)
        if self.buffer.response_count != before:
            r.response_starts.append(self._rel(now))

    def _on_clear(self, now: float) -> None:
        played_ms = self.buffer.response_played_ms(now)
        # Advance first so marks that had genuinely played are told apart from flushed ones
        # (names need not be unique: the Twilio samples name every mark "responsePart").
        due = self.buffer.advance(now)
        cleared_before = self.buffer.cleared_bytes
        flushed = self.buffer.clear(now)
        self.result.clears.append(
            ClearEvent(self._rel(now), played_ms, self.buffer.cleared_bytes - cleared_before, flushed)
        )
        for interrupt in self.result.interrupts:
            if interrupt.clear_at is None:
                interrupt.clear_at = self._rel(now)
        self._echo(due, cleared=False)
        self._echo(flushed, cleared=True)

    def _echo(self, names: list[str], *, cleared: bool) -> None:
        for name in names:
            self._echo_tx.send_nowait((name, cleared))  # unbounded: one entry per mark received

    async def _echoer(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        try:
            async for name, cleared in self._echo_rx:
                await self._send(
                    ws, {"event": "mark", "streamSid": self.result.stream_sid, "mark": {"name": name}}
                )
                self.result.marks_echoed.append(MarkEvent(name, self._rel(trio.current_time()), cleared))
        except ConnectionClosed:
            return  # the reader records who closed
        except _HangUp:
            scope.cancel()

    async def _playback_clock(self) -> None:
        # Sleeps until the next mark is due, or until the reader changed the buffer.
        while True:
            self._changed = trio.Event()
            due = self.buffer.next_due()
            with trio.move_on_at(math.inf if due is None else due):
                await self._changed.wait()
            self._echo(self.buffer.advance(trio.current_time()), cleared=False)

    # -- the whole call ---------------------------------------------------------------------

    def _end_stream(self, update: CallUpdate) -> None:
        """Twilio's REST API changed the call: as Twilio does, end the stream (``stop``, close)."""
        r = self.result
        if r.redirect is not None:
            return
        r.redirect = update
        r.redirected_at = self._rel(trio.current_time())
        self._script_scope.cancel()

    async def run(self) -> CallResult:
        r = self.result
        r.started_at = time.time()
        self.registry.add(LiveCall(r.call_sid, r.account_sid, r.stream_sid, self._end_stream))
        try:
            return await self._run()
        finally:
            self.registry.remove(r.call_sid)

    async def _run(self) -> CallResult:
        o, r = self.options, self.result
        try:
            async with open_websocket_url(
                o.url,
                extra_headers=[(k.encode(), v.encode()) for k, v in o.extra_headers.items()],
                message_queue_size=64,
                max_message_size=o.max_message_size,
                connect_timeout=o.connect_timeout_s,
                disconnect_timeout=o.close_timeout_s,
            ) as ws:
                r.connected = True
                self.t0 = trio.current_time()
                await self._converse(ws)
        except ConnectionRejected as exc:
            r.connect_error = f"the server rejected the WebSocket handshake with HTTP {exc.status_code}"
        except ConnectionTimeout:
            r.connect_error = f"no WebSocket handshake within {o.connect_timeout_s} s"
        except HandshakeError as exc:
            if r.connected:  # the closing handshake timed out: already recorded below
                pass
            else:
                cause = exc.__cause__ or exc
                r.connect_error = f"could not connect: {cause}"
        r.ended_at = time.time()
        return r

    async def _converse(self, ws: WebSocketConnection) -> None:
        r = self.result
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, ws, nursery.cancel_scope)
            nursery.start_soon(self._playback_clock)
            nursery.start_soon(self._echoer, ws, nursery.cancel_scope)
            try:
                await self._speak(ws)
            except ConnectionClosed:
                pass  # the server hung up; the reader records it
            except _HangUp:
                pass  # recorded in result.failure
            self._hanging_up = True
            # Close while the reader still drains, so the close handshake is never stuck
            # behind a full message queue.
            await self._close(ws)
            nursery.cancel_scope.cancel()
        await self._close(ws)  # no-op unless a task cancelled the nursery before we closed
        if r.closed_by is None:
            r.closed_by = "caller"
        now = trio.current_time()
        if r.closed_at is None:
            r.closed_at = self._rel(now)
        self.buffer.advance(now)
        r.duration_s = now - self.t0
        r.played_bytes = self.buffer.played_bytes
        r.cleared_bytes = self.buffer.cleared_bytes
        r.unplayed_bytes = self.buffer.buffered_bytes(now)
        r.audio_played = self.buffer.played
        r.audio_cleared = self.buffer.cleared
        r.responses = self.buffer.response_count
        if ws.closed is not None:
            # After our close this is the code the server answered with; after the server's
            # close it is the server's code.
            r.close_code, r.close_reason = ws.closed.code, ws.closed.reason

    async def _close(self, ws: WebSocketConnection) -> None:
        self._hanging_up = True
        with trio.move_on_after(self.options.close_timeout_s):
            if self.result.failure is None:
                await ws.aclose(1000)
            else:
                await ws.aclose(1011, "caller could not send")


async def run_call(options: CallerOptions) -> CallResult:
    """Make one simulated call. Raises ValueError for bad options (before connecting); network
    trouble is recorded in the result (``connect_error``, ``close_code``, ``failure``)."""
    return await _Call(options).run()


# --------------------------------------------------------------------------------------------
# Reporting and CLI


def _secs(audio_bytes: int) -> str:
    return f"{audio_bytes / BYTES_PER_MS / 1000:.1f} s"


def summarise(result: CallResult) -> str:
    """A few human-readable lines about the call."""
    r = result
    if not r.connected:
        return f"call {r.call_sid} to {r.url}: not connected: {r.connect_error}"
    lines = [
        f"call {r.call_sid} (stream {r.stream_sid}) to {r.url}: {r.duration_s:.1f} s, "
        f"closed by {r.closed_by or '?'} with code {r.close_code}"
        + (f" ({r.close_reason})" if r.close_reason else "")
        + (" [hung up early]" if r.hung_up_early else ""),
        f"sent {r.frames_sent} frames ({_secs(r.bytes_sent)} of audio)"
        + (f", {len(r.dtmf_sent)} DTMF" if r.dtmf_sent else "")
        + f"; received {r.media_received} media ({_secs(r.bytes_received)}), "
        f"played {_secs(r.played_bytes)}, cleared {_secs(r.cleared_bytes)}",
    ]
    latencies = [
        f"#{u.index + 1}: " + ("-" if u.reply_latency_ms is None else f"{u.reply_latency_ms:.0f} ms")
        for u in r.utterances
    ]
    lines.append(
        f"heard {r.responses} response(s); end of speech to first reply audio: "
        + (", ".join(latencies) if latencies else "no utterances")
    )
    flushed = sum(1 for m in r.marks_echoed if m.cleared)
    clears = ", ".join(f"at {c.at:.2f} s after {c.response_played_ms:.0f} ms played" for c in r.clears)
    lines.append(
        f"marks: {len(r.marks_received)} received, {len(r.marks_echoed)} echoed ({flushed} by clear); "
        f"clears: {len(r.clears)}" + (f" ({clears})" if clears else "")
    )
    if r.redirect is not None and r.redirected_at is not None:
        to = ", ".join(r.redirect.targets) or r.redirect.url or r.redirect.status or "new TwiML"
        lines.append(f"redirected by the REST API at {r.redirected_at:.2f} s (to {to}); the stream stopped")
    for i in r.interrupts:
        after = "no clear" if i.clear_latency_ms is None else f"clear {i.clear_latency_ms:.0f} ms later"
        lines.append(f"barge-in at {i.at:.2f} s, {i.response_played_ms:.0f} ms into response, {after}")
    if r.error_count or r.failure:
        lines.append(
            f"problems: {r.error_count} protocol error(s)"
            + (f", first: {r.errors[0]}" if r.errors else "")
            + (f"; {r.failure}" if r.failure else "")
        )
    return "\n".join(lines)


def _parse_dtmf(text: str) -> list[tuple[int, str]]:
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        at, sep, digit = item.partition(":")
        if not sep or not at.strip().isdigit():
            raise argparse.ArgumentTypeError(f"DTMF entries look like MS:DIGIT, got {item!r}")
        out.append((int(at), digit.strip()))
    return out


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"parameters look like key=value, got {text!r}")
    return key, value


def _parse_header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"headers look like 'Name: value', got {text!r}")
    return key.strip(), value.strip()


def _seconds_to_ms(value: float | None) -> int | None:
    return None if value is None else round(value * 1000)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bridge call", description="Simulated Twilio caller: stream a recording to a media WebSocket."
    )
    p.add_argument("--url", required=True, help="media WebSocket, e.g. ws://127.0.0.1:8080/media")
    p.add_argument("--audio", help="8 kHz μ-law (or A-law with --alaw) WAV file; default: bundled recording")
    p.add_argument("--alaw", action="store_true", help="declare and send A-law (audio/x-alaw)")
    p.add_argument(
        "--param",
        action="append",
        type=_parse_param,
        default=[],
        metavar="K=V",
        help="custom parameter in start.customParameters (repeatable)",
    )
    p.add_argument(
        "--header",
        action="append",
        type=_parse_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="extra HTTP header on the upgrade request (repeatable)",
    )
    p.add_argument("--fast", action="store_true", help="send frames as fast as possible, not every 20 ms")
    p.add_argument("--turns", type=int, default=1, help="times to say the recording (default 1)")
    p.add_argument("--gap", type=float, default=1.0, metavar="SECONDS", help="silence between turns")
    p.add_argument("--leading-silence", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--trailing-silence", type=float, default=0.5, metavar="SECONDS")
    p.add_argument("--hang-up-after", type=float, metavar="SECONDS", help="hang up this long after start")
    p.add_argument(
        "--wait-for-reply",
        type=float,
        metavar="SECONDS",
        help="after speaking, stay on the line until the reply has played (at most this long)",
    )
    p.add_argument(
        "--interrupt-after",
        type=float,
        metavar="SECONDS",
        help="barge in once this much of a reply has played",
    )
    p.add_argument(
        "--dtmf",
        type=_parse_dtmf,
        default=[],
        metavar="MS:DIGIT,...",
        help='digits to press, e.g. "1500:5,2000:#" (ms since stream start)',
    )
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry (without the ``call`` subcommand name). 0: connected and ended normally;
    1: the call ended abnormally; 2: could not connect or bad arguments."""
    args = build_parser().parse_args(argv)
    encoding = ALAW if args.alaw else MULAW
    options = CallerOptions(
        url=args.url,
        audio=args.audio,
        encoding=encoding,
        params=dict(args.param),
        extra_headers=dict(args.header),
        realtime=not args.fast,
        turns=args.turns,
        gap_ms=round(args.gap * 1000),
        leading_silence_ms=round(args.leading_silence * 1000),
        trailing_silence_ms=round(args.trailing_silence * 1000),
        hang_up_after_ms=_seconds_to_ms(args.hang_up_after),
        wait_for_reply_ms=_seconds_to_ms(args.wait_for_reply),
        interrupt_after_assistant_ms=_seconds_to_ms(args.interrupt_after),
        dtmf=args.dtmf,
        connect_timeout_s=args.connect_timeout,
    )
    try:
        result = trio.run(run_call, options)
    except (ValueError, OSError) as exc:  # bad options or unreadable audio file
        print(f"bridge call: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result_to_dict(result), indent=2))
    elif result.connected:
        print(summarise(result))
    if not result.connected:
        print(f"bridge call: {result.connect_error}", file=sys.stderr)
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
