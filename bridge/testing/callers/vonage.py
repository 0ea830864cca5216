"""Vonage's side of an NCCO ``connect`` to a ``websocket`` endpoint, and its answer webhook.

https://developer.vonage.com/en/voice/voice-api/concepts/websockets: Vonage opens with a text
``websocket:connected`` carrying the endpoint's ``content-type`` and its ``headers`` as
top-level fields, then sends the caller's audio as binary messages of 16-bit little-endian PCM
(20 ms each, as Vonage's own tutorial writes them back), and ``websocket:dtmf`` for keys. It
plays binary audio from the bridge, answers ``{"action": "notify", "payload": ...}`` with
``{"event": "websocket:notify", "payload": ...}`` once the audio before it has played, and
``{"action": "clear"}`` with ``websocket:cleared`` (the queued notifies are discarded with the
audio). The stream ends with the socket. Signed webhooks, and the upgrade when the NCCO asks for
``authorization: {"type": "vonage"}``, carry a HS256 JWT in ``Authorization: Bearer``
(https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from bridge.audio.formats import L16_8K, L16_16K, L16_24K, AudioFormat
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
    new_uuid,
    unknown,
)
from bridge.testing.callers.options import Credentials
from bridge.testing.callers.webhook import AnswerError, StreamSetup, WebhookCall, WebhookRequest

FORMATS: tuple[AudioFormat, ...] = (L16_16K, L16_8K, L16_24K)
_RATES = {8000: L16_8K, 16000: L16_16K, 24000: L16_24K}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed_jwt(secret: str, issued_at: float, **claims: Any) -> str:
    """A JWT as Vonage signs webhooks: HS256 with the signature secret, ``iat`` and ``jti``."""
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps({"iat": int(issued_at), "jti": new_uuid(), "iss": "Vonage", **claims}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


class VonageCaller:
    """The Vonage WebSocket wire of one call."""

    name = "vonage"
    frame_ms = 20
    marks_echoed_on_clear = False

    def __init__(self, ctx: CallContext) -> None:
        o = ctx.options
        self._options = o
        self._audio = ctx.audio
        self._now = ctx.started_at_ms / 1000
        # The call's uuid: the bridge's NCCO passes it as the call_sid header; without an answer
        # document the caller does the same, so the bridge knows the call.
        call = o.call_sid or o.params.get("call_sid") or new_uuid()
        self.ids = StreamIds(call, o.stream_sid or call, o.account_sid or "")
        self._headers = {"call_sid": call, **o.params}
        self.encoding = f"audio/l16;rate={ctx.audio.sample_rate}"
        self._frame = ctx.audio.bytes_per_ms * self.frame_ms
        self._payloads: defaultdict[str, deque[Any]] = defaultdict(deque)  # notify name -> payloads to echo

    def upgrade_headers(self) -> dict[str, str]:
        credentials = self._options.credentials
        if credentials is None:
            return {}
        return {"Authorization": "Bearer " + signed_jwt(credentials.secret, self._now)}

    def opening(self) -> Sequence[Frame]:
        return [dumps({"event": "websocket:connected", "content-type": self.encoding, **self._headers})]

    def media(self, audio: bytes, chunk: int, timestamp_ms: int) -> Frame:
        return audio  # binary: no JSON, no base64, no stream id

    def dtmf(self, digit: str) -> Frame:
        return dumps({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    def stop(self) -> Frame | None:
        return None  # the call ends with the socket

    def read(self, message: str | bytes) -> BridgeEvent:
        if isinstance(message, bytes):
            if len(message) % 2:
                return Problem(f"binary audio of {len(message)} bytes is not whole 16-bit samples")
            problem = None
            if len(message) != self._frame:
                problem = f"binary audio of {len(message)} bytes; Vonage plays 20 ms messages ({self._frame} bytes)"
            return Play(message, problem)
        try:
            msg = json.loads(message)
        except (ValueError, RecursionError):
            return Problem(f"non-JSON message: {message[:80]!r}")
        if not isinstance(msg, dict):
            return Problem(f"JSON message is not an object: {message[:80]!r}")
        action = msg.get("action")
        if action == "clear":
            return ClearRequest()
        if action == "notify":
            payload = msg.get("payload")
            name = payload.get("name") if isinstance(payload, dict) else None
            if not isinstance(name, str):
                return Problem("notify without a payload.name string")
            self._payloads[name].append(payload)
            return MarkRequest(name)
        return unknown(action if action is not None else msg.get("event"))

    def mark_echo(self, name: str) -> Frame:
        queued = self._payloads.get(name)
        payload = queued.popleft() if queued else {"name": name}
        if queued is not None and not queued:
            del self._payloads[name]
        return dumps({"event": "websocket:notify", "payload": payload})

    def forget(self, names: Sequence[str]) -> None:
        for name in names:  # discarded with the queued audio
            queued = self._payloads.get(name)
            if queued:
                queued.popleft()
                if not queued:
                    del self._payloads[name]

    def clear_ack(self) -> Frame | None:
        return dumps({"event": "websocket:cleared"})


# --- the answer webhook ---------------------------------------------------------------------------------


def webhook(call: WebhookCall, url: str, credentials: Credentials | None, now: float) -> WebhookRequest:
    """Vonage's answer request: a GET with the call in the query
    (https://developer.vonage.com/en/voice/voice-api/webhook-reference#answer-webhook), signed."""
    query = urlencode(
        {
            "to": call.to_number,
            "from": call.from_number,
            "uuid": call.call_sid,
            "conversation_uuid": "CON-" + new_uuid(),
        }
    )
    headers: dict[str, str] = {}
    if credentials is not None:
        headers["Authorization"] = "Bearer " + signed_jwt(credentials.secret, now)
    return WebhookRequest("GET", f"{url}{'&' if urlsplit(url).query else '?'}{query}", headers)


def parse_answer(body: bytes, content_type: str) -> StreamSetup:
    """An NCCO whose one action connects a ``websocket`` endpoint
    (https://developer.vonage.com/en/voice/voice-api/ncco-reference#connect)."""
    if not content_type.startswith("application/json"):
        raise AnswerError(f"Vonage takes an NCCO as application/json, got {content_type!r}")
    try:
        ncco = json.loads(body)
    except ValueError as exc:
        raise AnswerError(f"the NCCO is not JSON: {exc}") from None
    if not isinstance(ncco, list) or len(ncco) != 1 or not isinstance(ncco[0], dict):
        raise AnswerError("the NCCO is not a list of one action")
    action = ncco[0]
    endpoints = action.get("endpoint")
    if action.get("action") != "connect" or not isinstance(endpoints, list) or len(endpoints) != 1:
        raise AnswerError(f"the NCCO's action is not a connect to one endpoint: {action}")
    endpoint = endpoints[0]
    if not isinstance(endpoint, dict) or endpoint.get("type") != "websocket":
        raise AnswerError(f"the endpoint is not a websocket: {endpoint}")
    uri = endpoint.get("uri")
    if not isinstance(uri, str) or not uri.startswith(("wss://", "ws://")):
        raise AnswerError(f"websocket uri {uri!r}")
    content = endpoint.get("content-type")
    fmt = {f"audio/l16;rate={rate}": f for rate, f in _RATES.items()}.get(content) if isinstance(content, str) else None
    if fmt is None:
        raise AnswerError(f"content-type {content!r}: Vonage streams audio/l16;rate=8000|16000|24000")
    headers = endpoint.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise AnswerError(f"headers {headers!r} are not text")
    authorization = endpoint.get("authorization")
    attrs = {"content-type": str(content)}
    return StreamSetup("vonage", uri, fmt.id, dict(headers), attrs, authorization=authorization == {"type": "vonage"})
