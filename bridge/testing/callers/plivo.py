"""Plivo's side of a bidirectional audio stream (``<Stream bidirectional="true">``), and its answer URL.

https://www.plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference: Plivo
sends ``start`` (no ``connected``; ``sequenceNumber`` a number; ``extra_headers`` the Stream
element's ``extraHeaders``), ``media`` (``timestamp`` in Unix milliseconds), ``dtmf``,
``playedStream`` and ``clearedAudio``; it takes ``playAudio`` (``contentType`` and
``sampleRate`` with every payload), ``checkpoint`` and ``clearAudio``. A checkpoint is answered
"only ... if the preceding events were played successfully": a clear drops the pending ones and
is acknowledged with ``clearedAudio``. The stream ends with the socket. Requests and the
upgrade carry ``X-Plivo-Signature-V3`` and its nonce (https://docs.plivo.com/docs/voice/xml/request/validation).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from bridge.audio.formats import L16_8K, L16_16K, ULAW_8K, AudioFormat, Encoding
from bridge.carrier.common import swap16
from bridge.carrier.plivo import signature
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
    json_message,
    new_uuid,
    signed_url,
    tls_url,
    unb64,
    unknown,
)
from bridge.testing.callers.options import Credentials
from bridge.testing.callers.webhook import AnswerError, StreamSetup, WebhookCall, WebhookRequest, xml_root

FORMATS: tuple[AudioFormat, ...] = (ULAW_8K, L16_8K, L16_16K)
_CONTENT_TYPES = {
    "audio/x-mulaw;rate=8000": ULAW_8K,
    "audio/x-l16;rate=8000": L16_8K,
    "audio/x-l16;rate=16000": L16_16K,
}
_EXTRA_HEADERS = re.compile(r"[A-Za-z0-9]+=[A-Za-z0-9]*([,;][A-Za-z0-9]+=[A-Za-z0-9]*)*")


def _signature_headers(secret: str, method: str, url: str, form: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    nonce = str(secrets.randbelow(10**20)).zfill(20)
    return {"X-Plivo-Signature-V3": signature(secret, method, url, nonce, form), "X-Plivo-Signature-V3-Nonce": nonce}


class PlivoCaller:
    """The Plivo audio-stream wire of one call."""

    name = "plivo"
    frame_ms = 20
    marks_echoed_on_clear = False

    def __init__(self, ctx: CallContext) -> None:
        o = ctx.options
        self._options = o
        self._audio = ctx.audio
        self._started_at_ms = ctx.started_at_ms
        self.ids = StreamIds(
            o.call_sid or new_uuid(), o.stream_sid or new_uuid(), o.account_sid or "MA" + secrets.token_hex(9).upper()
        )
        self._l16 = ctx.audio.encoding is Encoding.L16
        self.encoding = "audio/x-l16" if self._l16 else "audio/x-mulaw"
        self._swap = self._l16 and o.l16_byte_order == "big"
        # extraHeaders reach the stream as written ("key=value" pairs; the start example uses ";").
        self._extra_headers = ";".join(f"{k}={v}" for k, v in o.params.items())
        self._seq = 0

    def _numbered(self, message: dict[str, Any]) -> str:
        self._seq += 1
        return dumps({"event": message.pop("event"), "sequenceNumber": self._seq, **message})

    def upgrade_headers(self) -> dict[str, str]:
        credentials = self._options.credentials
        if credentials is None:
            return {}
        return _signature_headers(credentials.secret, "GET", signed_url(self._options))

    def opening(self) -> Sequence[Frame]:
        ids = self.ids
        start = {
            "callId": ids.call_sid,
            "streamId": ids.stream_sid,
            "accountId": ids.account_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": self.encoding, "sampleRate": self._audio.sample_rate},
        }
        return [self._numbered({"event": "start", "start": start, "extra_headers": self._extra_headers})]

    def media(self, audio: bytes, chunk: int, timestamp_ms: int) -> Frame:
        wire = swap16(audio) if self._swap else audio
        media = {
            "track": "inbound",
            "timestamp": str(self._started_at_ms + timestamp_ms),  # Unix milliseconds
            "chunk": chunk,
            "payload": b64(wire),
        }
        return self._numbered(
            {"event": "media", "streamId": self.ids.stream_sid, "media": media, "extra_headers": self._extra_headers}
        )

    def dtmf(self, digit: str) -> Frame:
        body = {"track": "inbound", "digit": digit}
        return self._numbered({"event": "dtmf", "streamId": self.ids.stream_sid, "dtmf": body})

    def stop(self) -> Frame | None:
        return None  # Plivo's stream ends with the socket

    def read(self, message: str | bytes) -> BridgeEvent:
        msg = json_message(message, "Plivo")
        if isinstance(msg, Problem):
            return msg
        event = msg.get("event")
        if event == "playAudio":
            return self._play(msg.get("media"))
        if event not in ("checkpoint", "clearAudio"):
            return unknown(event)
        if msg.get("streamId") != self.ids.stream_sid:
            return Problem(f"{event} with streamId {msg.get('streamId')!r}, expected {self.ids.stream_sid!r}")
        if event == "clearAudio":
            return ClearRequest()
        name = msg.get("name")
        return MarkRequest(name) if isinstance(name, str) else Problem("checkpoint without a name string")

    def _play(self, media: object) -> BridgeEvent:
        if not isinstance(media, dict):
            return Problem("playAudio without a media object")
        data = unb64(media.get("payload"))
        if data is None:
            return Problem("playAudio without a base64 media.payload")
        # "switching codec between playAudio events is not supported": it must be the stream's.
        content_type, rate = media.get("contentType"), media.get("sampleRate")
        if content_type != self.encoding or rate != self._audio.sample_rate:
            return Problem(
                f"playAudio in {content_type!r} at {rate!r}, the stream is {self.encoding} at {self._audio.sample_rate}"
            )
        if self._l16 and len(data) % 2:
            return Problem(f"L16 playAudio of {len(data)} bytes is not whole samples")
        return Play(swap16(data) if self._swap else data)

    def mark_echo(self, name: str) -> Frame:
        return self._numbered({"event": "playedStream", "streamId": self.ids.stream_sid, "name": name})

    def forget(self, names: Sequence[str]) -> None:
        pass  # nothing kept per checkpoint

    def clear_ack(self) -> Frame | None:
        return dumps({"sequenceNumber": 0, "event": "clearedAudio", "streamId": self.ids.stream_sid})


# --- the answer URL ------------------------------------------------------------------------------------


def webhook(call: WebhookCall, url: str, credentials: Credentials | None, now: float) -> WebhookRequest:
    """Plivo's POST to the answer URL (https://www.plivo.com/docs/voice/concepts/answer-url), signed V3."""
    form = [
        ("CallUUID", call.call_sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("Event", "StartApp"),
        ("From", call.from_number),
        ("To", call.to_number),
    ]
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if credentials is not None:
        headers.update(_signature_headers(credentials.secret, "POST", tls_url(url), form))
    return WebhookRequest("POST", url, headers, urlencode(form).encode())


def parse_answer(body: bytes, content_type: str) -> StreamSetup:
    """Plivo XML ``<Response><Stream bidirectional="true" ...>wss://...</Stream>``
    (https://docs.plivo.com/docs/voice/xml/audiostream)."""
    if not content_type.startswith(("text/xml", "application/xml")):
        raise AnswerError(f"Plivo takes XML as text/xml, got {content_type!r}")
    root = xml_root(body, "Plivo")
    if [e.tag for e in root] != ["Stream"]:
        raise AnswerError(f"Plivo answer has {[e.tag for e in root]}, expected one <Stream>")
    stream = root[0]
    attrs = dict(stream.attrib)
    url = (stream.text or "").strip()
    if not url.startswith(("wss://", "ws://")):
        raise AnswerError(f"<Stream> names {url!r}, not a WebSocket URL")
    if attrs.get("bidirectional") != "true":
        raise AnswerError("<Stream> is not bidirectional: Plivo would not play the bridge's audio")
    if attrs.get("keepCallAlive") != "true":
        raise AnswerError("<Stream> without keepCallAlive: Plivo would go on to the next element (none: hang up)")
    if attrs.get("audioTrack", "inbound") != "inbound":
        raise AnswerError(f"audioTrack {attrs.get('audioTrack')!r}: a bidirectional stream takes inbound only")
    content = attrs.get("contentType", "audio/x-l16;rate=8000")
    if content not in _CONTENT_TYPES:
        raise AnswerError(f"contentType {content!r}")
    extra = attrs.get("extraHeaders", "")
    params: dict[str, str] = {}
    if extra:
        # "Only characters [A-Z], [a-z], [0-9] allowed", at most 512 bytes.
        if len(extra.encode()) > 512 or not _EXTRA_HEADERS.fullmatch(extra):
            raise AnswerError(f"extraHeaders {extra[:80]!r} breaks Plivo's rules (alphanumeric pairs, 512 bytes)")
        params = dict(item.split("=", 1) for item in re.split(r"[,;]", extra))
    return StreamSetup("plivo", url, _CONTENT_TYPES[content].id, params, attrs)
