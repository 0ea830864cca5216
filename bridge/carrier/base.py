"""Carrier-neutral events (what the phone side told us). Pure data, no I/O.

Every dialect (Twilio today; Telnyx, SignalWire, Exotel share the shape) parses its wire
messages into these, so the call core never sees a carrier's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    encoding: str  # e.g. "audio/x-mulaw"
    sample_rate: int
    channels: int
    custom_parameters: dict[str, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ("inbound",)


@dataclass(frozen=True, slots=True)
class Media:
    payload: str  # base64, in the carrier's encoding; never decoded by the dialect
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MarkEcho:
    name: str


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


CarrierEvent = Connected | Start | Media | MarkEcho | Dtmf | Stop | CarrierError
