"""Twilio's side of a bidirectional ``<Connect><Stream>``, and its voice webhook.

https://www.twilio.com/docs/voice/media-streams/websocket-messages: Twilio sends ``connected``,
``start`` (once), ``media`` (μ-law 8 kHz, base64), ``dtmf``, ``mark`` and ``stop``, numbering
everything after ``connected`` with a string ``sequenceNumber``; it takes ``media``, ``mark`` and
``clear`` addressed to the stream's ``streamSid``. A ``mark`` is echoed when the audio before it
has played, at once when nothing is queued, and a ``clear`` "empties the audio buffer and sends
back mark messages matching any remaining mark messages". The upgrade and the webhook carry
``X-Twilio-Signature`` (https://www.twilio.com/docs/usage/webhooks/webhooks-security).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from bridge.audio.formats import ALAW_8K, ULAW_8K, AudioFormat
from bridge.carrier.twilio_signature import compute_signature
from bridge.testing.callers.dialect import (
    BridgeEvent,
    CallContext,
    ClearRequest,
    Frame,
    MarkRequest,
    Play,
    Problem,
    StreamIds,
    dumps,
    hex_sid,
    json_message,
    signed_url,
    tls_url,
    unknown,
)
from bridge.testing.callers.options import ALAW, MULAW, Credentials
from bridge.testing.callers.webhook import (
    AnswerError,
    StreamSetup,
    WebhookCall,
    WebhookRequest,
    connect_stream,
    stream_parameters,
    xml_root,
)

FORMATS: tuple[AudioFormat, ...] = (ULAW_8K, ALAW_8K)  # A-law: not Twilio's, kept for the bridge's sake
FORM = "application/x-www-form-urlencoded"


class TwilioCaller:
    """The Twilio Media Streams wire of one call."""

    name = "twilio"
    frame_ms = (
        20  # 160 bytes: what Twilio is observed to send (https://docs.fonoster.com/reference/twilio-compatibility)
    )
    marks_echoed_on_clear = True

    def __init__(self, ctx: CallContext) -> None:
        o = ctx.options
        self.ids = self._ids(ctx)
        self.encoding = MULAW if ctx.audio == ULAW_8K else ALAW
        self._options = o
        self._seq = 0

    def _ids(self, ctx: CallContext) -> StreamIds:
        o = ctx.options
        return StreamIds(o.call_sid or hex_sid("CA"), o.stream_sid or hex_sid("MZ"), o.account_sid or hex_sid("AC"))

    def _numbered(self, message: dict[str, Any]) -> str:
        self._seq += 1
        message["sequenceNumber"] = str(self._seq)
        return dumps(message)

    def upgrade_headers(self) -> dict[str, str]:
        credentials = self._options.credentials
        if credentials is None:
            return {}
        # The upgrade is a GET: signed over its URL alone, with no parameters.
        return {"X-Twilio-Signature": compute_signature(credentials.secret, signed_url(self._options))}

    def _media_format(self) -> dict[str, object]:
        return {"encoding": self.encoding, "sampleRate": 8000, "channels": 1}

    def opening(self) -> Sequence[Frame]:
        ids = self.ids
        start = {
            "event": "start",
            "start": {
                "accountSid": ids.account_sid,
                "streamSid": ids.stream_sid,
                "callSid": ids.call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(self._options.params),
                "mediaFormat": self._media_format(),
            },
            "streamSid": ids.stream_sid,
        }
        return [dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}), self._numbered(start)]

    def _wire_audio(self, audio: bytes) -> bytes:
        return audio

    def media(self, audio: bytes, chunk: int, timestamp_ms: int) -> Frame:
        payload = base64.b64encode(self._wire_audio(audio)).decode("ascii")
        media = {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp_ms), "payload": payload}
        return self._numbered({"event": "media", "streamSid": self.ids.stream_sid, "media": media})

    def dtmf(self, digit: str) -> Frame:
        body = {"track": "inbound_track", "digit": digit}
        return self._numbered({"event": "dtmf", "streamSid": self.ids.stream_sid, "dtmf": body})

    def stop(self) -> Frame | None:
        body = {"accountSid": self.ids.account_sid, "callSid": self.ids.call_sid}
        return self._numbered({"event": "stop", "streamSid": self.ids.stream_sid, "stop": body})

    def read(self, message: str | bytes) -> BridgeEvent:
        msg = json_message(message, "Twilio")
        if isinstance(msg, Problem):
            return msg
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            return unknown(event)
        if msg.get("streamSid") != self.ids.stream_sid:
            # Twilio routes by streamSid; a message for another stream would not play here.
            return Problem(f"{event} with streamSid {msg.get('streamSid')!r}, expected {self.ids.stream_sid!r}")
        body = msg.get(event)
        if event == "media":
            payload = body.get("payload") if isinstance(body, dict) else None
            if not isinstance(payload, str):
                return Problem("media without media.payload string")
            try:
                audio = base64.b64decode(payload, validate=True)
            except binascii.Error:
                return Problem("media.payload is not valid base64")
            return self._play(audio)
        if event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                return Problem("mark without mark.name string")
            return MarkRequest(name)
        return ClearRequest()

    def _play(self, audio: bytes) -> BridgeEvent:
        return Play(audio)

    def mark_echo(self, name: str) -> Frame:
        return self._numbered({"event": "mark", "streamSid": self.ids.stream_sid, "mark": {"name": name}})

    def forget(self, names: Sequence[str]) -> None:
        pass  # every pending mark is echoed on clear

    def clear_ack(self) -> Frame | None:
        return None  # Twilio's answer to a clear is the flushed marks


# --- the voice webhook ------------------------------------------------------------------------------


def form_fields(call: WebhookCall) -> list[tuple[str, str]]:
    """A subset of Twilio's voice request parameters (https://www.twilio.com/docs/usage/webhooks/voice-webhooks)."""
    return [
        ("AccountSid", call.account_sid),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call.call_sid),
        ("CallStatus", "ringing"),
        ("Called", call.to_number),
        ("Caller", call.from_number),
        ("Direction", "inbound"),
        ("From", call.from_number),
        ("To", call.to_number),
    ]


def webhook(call: WebhookCall, url: str, credentials: Credentials | None, now: float) -> WebhookRequest:
    """Twilio's POST to the voice URL, signed over the URL and the sorted form fields."""
    form = form_fields(call)
    headers = {"Content-Type": FORM}
    if credentials is not None:
        headers["X-Twilio-Signature"] = compute_signature(credentials.secret, tls_url(url), form)
    return WebhookRequest("POST", url, headers, urlencode(form).encode())


def parse_answer(body: bytes, content_type: str) -> StreamSetup:
    """TwiML ``<Response><Connect><Stream url><Parameter/>...`` (https://www.twilio.com/docs/voice/twiml/stream)."""
    if not content_type.startswith(("text/xml", "application/xml")):
        raise AnswerError(f"Twilio takes TwiML as text/xml, got {content_type!r}")
    stream = connect_stream(xml_root(body, "Twilio"), "Twilio")
    url = stream.get("url", "")
    if "?" in url:
        raise AnswerError("Twilio's <Stream> url takes no query string (use <Parameter>)")
    params = stream_parameters(stream, "Twilio")
    for name, value in params.items():
        if len(name) + len(value) >= 500:  # "must be under 500 characters"
            raise AnswerError(f"<Parameter {name!r}> is {len(name) + len(value)} characters, Twilio's limit is 499")
    return StreamSetup("twilio", url, ULAW_8K.id, params, dict(stream.attrib))
