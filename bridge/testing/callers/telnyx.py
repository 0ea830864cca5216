"""Telnyx's side of a TeXML ``<Connect><Stream bidirectionalMode="rtp">``, and its TeXML webhook.

https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket: Telnyx
sends ``connected``, ``start`` (snake_case: ``stream_id``, ``call_control_id``, ``from``, ``to``,
``custom_parameters``, ``media_format``), ``media`` ("RTP payload without RTP headers", base64),
``dtmf``, ``mark`` and ``stop``, each numbered with a string ``sequence_number``; it takes
``media``, ``mark`` and ``clear`` without a stream id, echoes a mark "when the immediately
preceding media finishes playing, or immediately if no audio is queued", and "A clear frame also
returns queued marks". RTP's L16 is big-endian (RFC 3551 §4.5.11), so L16 travels big-endian
unless ``l16_byte_order = "little"``. TeXML webhooks are signed with Ed25519 over
``"{telnyx-timestamp}|{body}"`` (https://developers.telnyx.com/api-reference/callbacks/texml-http-request).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.audio.formats import ALAW_8K, L16_8K, L16_16K, L16_24K, ULAW_8K, AudioFormat, Encoding
from bridge.carrier.common import swap16
from bridge.testing.callers.dialect import (
    BridgeEvent,
    CallContext,
    ClearRequest,
    Frame,
    MarkRequest,
    Play,
    Problem,
    StreamIds,
    b64,
    dumps,
    hex_sid,
    json_message,
    new_uuid,
    unb64,
    unknown,
)
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

FORMATS: tuple[AudioFormat, ...] = (ULAW_8K, ALAW_8K, L16_8K, L16_16K, L16_24K)
_CODECS = {Encoding.ULAW: "PCMU", Encoding.ALAW: "PCMA", Encoding.L16: "L16"}


class TelnyxCaller:
    """The Telnyx media-streaming wire of one call (RTP mode)."""

    name = "telnyx"
    frame_ms = 20
    marks_echoed_on_clear = True

    def __init__(self, ctx: CallContext) -> None:
        o = ctx.options
        self._options = o
        self._audio = ctx.audio
        call = o.call_sid or o.params.get("call_sid") or hex_sid("v3:")
        self.ids = StreamIds(call, o.stream_sid or new_uuid().upper(), o.account_sid or new_uuid())
        self.encoding = _CODECS[ctx.audio.encoding]
        self._swap = ctx.audio.encoding is Encoding.L16 and (o.l16_byte_order or "big") == "big"
        self._seq = 0

    def _numbered(self, message: dict[str, Any]) -> str:
        self._seq += 1
        return dumps({"event": message.pop("event"), "sequence_number": str(self._seq), **message})

    def upgrade_headers(self) -> dict[str, str]:
        return {}  # a TeXML stream's upgrade carries nothing; the start's parameters do

    def opening(self) -> Sequence[Frame]:
        o, ids = self._options, self.ids
        start = {
            "user_id": ids.account_sid,
            "call_control_id": ids.call_sid,
            "call_session_id": new_uuid(),
            "from": o.from_number or "+13122010094",
            "to": o.to_number or "+13122123456",
            "custom_parameters": dict(o.params),
            "media_format": {"encoding": self.encoding, "sample_rate": self._audio.sample_rate, "channels": 1},
        }
        return [
            dumps({"event": "connected", "version": "1.0.0"}),
            self._numbered({"event": "start", "stream_id": ids.stream_sid, "start": start}),
        ]

    def media(self, audio: bytes, chunk: int, timestamp_ms: int) -> Frame:
        wire = swap16(audio) if self._swap else audio
        media = {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp_ms), "payload": b64(wire)}
        return self._numbered({"event": "media", "stream_id": self.ids.stream_sid, "media": media})

    def dtmf(self, digit: str) -> Frame:
        return self._numbered({"event": "dtmf", "stream_id": self.ids.stream_sid, "dtmf": {"digit": digit}})

    def stop(self) -> Frame | None:
        body = {"user_id": self.ids.account_sid, "call_control_id": self.ids.call_sid}
        return self._numbered({"event": "stop", "stream_id": self.ids.stream_sid, "stop": body})

    def read(self, message: str | bytes) -> BridgeEvent:
        msg = json_message(message, "Telnyx")
        if isinstance(msg, Problem):
            return msg
        event = msg.get("event")
        body = msg.get(event) if isinstance(event, str) else None
        if event == "media":
            data = unb64(body.get("payload") if isinstance(body, dict) else None)
            if data is None:
                return Problem("media without a base64 media.payload")
            if self._swap:
                if len(data) % 2:
                    return Problem(f"L16 media of {len(data)} bytes is not whole samples")
                data = swap16(data)
            return Play(data)
        if event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            return MarkRequest(name) if isinstance(name, str) else Problem("mark without mark.name string")
        if event == "clear":
            return ClearRequest()
        return unknown(event)

    def mark_echo(self, name: str) -> Frame:
        return self._numbered({"event": "mark", "stream_id": self.ids.stream_sid, "mark": {"name": name}})

    def forget(self, names: Sequence[str]) -> None:
        pass  # queued marks are returned on clear

    def clear_ack(self) -> Frame | None:
        return None


# --- the TeXML webhook -------------------------------------------------------------------------------


def webhook(call: WebhookCall, url: str, credentials: Credentials | None, now: float) -> WebhookRequest:
    """Telnyx's TeXML request (form-encoded, TwiML's names), signed with the account's Ed25519 key."""
    form = [
        ("AccountSid", call.account_sid),
        ("CallSid", call.call_sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", call.from_number),
        ("To", call.to_number),
    ]
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if credentials is not None:
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(credentials.secret))
        timestamp = str(int(now))
        headers["telnyx-timestamp"] = timestamp
        headers["telnyx-signature-ed25519"] = b64(key.sign(timestamp.encode() + b"|" + body))
    return WebhookRequest("POST", url, headers, body)


def parse_answer(body: bytes, content_type: str) -> StreamSetup:
    """TeXML ``<Connect><Stream>`` with RTP bidirectional attributes
    (https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream)."""
    if not content_type.startswith(("text/xml", "application/xml")):
        raise AnswerError(f"Telnyx takes TeXML as text/xml, got {content_type!r}")
    stream = connect_stream(xml_root(body, "Telnyx"), "Telnyx")
    attrs = dict(stream.attrib)
    if attrs.get("bidirectionalMode") != "rtp":
        raise AnswerError(f"bidirectionalMode {attrs.get('bidirectionalMode')!r}: without rtp Telnyx plays MP3 files")
    codec = attrs.get("bidirectionalCodec", "PCMU")
    if attrs.get("codec", "PCMU") != codec:
        raise AnswerError(f"codec {attrs.get('codec')!r} and bidirectionalCodec {codec!r} differ")
    rate = attrs.get("bidirectionalSamplingRate", "8000")
    formats = {"PCMU": ULAW_8K, "PCMA": ALAW_8K}
    if codec in formats and rate == "8000":
        fmt = formats[codec]
    elif codec == "L16" and rate in ("8000", "16000", "24000"):
        fmt = {"8000": L16_8K, "16000": L16_16K, "24000": L16_24K}[rate]
    else:
        raise AnswerError(f"bidirectionalCodec {codec!r} at {rate} Hz")
    if attrs.get("track", "inbound_track") != "inbound_track":
        raise AnswerError(f"track {attrs.get('track')!r}: a bidirectional stream takes the inbound track")
    return StreamSetup("telnyx", attrs["url"], fmt.id, stream_parameters(stream, "Telnyx"), attrs)
