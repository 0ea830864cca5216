"""Every simulated carrier by route name: its stream dialect, its formats, its voice webhook."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.audio.formats import AudioFormat
from bridge.testing.callers import exotel, plivo, signalwire, telnyx, twilio, vonage
from bridge.testing.callers.dialect import CallContext, CallerDialect
from bridge.testing.callers.options import Credentials
from bridge.testing.callers.webhook import StreamSetup, WebhookCall, WebhookRequest


@dataclass(frozen=True)
class CarrierSide:
    """One carrier as the simulated caller plays it."""

    name: str
    stream: Callable[[CallContext], CallerDialect]
    formats: tuple[AudioFormat, ...]  # what it can stream; the first is its default
    webhook: Callable[[WebhookCall, str, Credentials | None, float], WebhookRequest]
    """The voice webhook request for a call, to an answer URL, signed with the credentials (if
    any) at a Unix time (carriers that sign a timestamp)."""
    parse_answer: Callable[[bytes, str], StreamSetup]
    """The answer document (body, content type) read as the carrier reads it."""


CALLERS: Mapping[str, CarrierSide] = {
    side.name: side
    for side in (
        CarrierSide("twilio", twilio.TwilioCaller, twilio.FORMATS, twilio.webhook, twilio.parse_answer),
        CarrierSide("telnyx", telnyx.TelnyxCaller, telnyx.FORMATS, telnyx.webhook, telnyx.parse_answer),
        CarrierSide("plivo", plivo.PlivoCaller, plivo.FORMATS, plivo.webhook, plivo.parse_answer),
        CarrierSide("vonage", vonage.VonageCaller, vonage.FORMATS, vonage.webhook, vonage.parse_answer),
        CarrierSide(
            "signalwire", signalwire.SignalWireCaller, signalwire.FORMATS, signalwire.webhook, signalwire.parse_answer
        ),
        CarrierSide("exotel", exotel.ExotelCaller, exotel.FORMATS, exotel.webhook, exotel.parse_answer),
    )
}
