"""The carrier's side of a media stream, as one simulated caller per carrier speaks it.

The engine (:mod:`bridge.testing.callers.engine`) paces audio, runs the script, plays what the
bridge sends on a :class:`~bridge.testing.callers.playback.PlaybackBuffer` and records the call;
a :class:`CallerDialect` knows one carrier's wire: how the stream opens (``connected``/``start``
or ``websocket:connected``), how caller audio, DTMF and the end of the stream are framed, how the
bridge's frames read (:class:`Play`, :class:`MarkRequest`, :class:`ClearRequest`), and how the
carrier answers a played marker and a clear. Dialects hold only the stream's counters; they do
no I/O and read no clock (the wall-clock start time is passed in, for carriers that stamp media
with it).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from bridge.audio.formats import AudioFormat
from bridge.testing.callers.options import CallerOptions

Frame = str | bytes
"""One WebSocket message: ``str`` goes as a text frame, ``bytes`` as binary."""


@dataclass(frozen=True)
class Play:
    """Audio to queue for playback, in the call's format (L16 little-endian). ``problem`` says
    what about the frame broke the carrier's rules (it is played anyway, as a carrier would try)."""

    audio: bytes
    problem: str | None = None


@dataclass(frozen=True)
class MarkRequest:
    """A marker to answer once the audio queued before it has played."""

    name: str


@dataclass(frozen=True)
class ClearRequest:
    """Drop the queued audio now."""


@dataclass(frozen=True)
class Problem:
    """A frame the carrier could not use. ``event`` names an unknown event, for counting."""

    message: str
    event: str | None = None


BridgeEvent = Play | MarkRequest | ClearRequest | Problem


@dataclass(frozen=True)
class StreamIds:
    """The carrier's identifiers of the call, the stream and the account."""

    call_sid: str
    stream_sid: str
    account_sid: str


@dataclass(frozen=True)
class CallContext:
    """What a dialect is built from: the options, the call's audio format, the wall-clock start."""

    options: CallerOptions
    audio: AudioFormat
    started_at_ms: int  # Unix milliseconds when the stream opened (Plivo stamps media with it)


class CallerDialect(Protocol):
    ids: StreamIds
    encoding: str
    """The codec name the carrier declares on the stream (``audio/x-mulaw``, ``L16``, ...)."""
    frame_ms: int
    """Caller audio per media message (20 ms on most carriers, about 100 ms on Exotel)."""
    marks_echoed_on_clear: bool
    """A clear answers every pending marker at once (Twilio and its followers); False: they are
    dropped without an answer (Plivo's checkpoints, Vonage's notifies)."""

    def upgrade_headers(self) -> dict[str, str]:
        """Headers of the WebSocket upgrade: the carrier's authentication, when it has credentials."""
        ...

    def opening(self) -> Sequence[Frame]:
        """What the carrier sends first (``connected`` and ``start``, or its equivalent)."""
        ...

    def media(self, audio: bytes, chunk: int, timestamp_ms: int) -> Frame:
        """One frame of caller audio (``chunk`` counts from 1; ``timestamp_ms`` is stream time)."""
        ...

    def dtmf(self, digit: str) -> Frame: ...

    def stop(self) -> Frame | None:
        """The end-of-stream message, or None where the carrier just closes the socket."""
        ...

    def read(self, message: str | bytes) -> BridgeEvent:
        """One frame from the bridge; anything unusable is a :class:`Problem`, never an exception."""
        ...

    def mark_echo(self, name: str) -> Frame:
        """The answer to a marker whose audio has played (or, where the carrier does so, was cleared)."""
        ...

    def forget(self, names: Sequence[str]) -> None:
        """A clear dropped these markers: they will never be answered."""
        ...

    def clear_ack(self) -> Frame | None:
        """The carrier's acknowledgement of a clear, or None where it sends none."""
        ...


# --- small things every dialect needs -------------------------------------------------------------


def hex_sid(prefix: str = "") -> str:
    return prefix + secrets.token_hex(16)


def new_uuid() -> str:
    return str(uuid.uuid4())


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes | None:
    """The bytes of a strict base64 string; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def json_message(message: str | bytes, carrier: str) -> dict[str, Any] | Problem:
    """One JSON object from a text frame, or the :class:`Problem` that says why not."""
    if isinstance(message, bytes):
        return Problem(f"binary message of {len(message)} bytes ({carrier} expects JSON text)")
    try:
        msg = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return Problem(f"non-JSON message: {message[:80]!r}")
    if not isinstance(msg, dict):
        return Problem(f"JSON message is not an object: {message[:80]!r}")
    return msg


def unknown(event: Any) -> Problem:
    key = str(event)[:40]
    return Problem(f"unknown event {key!r}", event=key)


def tls_url(url: str) -> str:
    """``url`` as a carrier requests it: over TLS (``wss``/``https``), the user-info dropped."""
    parts = urlsplit(url)
    scheme = {"ws": "wss", "http": "https"}.get(parts.scheme, parts.scheme)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def signed_url(options: CallerOptions) -> str:
    """The stream URL the carrier signs: ``options.signed_url``, else ``options.url`` over TLS."""
    return options.signed_url or tls_url(options.url)
