"""SignalWire's side of a cXML ``<Connect><Stream>``, and its voice webhook.

https://signalwire.com/docs/compatibility-api/cxml/reference/voice/stream: Twilio's messages
(``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop``; ``media``, ``mark``,
``clear`` back), with the codec chosen by the answer's ``codec`` (``PCMU@8000h`` by default,
``L16@16000h``, ``L16@24000h``; ``start.mediaFormat.encoding`` ``audio/x-L16``); "You'll also
receive mark confirmations when the audio queue is cleared". The answer's ``authBearerToken``
comes back as the upgrade's ``Authorization: Bearer``. Webhooks are signed with the project's
Signing Key as Twilio signs (https://developer.signalwire.com/guides/webhook-security).
"""

from __future__ import annotations

from urllib.parse import urlencode

from bridge.audio.formats import L16_16K, L16_24K, ULAW_8K, AudioFormat, Encoding
from bridge.carrier.common import swap16
from bridge.carrier.signalwire import compat_signature
from bridge.testing.callers import twilio
from bridge.testing.callers.dialect import BridgeEvent, CallContext, Play, Problem, StreamIds, new_uuid, tls_url
from bridge.testing.callers.options import Credentials
from bridge.testing.callers.webhook import (
    AnswerError,
    StreamSetup,
    WebhookCall,
    WebhookRequest,
    connect_stream,
    stream_parameters,
    xml_root,
)

FORMATS: tuple[AudioFormat, ...] = (ULAW_8K, L16_16K, L16_24K)
_CODECS = {"PCMU@8000h": ULAW_8K, "L16@16000h": L16_16K, "L16@24000h": L16_24K}


class SignalWireCaller(twilio.TwilioCaller):
    """Twilio's wire, SignalWire's ids, codecs and upgrade token."""

    name = "signalwire"

    def __init__(self, ctx: CallContext) -> None:
        super().__init__(ctx)
        self._audio = ctx.audio
        self._l16 = ctx.audio.encoding is Encoding.L16
        self.encoding = "audio/x-L16" if self._l16 else "audio/x-mulaw"
        self._swap = self._l16 and ctx.options.l16_byte_order == "big"

    def _ids(self, ctx: CallContext) -> StreamIds:
        o = ctx.options
        return StreamIds(o.call_sid or new_uuid(), o.stream_sid or new_uuid(), o.account_sid or new_uuid())

    def upgrade_headers(self) -> dict[str, str]:
        token = self._options.bearer_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _media_format(self) -> dict[str, object]:
        return {"encoding": self.encoding, "sampleRate": self._audio.sample_rate, "channels": 1}

    def _wire_audio(self, audio: bytes) -> bytes:
        return swap16(audio) if self._swap else audio

    def _play(self, audio: bytes) -> BridgeEvent:
        if self._l16 and len(audio) % 2:
            return Problem(f"L16 media of {len(audio)} bytes is not whole samples")
        return Play(swap16(audio) if self._swap else audio)


def webhook(call: WebhookCall, url: str, credentials: Credentials | None, now: float) -> WebhookRequest:
    """SignalWire's POST to the voice URL (TwiML's parameters), signed with the Signing Key."""
    form = twilio.form_fields(call)
    headers = {"Content-Type": twilio.FORM}
    if credentials is not None:
        signature = compat_signature(credentials.secret, tls_url(url), form)
        headers["X-SignalWire-Signature"] = headers["X-Twilio-Signature"] = signature
    return WebhookRequest("POST", url, headers, urlencode(form).encode())


def parse_answer(body: bytes, content_type: str) -> StreamSetup:
    """cXML ``<Connect><Stream url [codec] [authBearerToken]>`` with ``<Parameter>``s."""
    if not content_type.startswith(("text/xml", "application/xml")):
        raise AnswerError(f"SignalWire takes cXML as text/xml, got {content_type!r}")
    stream = connect_stream(xml_root(body, "SignalWire"), "SignalWire")
    attrs = dict(stream.attrib)
    if "?" in attrs["url"]:
        raise AnswerError("SignalWire's <Stream> url 'does not support query string parameters'")
    codec = attrs.get("codec", "PCMU@8000h")
    if codec not in _CODECS:
        raise AnswerError(f"codec {codec!r}")
    params = stream_parameters(stream, "SignalWire")
    return StreamSetup(
        "signalwire", attrs["url"], _CODECS[codec].id, params, attrs, bearer_token=attrs.get("authBearerToken")
    )
