"""Exotel's side of a Voicebot applet stream, and the applet's dynamic-URL request.

https://developer.exotel.com/docs/agentstream/websocket-protocol: Exotel "streams raw PCM audio
every ~100 ms": ``connected``, ``start`` (snake_case, numbers as strings, ``media_format``
``audio/x-raw`` 16-bit little-endian, ``custom_parameters`` from the URL's query), ``media``,
``dtmf``, ``mark`` (when audio sent before it has played) and ``stop``; it takes ``media``,
``mark`` and ``clear`` with the ``stream_sid``. Audio sent back must come in chunks of a multiple
of 320 bytes and at most 100 KB (https://support.exotel.com/support/solutions/articles/3000108630).
The applet's URL may be "an HTTPS endpoint that dynamically returns the WSS URL" as
``{"url": ...}``; credentials written into a URL go as ``Authorization: Basic``
(https://developer.exotel.com/docs/agentstream/stream-voicebot-applet). Pending marks are echoed
on clear, as in Twilio's protocol that Exotel's follows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from bridge.audio.formats import L16_8K, L16_16K, L16_24K, AudioFormat
from bridge.carrier.common import basic_authorization
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
    unb64,
    unknown,
)
from bridge.testing.callers.options import Credentials
from bridge.testing.callers.webhook import AnswerError, StreamSetup, WebhookCall, WebhookRequest, user_info

FORMATS: tuple[AudioFormat, ...] = (L16_8K, L16_16K, L16_24K)
_RATES = {"8000": L16_8K, "16000": L16_16K, "24000": L16_24K}
CHUNK_MULTIPLE = 320
MAX_CHUNK = 100 * 1000


class ExotelCaller:
    """The Exotel Voicebot wire of one call."""

    name = "exotel"
    frame_ms = 100
    marks_echoed_on_clear = True

    def __init__(self, ctx: CallContext) -> None:
        o = ctx.options
        self._options = o
        self._audio = ctx.audio
        self.ids = StreamIds(o.call_sid or hex_sid(), o.stream_sid or hex_sid(), o.account_sid or hex_sid())
        self.encoding = "audio/x-raw"
        self._seq = 0

    def _numbered(self, message: dict[str, Any]) -> str:
        self._seq += 1
        return dumps(
            {
                "event": message.pop("event"),
                "sequence_number": str(self._seq),
                "stream_sid": self.ids.stream_sid,
                **message,
            }
        )

    def upgrade_headers(self) -> dict[str, str]:
        credentials = self._options.credentials
        if credentials is None or credentials.user is None:
            return {}
        return {"Authorization": basic_authorization(credentials.user, credentials.secret)}

    def opening(self) -> Sequence[Frame]:
        o, ids = self._options, self.ids
        start = {
            "stream_sid": ids.stream_sid,
            "call_sid": ids.call_sid,
            "account_sid": ids.account_sid,
            "from": o.from_number or "+919876543210",
            "to": o.to_number or "+918047491899",
            "custom_parameters": dict(o.params),
            "media_format": {"encoding": self.encoding, "sample_rate": str(self._audio.sample_rate), "bit_rate": "16"},
        }
        return [dumps({"event": "connected"}), self._numbered({"event": "start", "start": start})]

    def media(self, audio: bytes, chunk: int, timestamp_ms: int) -> Frame:
        media = {"chunk": str(chunk), "timestamp": str(timestamp_ms), "payload": b64(audio)}
        return self._numbered({"event": "media", "media": media})

    def dtmf(self, digit: str) -> Frame:
        return self._numbered({"event": "dtmf", "dtmf": {"digit": digit, "duration": "100"}})

    def stop(self) -> Frame | None:
        body = {"call_sid": self.ids.call_sid, "account_sid": self.ids.account_sid, "reason": "callended"}
        return self._numbered({"event": "stop", "stop": body})

    def read(self, message: str | bytes) -> BridgeEvent:
        msg = json_message(message, "Exotel")
        if isinstance(msg, Problem):
            return msg
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            return unknown(event)
        if msg.get("stream_sid") != self.ids.stream_sid:
            return Problem(f"{event} with stream_sid {msg.get('stream_sid')!r}, expected {self.ids.stream_sid!r}")
        body = msg.get(event)
        if event == "media":
            data = unb64(body.get("payload") if isinstance(body, dict) else None)
            if data is None:
                return Problem("media without a base64 media.payload")
            if len(data) % 2:
                return Problem(f"media of {len(data)} bytes is not whole 16-bit samples")
            problem = None
            if len(data) % CHUNK_MULTIPLE or len(data) > MAX_CHUNK:
                problem = f"media chunk of {len(data)} bytes: Exotel takes multiples of 320 bytes up to 100 KB"
            return Play(data, problem)
        if event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            return MarkRequest(name) if isinstance(name, str) else Problem("mark without mark.name string")
        return ClearRequest()

    def mark_echo(self, name: str) -> Frame:
        return self._numbered({"event": "mark", "mark": {"name": name}})

    def forget(self, names: Sequence[str]) -> None:
        pass  # echoed on clear

    def clear_ack(self) -> Frame | None:
        return None


# --- the dynamic URL ------------------------------------------------------------------------------


def webhook(call: WebhookCall, url: str, credentials: Credentials | None, now: float) -> WebhookRequest:
    """The applet's GET with the call in the query (CallSid, CallFrom/From, CallTo/To; see
    https://support.exotel.com/support/solutions/articles/3000096873), Basic auth from the URL's user-info."""
    query = urlencode(
        {
            "CallSid": call.call_sid,
            "CallFrom": call.from_number,
            "CallTo": call.to_number,
            "From": call.from_number,
            "To": call.to_number,
            "Direction": "incoming",
        }
    )
    headers: dict[str, str] = {}
    if credentials is not None and credentials.user is not None:
        headers["Authorization"] = basic_authorization(credentials.user, credentials.secret)
    return WebhookRequest("GET", f"{url}{'&' if urlsplit(url).query else '?'}{query}", headers)


def parse_answer(body: bytes, content_type: str) -> StreamSetup:
    """``{"url": "wss://[key:token@]host/path?sample-rate=N&k=v"}``: up to three custom parameters
    in at most 256 characters of query."""
    if not content_type.startswith("application/json"):
        raise AnswerError(f"Exotel's dynamic URL answers JSON, got {content_type!r}")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise AnswerError(f"the answer is not JSON: {exc}") from None
    url = doc.get("url") if isinstance(doc, dict) else None
    if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
        raise AnswerError(f"the answer's url {url!r} is not a WebSocket URL")
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    rate = query.pop("sample-rate", "8000")
    if rate not in _RATES:
        raise AnswerError(f"sample-rate {rate!r}: Exotel streams 8000, 16000 or 24000")
    if len(query) > 3 or len(parts.query) > 256:
        raise AnswerError(f"{len(query)} custom parameters in {len(parts.query)} characters: Exotel takes 3 in 256")
    return StreamSetup("exotel", url, _RATES[rate].id, query, {"sample-rate": rate}, basic=user_info(url))
