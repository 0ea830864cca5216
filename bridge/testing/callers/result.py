"""What a simulated call did: :class:`CallResult`, its JSON view and its summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from bridge.testing.callers.registry import CallUpdate

_MAX_ERRORS_KEPT = 100


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
    marks_flushed: list[str]  # marks pending at the clear (echoed or dropped, as the carrier does)


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
    """Everything the simulated carrier saw. Audio bytes are in the call's format (``audio_format``;
    L16 little-endian whatever the carrier's byte order on the wire)."""

    url: str
    call_sid: str
    stream_sid: str
    account_sid: str
    encoding: str  # the codec name the carrier declared on the stream
    connected: bool = False
    connect_error: str | None = None
    started_at: float = 0.0  # Unix time when connecting began
    ended_at: float = 0.0  # Unix time when the call was over
    duration_s: float = 0.0  # stream start to end, trio clock
    frames_sent: int = 0
    bytes_sent: int = 0
    audio_sent: bytearray = field(default_factory=bytearray)
    dtmf_sent: list[tuple[float, str]] = field(default_factory=list)
    stop_sent: bool = False  # the carrier's end-of-stream message (carriers that have one)
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
    redirected_at: float | None = None  # when the carrier's REST API changed the call (it then stopped)
    redirect: CallUpdate | None = None  # what that update asked for (TwiML and its <Dial> targets)
    carrier: str = "twilio"
    audio_format: str = "ulaw_8k"  # the format id of the audio both ways
    bytes_per_ms: int = 8
    frame_ms: int = 20  # caller audio per media message
    marks_dropped: list[str] = field(default_factory=list)  # pending at a clear, never echoed (Plivo, Vonage)
    clears_acknowledged: int = 0  # clears answered with the carrier's own event (clearedAudio, ...)
    hung_up_at: float | None = None  # when the caller ended the stream (its stop, or closing the socket)
    clock_origin: float = 0.0  # the trio clock at stream start: add it to a time above to compare clocks

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

    def ms(self, audio_bytes: int) -> float:
        """Milliseconds of audio in ``audio_bytes`` of the call's format."""
        return audio_bytes / self.bytes_per_ms

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


def summarise(result: CallResult) -> str:
    """A few human-readable lines about the call."""
    r = result

    def secs(audio_bytes: int) -> str:
        return f"{r.ms(audio_bytes) / 1000:.1f} s"

    if not r.connected:
        return f"{r.carrier} call {r.call_sid} to {r.url}: not connected: {r.connect_error}"
    lines = [
        f"{r.carrier} call {r.call_sid} (stream {r.stream_sid}, {r.audio_format}) to {r.url}: {r.duration_s:.1f} s, "
        f"closed by {r.closed_by or '?'} with code {r.close_code}"
        + (f" ({r.close_reason})" if r.close_reason else "")
        + (" [hung up early]" if r.hung_up_early else ""),
        f"sent {r.frames_sent} frames ({secs(r.bytes_sent)} of audio)"
        + (f", {len(r.dtmf_sent)} DTMF" if r.dtmf_sent else "")
        + f"; received {r.media_received} media ({secs(r.bytes_received)}), "
        f"played {secs(r.played_bytes)}, cleared {secs(r.cleared_bytes)}",
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
        f"marks: {len(r.marks_received)} received, {len(r.marks_echoed)} echoed ({flushed} by clear)"
        + (f", {len(r.marks_dropped)} dropped by clear" if r.marks_dropped else "")
        + f"; clears: {len(r.clears)}"
        + (f" ({clears})" if clears else "")
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
