"""The carrier seam: neutral events, and the interface every carrier dialect implements. Pure.

A dialect turns one carrier's media-stream protocol into carrier-neutral events (``Start``,
``Media``, ``MarkEcho``, ``Cleared``, ``Dtmf``, ``Stop``, ...) and writes the call's neutral
actions (play audio, mark, clear playback) back in the carrier's framing. It also owns what the
carrier's voice webhook expects in answer (TwiML, TeXML, XML, an NCCO, ...) and the carrier's way
of authenticating requests and stream upgrades. The call core, the runner and the front door use
carriers only through :class:`Carrier`; adding one is a module in this package and one line in
:mod:`bridge.carrier.registry`.

Nothing here does I/O: a dialect gets text or bytes and returns events, frames or documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bridge.httpmsg import HttpRequest


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    """The stream's metadata. ``stream_sid``/``call_sid``/``account_sid`` hold the carrier's own
    identifiers of the stream, the call and the account, whatever the carrier calls them."""

    stream_sid: str
    call_sid: str
    account_sid: str
    encoding: str  # the carrier's codec name, e.g. "audio/x-mulaw"
    sample_rate: int
    channels: int
    custom_parameters: dict[str, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ("inbound",)
    from_number: str | None = None  # when the carrier's start message carries it
    to_number: str | None = None


@dataclass(frozen=True, slots=True)
class Media:
    payload: str  # base64, in the carrier's encoding; never decoded by the dialect
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MarkEcho:
    name: str


@dataclass(frozen=True, slots=True)
class Cleared:
    """The carrier acknowledged a clear (Plivo ``clearedAudio``, Vonage ``websocket:cleared``)."""


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str | None = None


@dataclass(frozen=True, slots=True)
class CarrierError:
    """A message we could not use. ``fatal`` when the stream cannot continue without it."""

    kind: str  # short metric label: invalid_json, unknown_event, missing_field, ...
    reason: str
    fatal: bool = False


CarrierEvent = Connected | Start | Media | MarkEcho | Cleared | Dtmf | Stop | CarrierError


# --- what a dialect writes ---------------------------------------------------------------------

Frame = str | bytes
"""One WebSocket message to the carrier: ``str`` goes as a text frame, ``bytes`` as binary."""


class Writer(Protocol):
    """Frames to one stream, built once per call (templates, ids) so the hot path is cheap."""

    def media(self, payload_b64: str) -> Frame:
        """Play this audio (base64, in the call's carrier format) after what is queued."""
        ...

    def mark(self, name: str) -> Frame:
        """Ask to be told (a :class:`MarkEcho` of ``name``) when the audio before it has played."""
        ...

    def clear(self) -> Frame:
        """Drop every queued audio chunk now (barge-in)."""
        ...


def media_frames(writer: Writer, payload_b64: str) -> Sequence[Frame]:
    """The frames that play ``payload_b64``: the writer's own split when it has one, else one frame.

    Some carriers take audio only in frames of a fixed size (Vonage: 20 ms per binary message,
    https://developer.vonage.com/en/voice/voice-api/concepts/websockets) or of a size rule
    (Exotel: multiples of 320 bytes, at most 100 KB,
    https://developer.exotel.com/docs/agentstream/stream-voicebot-applet). Their writers define
    an optional ``media_frames(payload_b64) -> Sequence[Frame]`` that splits a chunk (and may
    hold back a remainder shorter than one frame until the next chunk, or drop it on
    :meth:`Writer.clear`), and then a ``flush_frames()`` (see :func:`flush_frames`). Writers
    without one write each chunk as one :meth:`Writer.media` frame.
    The caller sends the frames in order, then the chunk's mark.
    """
    split = getattr(writer, "media_frames", None)
    if split is None:
        return (writer.media(payload_b64),)
    frames: Sequence[Frame] = split(payload_b64)
    return frames


def flush_frames(writer: Writer) -> tuple[Sequence[Frame], float]:
    """The remainder a framing writer held back, padded with silence to a whole frame, and the
    milliseconds of silence added: sent when the model's answer ends, so its last few
    milliseconds are played now rather than at the start of the next answer (or lost on a
    clear). Writers that hold nothing back (no ``flush_frames``) give ``((), 0.0)``.
    """
    flush = getattr(writer, "flush_frames", None)
    if flush is None:
        return (), 0.0
    frames: tuple[Sequence[Frame], float] = flush()
    return frames


# --- the voice webhook and authentication ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """An HTTP request from the carrier as a dialect needs it to answer or authenticate it.

    ``url`` is the full URL the carrier requested, as it would have signed it (public scheme and
    host, path and query); ``form`` the body's form fields in order, repeated names kept.

    ``received_at`` is the wall-clock time (Unix seconds) the request arrived, read by the shell:
    dialects whose carrier signs a timestamp (Telnyx's ``telnyx-timestamp``, Vonage's JWT
    ``iat``) refuse a request whose timestamp is too far from it, so a captured request cannot be
    replayed later. Left ``None``, that freshness check is skipped (the signature is still checked).
    """

    method: str
    url: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    form: Sequence[tuple[str, str]] = ()
    received_at: float | None = None


@dataclass(frozen=True, slots=True)
class CallDetails:
    """What the voice webhook says about a new call (for routing it to a profile)."""

    call_sid: str | None
    from_number: str | None
    to_number: str | None


@dataclass(frozen=True, slots=True)
class CallIds:
    """The carrier's identifiers of a live call, as its ``start`` message gave them."""

    call_sid: str
    stream_sid: str
    account_sid: str


@dataclass(frozen=True, slots=True)
class Answer:
    """The document that answers the carrier's voice webhook."""

    body: bytes
    content_type: str
    status: int = 200


class Carrier(Protocol):
    """One carrier, configured: its media-stream dialect, its answer documents, its authentication."""

    name: str
    """The route segment (``/{name}/answer``, ``/{name}/media``) and the ``carrier`` of records."""
    marks_echoed_on_clear: bool
    """True when a clear makes the carrier echo every pending mark at once (Twilio); False when
    pending marks are simply dropped (Plivo's checkpoints, Vonage's notifies)."""

    def parse(self, message: str | bytes) -> CarrierEvent:
        """One message from the stream; a bad one becomes :class:`CarrierError`, never an exception."""
        ...

    def writer(self, start: Start) -> Writer:
        """The frame writer for the stream ``start`` opened."""
        ...

    def call_details(self, request: InboundRequest) -> CallDetails:
        """Caller and callee of the voice webhook request."""
        ...

    def answer(self, stream_url: str, parameters: Mapping[str, str]) -> Answer:
        """The webhook answer that connects the call to ``stream_url`` with custom ``parameters``."""
        ...

    def verifies(self) -> bool:
        """True when this carrier's requests are authenticated (configured and switched on)."""
        ...

    def verify_request(self, request: InboundRequest) -> bool:
        """The voice webhook request is authentic (always True when verification is off)."""
        ...

    def verify_upgrade(self, request: InboundRequest) -> bool:
        """The media WebSocket upgrade request is authentic (always True when verification is off)."""
        ...

    @property
    def can_transfer(self) -> bool:
        """True when :meth:`transfer` can move a live call (the carrier has an API for it, configured)."""
        ...

    def transfer(self, call: CallIds, destination: str) -> HttpRequest:
        """The request to the carrier's API that moves the live call to ``destination`` (a number,
        a ``sip:`` URI or a ``client:`` name). Only called when :attr:`can_transfer` is True."""
        ...
