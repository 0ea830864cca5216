"""Telnyx media streaming over WebSockets, answered with TeXML ``<Connect><Stream>``. Pure.

Sources:

* messages: https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket
  (``connected``, ``start``, ``media``, ``mark``, ``dtmf``, ``error``, ``stop`` from Telnyx;
  ``media``, ``mark``, ``clear`` to it; "A clear frame also returns queued marks");
* the answer document: https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/connect
  and https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream;
* webhook signatures: https://developers.telnyx.com/api-reference/callbacks/texml-http-request
  (``telnyx-signature-ed25519`` over ``"{telnyx-timestamp}|{body}"``, checked with the account's
  public key), as team-telnyx/telnyx-python ``lib/webhook_verification.py`` does, with its
  five-minute tolerance;
* moving a live TeXML call: https://developers.telnyx.com/api-reference/texml-rest-commands/update-call
  (``POST /v2/texml/Accounts/{account_sid}/Calls/{call_sid}`` with new ``Texml``).

Choices where the sources are silent:

* **L16 byte order.** Telnyx streams "RTP payloads without RTP headers"; RTP's L16 is network
  byte order (RFC 3551 §4.5.11), and third-party Telnyx clients decode it as big-endian. So by
  default the dialect swaps L16 to little-endian in :meth:`Telnyx.parse` and back in
  :meth:`TelnyxWriter.media`, and the rest of the bridge only ever sees little-endian L16.
  ``carriers.telnyx.l16_byte_order = "little"`` turns the swap off should Telnyx send
  little-endian.
* **The TeXML page lists no ``L16`` for ``codec``/``bidirectionalCodec``** (the WebSocket
  reference and the Call Control API do). The answer asks for the configured codec both ways;
  should Telnyx stream another codec than the one it will play, the ``start`` is refused (a
  fatal :class:`CarrierError`) instead of playing noise.
* **The stream upgrade carries no credential** a TeXML answer can set (Call Control's
  ``stream_auth_token`` has no TeXML attribute), so the answer adds a ``bridge_token``
  ``<Parameter>`` (:mod:`bridge.carrier.streamtoken`) that :meth:`Telnyx.parse` checks on
  ``start``: a stream without a valid one ends before the model is connected. The token is
  removed from the custom parameters the call sees.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, field_validator, model_validator

from bridge.carrier import streamtoken, twiml
from bridge.carrier.base import (
    Answer,
    CallDetails,
    CallIds,
    CarrierError,
    CarrierEvent,
    Connected,
    InboundRequest,
    MarkEcho,
    Media,
    Start,
    Stop,
)
from bridge.carrier.common import (
    CarrierSettings,
    dtmf,
    int_or_none,
    json_object,
    request_params,
    require,
    secret,
    str_map,
    swap16,
    swap16_b64,
    text,
    unknown_event,
)
from bridge.httpmsg import HttpRequest

TOKEN_PARAMETER = "bridge_token"
_INBOUND_TRACKS = frozenset({None, "inbound", "inbound_track"})

Codec = Literal["PCMU", "PCMA", "L16"]


class TelnyxSettings(CarrierSettings):
    """``[carriers.telnyx]``."""

    codec: Codec = "PCMU"
    """The codec both ways (``codec`` and ``bidirectionalCodec`` of the TeXML ``<Stream>``)."""
    sample_rate: Literal[8000, 16000, 24000] = 8000
    """``bidirectionalSamplingRate``; G.711 is 8000 only."""
    l16_byte_order: Literal["big", "little"] = "big"
    public_key_secret: str = "TELNYX_PUBLIC_KEY"
    """Name of the secret holding the account's Ed25519 public key (base64), for webhook signatures."""
    stream_secret: str = "BRIDGE_STREAM_SECRET"
    """Name of the secret the bridge keys its stream tokens with (any long random string)."""
    timestamp_tolerance_s: float = Field(300.0, gt=0, le=3600)
    api_base_url: str = "https://api.telnyx.com"
    api_key_secret: str = "TELNYX_API_KEY"
    """Name of the secret holding the API key (v2) used to transfer calls; no key, no transfers."""
    account_sid: str | None = None
    """The TeXML account id for transfers; default: the ``user_id`` of the call's ``start``."""

    @field_validator("api_base_url")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL such as https://api.telnyx.com")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _g711_is_8k(self) -> TelnyxSettings:
        if self.codec != "L16" and self.sample_rate != 8000:
            raise ValueError(f"sample_rate: {self.codec} is 8000 Hz only")
        return self

    def secret_names(self) -> tuple[str, ...]:
        return (self.public_key_secret, self.stream_secret, self.api_key_secret)


class TelnyxWriter:
    """Frames to Telnyx for one stream (RTP mode). No stream id: Telnyx routes by the socket."""

    __slots__ = ("_swap",)

    def __init__(self, swap: bool) -> None:
        self._swap = swap

    def media(self, payload_b64: str) -> str:
        if self._swap:
            payload_b64 = base64.b64encode(swap16(base64.b64decode(payload_b64))).decode("ascii")
        return '{"event":"media","media":{"payload":"' + payload_b64 + '"}}'

    def mark(self, name: str) -> str:
        # Mark names are generated by the bridge from [A-Za-z0-9] only: nothing to escape.
        return '{"event":"mark","mark":{"name":"' + name + '"}}'

    def clear(self) -> str:
        return '{"event":"clear"}'


class Telnyx:
    """Telnyx as a :class:`~bridge.carrier.base.Carrier`."""

    name = "telnyx"
    # "Telnyx sends the same mark back when the immediately preceding media finishes playing
    # ... A clear frame also returns queued marks." (the WebSocket reference above)
    marks_echoed_on_clear = True

    def __init__(
        self,
        *,
        codec: Codec = "PCMU",
        sample_rate: int = 8000,
        l16_big_endian: bool = True,
        verify: bool = False,
        public_key: str | None = None,
        stream_key: str | None = None,
        timestamp_tolerance_s: float = 300.0,
        api_base_url: str = "https://api.telnyx.com",
        api_key: str | None = None,
        account_sid: str | None = None,
    ) -> None:
        if verify and (public_key is None or stream_key is None):
            raise ValueError("Telnyx verification needs the public key and the stream secret")
        self._codec = codec
        self._rate = sample_rate if codec == "L16" else 8000
        self._swap = codec == "L16" and l16_big_endian
        self._verify = verify
        self._public_key = _load_public_key(public_key) if public_key else None
        self._stream_key = stream_key.encode() if stream_key else None
        self._tolerance = timestamp_tolerance_s
        self._api_base_url = api_base_url.rstrip("/")
        self._api_key = api_key
        self._account_sid = account_sid

    # --- the stream ------------------------------------------------------------------------

    def parse(self, message: str | bytes) -> CarrierEvent:
        msg = json_object(message)
        if isinstance(msg, CarrierError):
            return msg
        event = msg.get("event")
        if event == "media":  # 50 a second: first
            media = msg.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                return CarrierError("missing_field", "media message without a string payload")
            assert isinstance(media, dict)
            track = media.get("track")
            # A set lookup: a list or an object here would raise TypeError (unhashable).
            if not (track is None or (isinstance(track, str) and track in _INBOUND_TRACKS)):
                return CarrierError("unexpected_track", f"media on track {str(track)[:20]!r} ignored")
            if self._swap:
                swapped = swap16_b64(payload)
                if swapped is None:
                    return CarrierError("invalid_payload", "L16 payload is not base64 of whole samples")
                payload = swapped
            return Media(payload, int_or_none(media.get("timestamp")))
        if event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                return CarrierError("missing_field", "mark message without mark.name")
            return MarkEcho(name)
        if event == "start":
            return self._start(msg)
        if event == "connected":
            return Connected("", text(msg.get("version")))
        if event == "dtmf":
            body = msg.get("dtmf")
            return dtmf(body.get("digit") if isinstance(body, dict) else None)
        if event == "stop":
            stop = msg.get("stop")
            call = text(stop.get("call_control_id")) if isinstance(stop, dict) else ""
            return Stop(call or None)
        if event == "error":
            return _error(msg)
        return unknown_event(event)

    def _start(self, msg: dict[str, Any]) -> CarrierEvent:
        start = msg.get("start")
        if not isinstance(start, dict):
            return CarrierError("missing_field", "start message without a start object", fatal=True)
        params = str_map(start.get("custom_parameters"))
        token = params.pop(TOKEN_PARAMETER, None)  # never let it reach records or placeholders
        verify = self._verify and self._stream_key is not None
        if verify and streamtoken.check(self._stream_key or b"", self.name, token) is None:
            return CarrierError("unauthenticated", f"start without a valid {TOKEN_PARAMETER} parameter", fatal=True)
        stream_id = text(msg.get("stream_id")) or text(start.get("stream_id"))
        if not stream_id:
            return CarrierError("missing_field", "start message without stream_id", fatal=True)
        fmt = start.get("media_format")
        fmt = fmt if isinstance(fmt, dict) else {}
        encoding = fmt.get("encoding", "PCMU")
        rate = int_or_none(fmt.get("sample_rate", 8000))
        channels = int_or_none(fmt.get("channels", 1))
        if not isinstance(encoding, str) or rate is None or channels is None or rate <= 0 or channels <= 0:
            return CarrierError("invalid_format", f"unusable media_format {str(fmt)[:100]}", fatal=True)
        if encoding.upper() != self._codec or (self._codec == "L16" and rate != self._rate):
            # We play what we asked for: another codec inbound means the answer was not honoured.
            reason = f"Telnyx streams {encoding} at {rate} Hz, the bridge asked for {self._codec} at {self._rate} Hz"
            return CarrierError("format_mismatch", reason, fatal=True)
        call_control_id = text(start.get("call_control_id"))
        return Start(
            stream_sid=stream_id,
            # The TeXML CallSid the answer was asked for (what the TeXML REST API takes), else
            # the call's Call Control id.
            call_sid=params.get("call_sid") or call_control_id,
            account_sid=text(start.get("user_id")),
            encoding=encoding,
            sample_rate=rate,
            channels=channels,
            custom_parameters=params,
            tracks=("inbound",),
            from_number=text(start.get("from")) or None,
            to_number=text(start.get("to")) or None,
        )

    def writer(self, start: Start) -> TelnyxWriter:
        return TelnyxWriter(self._swap)

    # --- the voice webhook ---------------------------------------------------------------

    def call_details(self, request: InboundRequest) -> CallDetails:
        params = request_params(request)
        return CallDetails(params.get("CallSid"), params.get("From"), params.get("To"))

    def answer(self, stream_url: str, parameters: Mapping[str, str]) -> Answer:
        root = ElementTree.Element("Response")
        attrs = {
            "url": stream_url,
            "track": "inbound_track",
            "codec": self._codec,
            "bidirectionalMode": "rtp",
            "bidirectionalCodec": self._codec,
        }
        if self._codec == "L16":
            attrs["bidirectionalSamplingRate"] = str(self._rate)
        stream = ElementTree.SubElement(ElementTree.SubElement(root, "Connect"), "Stream", attrs)
        for key, value in parameters.items():
            if key != TOKEN_PARAMETER:
                ElementTree.SubElement(stream, "Parameter", {"name": key, "value": value})
        if self._stream_key is not None:
            token = streamtoken.issue(self._stream_key, self.name, parameters.get("call_sid", ""))
            ElementTree.SubElement(stream, "Parameter", {"name": TOKEN_PARAMETER, "value": token})
        body = '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(root, encoding="unicode")
        return Answer(body.encode(), "text/xml; charset=utf-8")

    # --- authentication --------------------------------------------------------------------

    def verifies(self) -> bool:
        return self._verify

    def verify_request(self, request: InboundRequest) -> bool:
        if not self._verify:
            return True
        assert self._public_key is not None
        signature = request.headers.get("telnyx-signature-ed25519")
        timestamp = request.headers.get("telnyx-timestamp")
        sent_at = int_or_none(timestamp)
        if not signature or timestamp is None or sent_at is None:
            return False
        if request.received_at is not None and abs(request.received_at - sent_at) > self._tolerance:
            return False
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        if len(raw) != 64:
            return False
        try:
            self._public_key.verify(raw, timestamp.encode() + b"|" + request.body)
        except InvalidSignature:
            return False
        return True

    def verify_upgrade(self, request: InboundRequest) -> bool:
        # Nothing on a TeXML stream's upgrade can be checked: the stream proves itself with the
        # bridge_token parameter of its start message (see parse).
        return True

    # --- transfer -------------------------------------------------------------------------

    @property
    def can_transfer(self) -> bool:
        return self._api_key is not None

    def transfer(self, call: CallIds, destination: str) -> HttpRequest:
        """Replace the live call's TeXML with a ``<Dial>`` (Telnyx then ends the stream).

        TeXML dials ``<Number>`` and ``<Sip>``; it has no ``<Client>`` noun
        (https://developers.telnyx.com/docs/voice/programmable-voice/texml-twiml-compatibility),
        so a ``client:`` target is refused by Telnyx and the model is told the transfer failed.
        """
        account = self._account_sid or call.account_sid
        path = f"/v2/texml/Accounts/{quote(account, safe='')}/Calls/{quote(call.call_sid, safe='')}"
        # The reference gives the body as a form ("keys ... MUST BE formatted in CamelCase").
        body = urlencode({"Texml": twiml.dial(destination)}).encode()
        headers = (("Authorization", f"Bearer {self._api_key}"), ("Content-Type", "application/x-www-form-urlencoded"))
        return HttpRequest("POST", self._api_base_url + path, headers, body, timeout_s=10.0)


def _error(msg: dict[str, Any]) -> CarrierError:
    payload = msg.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    code, title, detail = (text(payload.get(k))[:80] for k in ("code", "title", "detail"))
    return CarrierError("carrier_error", f"Telnyx error {code} {title}: {detail}".strip())


def _load_public_key(value: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ValueError("the Telnyx public key is not a base64 Ed25519 public key (32 bytes)") from None


def from_settings(settings: TelnyxSettings, secrets: Mapping[str, str]) -> Telnyx:
    public_key = secret(secrets, settings.public_key_secret)
    stream_key = secret(secrets, settings.stream_secret)
    if settings.verify:
        require(public_key, "carriers.telnyx.verify: the Telnyx public key", settings.public_key_secret)
        require(stream_key, "carriers.telnyx.verify: the stream token secret", settings.stream_secret)
    return Telnyx(
        codec=settings.codec,
        sample_rate=settings.sample_rate,
        l16_big_endian=settings.l16_byte_order == "big",
        verify=settings.verify,
        public_key=public_key,
        stream_key=stream_key,
        timestamp_tolerance_s=settings.timestamp_tolerance_s,
        api_base_url=settings.api_base_url,
        api_key=secret(secrets, settings.api_key_secret),
        account_sid=settings.account_sid,
    )
