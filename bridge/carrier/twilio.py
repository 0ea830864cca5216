"""Twilio Media Streams dialect (bidirectional ``<Connect><Stream>``). Pure.

Reading: one JSON text frame in, one carrier-neutral event out. Twilio sends counters and
timestamps as JSON *strings* ("1", "20"); other Twilio-style carriers send numbers, so both
are accepted. A bad message becomes a :class:`CarrierError` rather than an exception; it is
fatal only when the stream cannot go on (no usable ``start``).

Writing: the per-call :class:`TwilioWriter` builds ``media``/``mark``/``clear`` frames from
templates made once per call, so the hot path is two string concatenations.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from bridge.carrier import twiml
from bridge.carrier.base import (
    Answer,
    CallDetails,
    CallIds,
    CarrierError,
    CarrierEvent,
    Connected,
    Dtmf,
    InboundRequest,
    MarkEcho,
    Media,
    Start,
    Stop,
)
from bridge.carrier.twilio_signature import signature_valid
from bridge.httpmsg import HttpRequest

_DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def parse(text: str | bytes) -> CarrierEvent:
    """Parse one Twilio message."""
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # too deeply nested: RecursionError
        return CarrierError("invalid_json", f"not JSON: {exc}")
    if not isinstance(msg, dict):
        return CarrierError("invalid_json", "message is not a JSON object")
    event = msg.get("event")
    # media first: it is 50 messages a second, everything else is rare.
    if event == "media":
        media = msg.get("media")
        if not isinstance(media, dict):
            return CarrierError("missing_field", "media message without a media object")
        payload = media.get("payload")
        if not isinstance(payload, str):
            return CarrierError("missing_field", "media message without a string payload")
        track = media.get("track")
        if track is not None and track != "inbound":
            return CarrierError("unexpected_track", f"media on track {track!r} ignored")
        return Media(payload, _int_or_none(media.get("timestamp")))
    if event == "mark":
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            return CarrierError("missing_field", "mark message without mark.name")
        return MarkEcho(name)
    if event == "start":
        return _parse_start(msg)
    if event == "connected":
        return Connected(str(msg.get("protocol", "")), str(msg.get("version", "")))
    if event == "dtmf":
        dtmf = msg.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if not isinstance(digit, str) or len(digit) != 1 or digit not in _DTMF_DIGITS:
            return CarrierError("invalid_dtmf", f"dtmf message with digit {digit!r}")
        return Dtmf(digit)
    if event == "stop":
        stop = msg.get("stop")
        call_sid = stop.get("callSid") if isinstance(stop, dict) else None
        return Stop(call_sid if isinstance(call_sid, str) else None)
    if event is None:
        return CarrierError("missing_field", "message without an event field")
    return CarrierError("unknown_event", f"unknown event {str(event)[:40]!r}")


def _parse_start(msg: dict[str, Any]) -> CarrierEvent:
    start = msg.get("start")
    if not isinstance(start, dict):
        return CarrierError("missing_field", "start message without a start object", fatal=True)
    stream_sid = start.get("streamSid") or msg.get("streamSid")
    if not isinstance(stream_sid, str) or not stream_sid:
        return CarrierError("missing_field", "start message without streamSid", fatal=True)
    fmt = start.get("mediaFormat")
    fmt = fmt if isinstance(fmt, dict) else {}
    encoding = fmt.get("encoding", "audio/x-mulaw")
    rate = _int_or_none(fmt.get("sampleRate", 8000))
    channels = _int_or_none(fmt.get("channels", 1))
    if not isinstance(encoding, str) or rate is None or channels is None or rate <= 0 or channels <= 0:
        return CarrierError("invalid_format", f"unusable mediaFormat {fmt!r}", fatal=True)
    tracks = start.get("tracks")
    return Start(
        stream_sid=stream_sid,
        call_sid=str(start.get("callSid") or ""),
        account_sid=str(start.get("accountSid") or ""),
        encoding=encoding,
        sample_rate=rate,
        channels=channels,
        custom_parameters=_str_map(start.get("customParameters")),
        tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else ("inbound",),
    )


class TwilioWriter:
    """Frames to Twilio for one stream; the templates are built once per call."""

    __slots__ = ("_clear", "_mark_head", "_media_head")

    def __init__(self, stream_sid: str) -> None:
        sid = json.dumps(stream_sid)  # untrusted input: escape it once, here
        self._media_head = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_head = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":"'
        self._clear = '{"event":"clear","streamSid":' + sid + "}"

    def media(self, payload_b64: str) -> str:
        # base64 has no characters that need JSON escaping.
        return self._media_head + payload_b64 + '"}}'

    def mark(self, name: str) -> str:
        # Mark names are generated by the bridge from [A-Za-z0-9:_-] only.
        return self._mark_head + name + '"}}'

    def clear(self) -> str:
        return self._clear


class Twilio:
    """Twilio Media Streams as a :class:`~bridge.carrier.base.Carrier`.

    https://www.twilio.com/docs/voice/media-streams/websocket-messages (messages),
    https://www.twilio.com/docs/voice/twiml/stream (the answer document),
    https://www.twilio.com/docs/usage/webhooks/webhooks-security (signatures).
    """

    name = "twilio"
    # "If your server sends a clear message, Twilio empties the audio buffer and sends back mark
    # messages matching any remaining mark messages from your server."
    marks_echoed_on_clear = True

    def __init__(
        self,
        auth_token: str | None = None,
        *,
        verify: bool = False,
        api_base_url: str = "https://api.twilio.com",
        account_sid: str | None = None,
        api_key: tuple[str, str] | None = None,
    ) -> None:
        if verify and not auth_token:
            raise ValueError("Twilio signature checks need the auth token")
        self._token = auth_token
        self._verify = verify
        self._api_base_url = api_base_url.rstrip("/")
        self._account_sid = account_sid
        self._api_key = api_key  # (key SID, key secret): REST credentials instead of the auth token

    def parse(self, message: str | bytes) -> CarrierEvent:
        return parse(message)

    def writer(self, start: Start) -> TwilioWriter:
        return TwilioWriter(start.stream_sid)

    def call_details(self, request: InboundRequest) -> CallDetails:
        form = dict(request.form)
        return CallDetails(form.get("CallSid"), form.get("From"), form.get("To"))

    def answer(self, stream_url: str, parameters: Mapping[str, str]) -> Answer:
        return Answer(twiml.connect_stream(stream_url, parameters).encode(), "text/xml; charset=utf-8")

    def verifies(self) -> bool:
        return self._verify

    def verify_request(self, request: InboundRequest) -> bool:
        if not self._verify:
            return True
        assert self._token is not None
        params = list(request.form) if request.method == "POST" else []
        return signature_valid(self._token, request.url, params, request.headers.get("x-twilio-signature"))

    def verify_upgrade(self, request: InboundRequest) -> bool:
        if not self._verify:
            return True
        assert self._token is not None
        return signature_valid(self._token, request.url, [], request.headers.get("x-twilio-signature"))

    @property
    def can_transfer(self) -> bool:
        return self._api_key is not None or self._token is not None

    def transfer(self, call: CallIds, destination: str) -> HttpRequest:
        """Redirect the live call to new TwiML that dials ``destination`` (Twilio then stops the stream).

        https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource
        """
        account = self._account_sid or call.account_sid
        user, password = self._api_key or (account, self._token or "")
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        body = urlencode({"Twiml": twiml.dial(destination)}).encode()
        path = f"/2010-04-01/Accounts/{quote(account, safe='')}/Calls/{quote(call.call_sid, safe='')}.json"
        headers = (
            ("Authorization", f"Basic {credentials}"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        )
        return HttpRequest("POST", self._api_base_url + path, headers, body, timeout_s=10.0)

