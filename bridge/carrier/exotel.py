"""Exotel's Voicebot applet (bidirectional AgentStream). Pure.

Sources:

* messages: https://developer.exotel.com/docs/agentstream/websocket-protocol (``connected``,
  ``start``, ``media``, ``dtmf``, ``mark``, ``stop`` from Exotel; ``media``, ``mark``, ``clear``
  to it; snake_case fields, numbers as strings; ``media_format`` ``{"encoding": "audio/x-raw",
  "sample_rate": "8000", "bit_rate": "16"}``);
* the applet: https://developer.exotel.com/docs/agentstream/stream-voicebot-applet: the URL is a
  ``wss://`` endpoint "or an HTTPS endpoint that dynamically returns the WSS URL"; Basic auth
  written into the URL (``wss://<API_KEY>:<API_TOKEN>@host/path``) is "transmitted as
  Authorization: Basic"; ``?sample-rate=8000|16000|24000``; "Up to 3 key-value pairs appended to
  the URL" (256 characters) arrive as ``start.custom_parameters``; audio is "raw/slin (16-bit,
  8kHz, mono PCM little-endian)"; outgoing chunks are multiples of 320 bytes, at most 100 KB;
* the dynamic URL's request: Exotel's applets fetch with ``CallSid``, ``CallFrom``/``From`` and
  ``CallTo``/``To`` query parameters
  (https://support.exotel.com/support/solutions/articles/3000096873-working-with-connect-applet-dynamic-url-).

``/exotel/answer`` is that dynamic URL: it answers ``{"url": "wss://..."}`` whose query carries
the sample rate and the custom parameters the ``start`` message does not already carry (the
profile; ``from``, ``to`` and the call id come in ``start``), and, when verification is on, the
Basic credentials in its user-info part.

Choices where the sources are silent:

* **Authenticating** ``/exotel/answer``: Exotel does not sign its requests. When verification is
  on, the answer endpoint requires the same Basic credentials as the stream (configure the applet
  URL as ``https://<key>:<token>@host/exotel/answer``): the answer contains them, so it must not
  be given to anyone else. This assumes Exotel sends an HTTPS URL's user-info as Basic auth, as it
  documents for the stream; where it does not, configure the applet with the static
  ``wss://<key>:<token>@host/exotel/media?profile=...`` URL instead.
* **Marks pending at a clear** are taken as echoed, as Twilio's protocol (which Exotel's follows
  field for field) does; ``marks_echoed_on_clear = false`` in the settings says otherwise.
* **The 3.2 KB minimum chunk** is not enforced: the writer sends whole 320-byte multiples as the
  model produces them and holds back only a remainder shorter than 320 bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlunsplit

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
    basic_credentials,
    dtmf,
    int_or_none,
    json_object,
    request_params,
    require,
    same_secret,
    secret,
    split_url,
    str_map,
    text,
    unknown_event,
)
from bridge.httpmsg import HttpRequest

CHUNK_MULTIPLE = 320
MAX_CHUNK = 100 * 1000
MAX_CUSTOM_PARAMETERS = 3
MAX_QUERY = 256
# What start carries itself: no need to spend the three custom parameters on them.
_IN_START = frozenset({"from", "to", "call_sid"})


class ExotelSettings(CarrierSettings):
    """``[carriers.exotel]``."""

    sample_rate: Literal[8000, 16000, 24000] = 8000
    api_key: str | None = None
    """The user name of the Basic credentials Exotel sends (the applet URL's ``<API_KEY>``)."""
    api_token_secret: str = "EXOTEL_API_TOKEN"
    """Name of the secret holding the password of those credentials (the URL's ``<API_TOKEN>``)."""
    marks_echoed_on_clear: bool = True

    def secret_names(self) -> tuple[str, ...]:
        return (self.api_token_secret,)


class ExotelWriter:
    """Frames to Exotel for one stream; templates built once per call."""

    __slots__ = ("_bytes_per_ms", "_clear", "_held", "_mark_head", "_media_head")

    def __init__(self, stream_sid: str, sample_rate: int = 8000) -> None:
        self._bytes_per_ms = sample_rate * 2 / 1000  # 16-bit samples
        sid = json.dumps(stream_sid)  # untrusted input: escape it once, here
        self._media_head = '{"event":"media","stream_sid":' + sid + ',"media":{"payload":"'
        self._mark_head = '{"event":"mark","stream_sid":' + sid + ',"mark":{"name":"'
        self._clear = '{"event":"clear","stream_sid":' + sid + "}"
        self._held = b""

    def media(self, payload_b64: str) -> str:
        """The chunk as one message (:meth:`media_frames` keeps to Exotel's size rule)."""
        return self._media_head + payload_b64 + '"}}'

    def media_frames(self, payload_b64: str) -> list[str]:
        """The chunk as messages of whole 320-byte multiples, each at most 100 KB; a remainder
        shorter than 320 bytes waits for the next chunk."""
        data = self._held + base64.b64decode(payload_b64)
        whole = len(data) - len(data) % CHUNK_MULTIPLE
        self._held = data[whole:]
        step = MAX_CHUNK - MAX_CHUNK % CHUNK_MULTIPLE
        return [
            self._media_head + base64.b64encode(data[i : min(i + step, whole)]).decode("ascii") + '"}}'
            for i in range(0, whole, step)
        ]

    def flush_frames(self) -> tuple[list[str], float]:
        """The held remainder padded with silence to 320 bytes, and the padding in ms."""
        held, self._held = self._held, b""
        if not held:
            return [], 0.0
        pad = CHUNK_MULTIPLE - len(held)
        frame = self._media_head + base64.b64encode(held + bytes(pad)).decode("ascii") + '"}}'
        return [frame], pad / self._bytes_per_ms

    def mark(self, name: str) -> str:
        # Mark names are generated by the bridge from [A-Za-z0-9] only.
        return self._mark_head + name + '"}}'

    def clear(self) -> str:
        self._held = b""
        return self._clear


class Exotel:
    """Exotel as a :class:`~bridge.carrier.base.Carrier`."""

    name = "exotel"

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        verify: bool = False,
        api_key: str | None = None,
        api_token: str | None = None,
        marks_echoed_on_clear: bool = True,
    ) -> None:
        if verify and not (api_key and api_token):
            raise ValueError("Exotel verification needs the API key and token")
        self._rate = sample_rate
        self._verify = verify
        self._user = api_key
        self._password = api_token
        self.marks_echoed_on_clear = marks_echoed_on_clear

    # --- the stream ------------------------------------------------------------------------

    def parse(self, message: str | bytes) -> CarrierEvent:
        msg = json_object(message)
        if isinstance(msg, CarrierError):
            return msg
        event = msg.get("event")
        if event == "media":  # ten a second: first
            media = msg.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                return CarrierError("missing_field", "media message without a string payload")
            assert isinstance(media, dict)
            track = media.get("track")  # only with the beta's track selection
            if track is not None and track != "inbound":
                return CarrierError("unexpected_track", f"media on track {str(track)[:20]!r} ignored")
            return Media(payload, int_or_none(media.get("timestamp")))
        if event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                return CarrierError("missing_field", "mark message without mark.name")
            return MarkEcho(name)
        if event == "start":
            return _start(msg)
        if event == "connected":
            return Connected("", "")
        if event == "dtmf":
            body = msg.get("dtmf")
            return dtmf(body.get("digit") if isinstance(body, dict) else None)
        if event == "stop":
            stop = msg.get("stop")
            call = text(stop.get("call_sid")) if isinstance(stop, dict) else ""
            return Stop(call or None)
        return unknown_event(event)

    def writer(self, start: Start) -> ExotelWriter:
        return ExotelWriter(start.stream_sid, start.sample_rate)

    # --- the dynamic URL ------------------------------------------------------------------

    def call_details(self, request: InboundRequest) -> CallDetails:
        params = request_params(request)
        return CallDetails(
            params.get("CallSid"),
            params.get("CallFrom") or params.get("From"),
            params.get("CallTo") or params.get("To"),
        )

    def answer(self, stream_url: str, parameters: Mapping[str, str]) -> Answer:
        """``{"url": "wss://[key:token@]host/exotel/media?sample-rate=N&profile=..."}``."""
        query: list[tuple[str, str]] = [("sample-rate", str(self._rate))]
        for key, value in parameters.items():
            if key in _IN_START or len(query) > MAX_CUSTOM_PARAMETERS:
                continue
            candidate = [*query, (key, value)]
            if len(urlencode(candidate)) <= MAX_QUERY:
                query = candidate
        parts = split_url(stream_url)
        if parts is None:  # built from a Host header nobody checked (e.g. an unbalanced "[")
            return Answer(b"cannot build the stream URL from this request's Host\n", "text/plain; charset=utf-8", 400)
        netloc = parts.netloc
        if self._verify and self._user and self._password:
            netloc = f"{quote(self._user, safe='')}:{quote(self._password, safe='')}@{netloc}"
        url = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))
        return Answer(json.dumps({"url": url}).encode(), "application/json")

    # --- authentication --------------------------------------------------------------------

    def verifies(self) -> bool:
        return self._verify

    def _basic(self, request: InboundRequest) -> bool:
        assert self._user is not None and self._password is not None
        credentials = basic_credentials(request.headers.get("authorization"))
        if credentials is None:
            return False
        user, password = credentials
        # Both compared in constant time, and both always compared.
        return same_secret(user, self._user) & same_secret(password, self._password)

    def verify_request(self, request: InboundRequest) -> bool:
        return not self._verify or self._basic(request)

    def verify_upgrade(self, request: InboundRequest) -> bool:
        return not self._verify or self._basic(request)

    # --- transfer -------------------------------------------------------------------------

    @property
    def can_transfer(self) -> bool:
        # Exotel documents no API that moves a live Voicebot call to another party.
        return False

    def transfer(self, call: CallIds, destination: str) -> HttpRequest:
        raise NotImplementedError("Exotel calls cannot be transferred (can_transfer is False)")


def _start(msg: dict[str, Any]) -> CarrierEvent:
    start = msg.get("start")
    if not isinstance(start, dict):
        return CarrierError("missing_field", "start message without a start object", fatal=True)
    stream_sid = text(start.get("stream_sid")) or text(msg.get("stream_sid"))
    if not stream_sid:
        return CarrierError("missing_field", "start message without stream_sid", fatal=True)
    fmt = start.get("media_format")
    fmt = fmt if isinstance(fmt, dict) else {}
    encoding = fmt.get("encoding", "audio/x-raw")
    rate = int_or_none(fmt.get("sample_rate", 8000))
    if not isinstance(encoding, str) or rate is None or rate <= 0:
        return CarrierError("invalid_format", f"unusable media_format {str(fmt)[:100]}", fatal=True)
    if encoding.lower() in ("audio/x-raw", "raw", "slin"):
        # Exotel's raw audio is 16-bit little-endian PCM ("raw/slin"); bit_rate says the width.
        bits = int_or_none(fmt.get("bit_rate", 16))
        if bits != 16:
            return CarrierError("invalid_format", f"raw audio of {fmt.get('bit_rate')!r} bits", fatal=True)
        encoding = "audio/x-l16"
    return Start(
        stream_sid=stream_sid,
        call_sid=text(start.get("call_sid")),
        account_sid=text(start.get("account_sid")),
        encoding=encoding,
        sample_rate=rate,
        channels=1,
        custom_parameters=str_map(start.get("custom_parameters")),
        tracks=("inbound",),
        from_number=text(start.get("from")) or None,
        to_number=text(start.get("to")) or None,
    )


def from_settings(settings: ExotelSettings, secrets: Mapping[str, str]) -> Exotel:
    token = secret(secrets, settings.api_token_secret)
    if settings.verify:
        require(settings.api_key, "carriers.exotel.verify: carriers.exotel.api_key", None)
        require(token, "carriers.exotel.verify: the Exotel API token", settings.api_token_secret)
    return Exotel(
        sample_rate=settings.sample_rate,
        verify=settings.verify,
        api_key=settings.api_key,
        api_token=token,
        marks_echoed_on_clear=settings.marks_echoed_on_clear,
    )
