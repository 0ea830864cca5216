"""Plivo audio streams, answered with Plivo XML ``<Stream bidirectional="true">``. Pure.

Sources:

* messages: https://www.plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference
  (``start``, ``media``, ``dtmf``, ``playedStream``, ``clearedAudio`` from Plivo; ``playAudio``,
  ``checkpoint``, ``clearAudio`` to it), and plivo/plivo-stream-sdk-python ``plivo_stream/types.py``;
* the answer document: https://docs.plivo.com/docs/voice/xml/audiostream (``bidirectional``,
  ``keepCallAlive``, ``contentType``, ``extraHeaders``);
* signatures: https://docs.plivo.com/docs/voice/xml/request/validation (``X-Plivo-Signature-V3``
  and its nonce), computed as plivo/plivo-python ``plivo/utils/signature_v3.py`` does; the
  WebSocket upgrade is signed too ("Plivo signs WebSocket connection requests",
  https://www.plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-guide);
* transfer: the Call API's "Transfer a call" (``POST /v1/Account/{auth_id}/Call/{call_uuid}/``
  with ``legs=aleg`` and ``aleg_url``), as plivo/plivo-python ``plivo/resources/calls.py`` sends
  it; parameters: https://www.rubydoc.info/gems/plivo/4.1.3/Plivo/Resources/CallInterface:update.

Semantics that differ from Twilio's: a ``checkpoint`` is answered (``playedStream``) "only ... if
the preceding events were played successfully", so checkpoints pending at a ``clearAudio`` are
never echoed, and Plivo acknowledges the clear itself with ``clearedAudio``.

Choices where the sources are silent or disagree:

* **Custom parameters.** ``extraHeaders`` allows "Only characters [A-Z], [a-z], [0-9]" and 512
  bytes, and its separator is ``,`` in one example and ``;`` in the ``start`` example. The answer
  therefore packs all parameters into one ``bridge=<base32 of a query string>`` pair, which is
  alphanumeric, and :meth:`Plivo.parse` accepts either separator (and a JSON object, as the
  stream SDK's type hints suggest). ``call_sid`` is left out: ``start`` carries the call id.
* **Upgrade URL.** The Python stream SDK checks the upgrade's signature against
  ``http://<host><path>/websocket``, the Node SDK against ``https://<host><path>``; both (and
  the ``wss://`` URL itself) are accepted.
* **The checkpoint echo** is named ``playedStream`` in the reference and ``played`` in Plivo's
  support FAQ; both are read.
* **L16 byte order** is not stated; little-endian by default (the stream is raw PCM, not RTP),
  ``carriers.plivo.l16_byte_order = "big"`` swaps it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit
from xml.etree import ElementTree

from pydantic import field_validator

from bridge.carrier.base import (
    Answer,
    CallDetails,
    CallIds,
    CarrierError,
    CarrierEvent,
    Cleared,
    InboundRequest,
    MarkEcho,
    Media,
    Start,
    Stop,
)
from bridge.carrier.common import (
    CarrierSettings,
    basic_authorization,
    dial_target,
    dtmf,
    int_or_none,
    json_object,
    request_params,
    require,
    secret,
    split_url,
    swap16,
    swap16_b64,
    text,
    unknown_event,
    with_scheme,
)
from bridge.httpmsg import HttpRequest

ContentType = Literal["audio/x-mulaw;rate=8000", "audio/x-l16;rate=8000", "audio/x-l16;rate=16000"]
PARAMS_HEADER = "bridge"
MAX_EXTRA_HEADERS = 512


class PlivoSettings(CarrierSettings):
    """``[carriers.plivo]``."""

    content_type: ContentType = "audio/x-mulaw;rate=8000"
    l16_byte_order: Literal["little", "big"] = "little"
    auth_token_secret: str = "PLIVO_AUTH_TOKEN"
    """Name of the secret holding the (sub)account's Auth Token: signatures and transfers."""
    auth_id: str | None = None
    """The Auth ID, for transfers."""
    api_base_url: str = "https://api.plivo.com"
    transfer_xml_url: str | None = None
    """A URL answering Plivo XML that dials the number in its ``to`` query parameter (see
    :func:`dial_xml`); Plivo's transfer API moves a call to a URL, not to inline XML."""

    @field_validator("api_base_url", "transfer_xml_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/") if v else v

    def secret_names(self) -> tuple[str, ...]:
        return (self.auth_token_secret,)


# --- X-Plivo-Signature-V3 ------------------------------------------------------------------------


def _sorted_query(params: Mapping[str, list[str]]) -> str:
    return "&".join(f"{key}={value}" for key in sorted(params) for value in sorted(params[key]))


def _sorted_body(params: Mapping[str, list[str]]) -> str:
    return "".join(f"{key}{value}" for key in sorted(params) for value in sorted(params[key]))


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for key, value in pairs:
        out[key].append(value)
    return out


def signed_url(method: str, url: str, form: Iterable[tuple[str, str]] = ()) -> str:
    """The string Plivo signs (before ``.{nonce}``): the URL with its query sorted, then for a
    POST the sorted form fields as ``name+value`` (plivo-python's ``construct_get_url`` and
    ``construct_post_url``)."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = _sorted_query(_grouped(parse_qsl(parts.query, keep_blank_values=True)))
    if method.upper() != "POST":
        return base + ("?" + query if query else "")
    body = _grouped(form)
    if query or body:
        base += "?" + query
    if query and body:
        base += "."
    return base + _sorted_body(body)


def signature(auth_token: str, method: str, url: str, nonce: str, form: Iterable[tuple[str, str]] = ()) -> str:
    message = f"{signed_url(method, url, form)}.{nonce}".encode()
    return base64.b64encode(hmac.new(auth_token.encode(), message, hashlib.sha256).digest()).decode("ascii")


def signature_valid(
    auth_token: str,
    method: str,
    urls: Iterable[str],
    nonce: str | None,
    header: str | None,
    form: Iterable[tuple[str, str]] = (),
) -> bool:
    """``header`` (one signature, or several separated by commas) signs one of ``urls``."""
    if not nonce or not header:
        return False
    given = [s.strip().encode() for s in header.split(",") if s.strip()]
    pairs = list(form)
    for url in urls:
        expected = signature(auth_token, method, url, nonce, pairs).encode()
        if any(hmac.compare_digest(expected, s) for s in given):
            return True
    return False


# --- custom parameters in extraHeaders -------------------------------------------------------------


def pack_parameters(parameters: Mapping[str, str]) -> str:
    """``bridge=<base32>`` carrying ``parameters`` within Plivo's 512 alphanumeric bytes; the
    parameters that do not fit are left out, the last first."""
    items = [(k, v) for k, v in parameters.items() if k != "call_sid"]
    while items:
        packed = base64.b32encode(urlencode(items).encode()).decode("ascii").rstrip("=")
        if len(PARAMS_HEADER) + 1 + len(packed) <= MAX_EXTRA_HEADERS:
            return f"{PARAMS_HEADER}={packed}"
        items.pop()
    return ""


def unpack_parameters(extra_headers: Any) -> dict[str, str]:
    """The parameters :func:`pack_parameters` packed, from a ``start`` message's ``extra_headers``."""
    pairs: dict[str, str] = {}
    if isinstance(extra_headers, dict):
        pairs = {str(k): str(v) for k, v in extra_headers.items()}
    elif isinstance(extra_headers, str) and len(extra_headers) <= 4 * MAX_EXTRA_HEADERS:
        loaded = json_object(extra_headers) if extra_headers.lstrip().startswith("{") else None
        if isinstance(loaded, dict):
            pairs = {str(k): str(v) for k, v in loaded.items()}
        else:
            for item in extra_headers.replace(";", ",").split(","):
                key, eq, value = item.partition("=")
                if eq:
                    pairs[key.strip()] = value.strip()
    packed = next((v for k, v in pairs.items() if k.lower().removeprefix("x-ph-") == PARAMS_HEADER), None)
    if not packed:
        return {}
    try:
        raw = base64.b32decode(packed.upper() + "=" * (-len(packed) % 8)).decode("utf-8")
    except (binascii.Error, ValueError):
        return {}
    return dict(parse_qsl(raw, keep_blank_values=True))


# --- the transfer target ---------------------------------------------------------------------------


def dial_xml(destination: str) -> str:
    """Plivo XML that dials ``destination``: what a ``transfer_xml_url`` should answer.

    https://www.plivo.com/docs/voice/xml/dial: ``<Number>`` for a number, ``<User>`` for a SIP URI.
    """
    kind, target = dial_target(destination)
    root = ElementTree.Element("Response")
    noun = "Number" if kind == "number" else "User"
    ElementTree.SubElement(ElementTree.SubElement(root, "Dial"), noun).text = target
    return ElementTree.tostring(root, encoding="unicode")


# --- the dialect ---------------------------------------------------------------------------------------


class PlivoWriter:
    """Frames to Plivo for one stream; templates built once per call."""

    __slots__ = ("_checkpoint_head", "_clear", "_media_head", "_swap")

    def __init__(self, stream_id: str, content_type: str, sample_rate: int, swap: bool) -> None:
        sid = json.dumps(stream_id)  # untrusted input: escape it once, here
        fmt = json.dumps(content_type)
        self._media_head = (
            '{"event":"playAudio","media":{"contentType":' + fmt + f',"sampleRate":{sample_rate},"payload":"'
        )
        self._checkpoint_head = '{"event":"checkpoint","streamId":' + sid + ',"name":"'
        self._clear = '{"event":"clearAudio","streamId":' + sid + "}"
        self._swap = swap

    def media(self, payload_b64: str) -> str:
        if self._swap:
            payload_b64 = base64.b64encode(swap16(base64.b64decode(payload_b64))).decode("ascii")
        return self._media_head + payload_b64 + '"}}'

    def mark(self, name: str) -> str:
        # Mark names are generated by the bridge from [A-Za-z0-9] only.
        return self._checkpoint_head + name + '"}'

    def clear(self) -> str:
        return self._clear


class Plivo:
    """Plivo as a :class:`~bridge.carrier.base.Carrier`."""

    name = "plivo"
    # Checkpoints pending at a clearAudio are dropped, not echoed (see the module docstring).
    marks_echoed_on_clear = False

    def __init__(
        self,
        *,
        content_type: ContentType = "audio/x-mulaw;rate=8000",
        l16_big_endian: bool = False,
        verify: bool = False,
        auth_token: str | None = None,
        auth_id: str | None = None,
        api_base_url: str = "https://api.plivo.com",
        transfer_xml_url: str | None = None,
    ) -> None:
        if verify and not auth_token:
            raise ValueError("Plivo signature checks need the auth token")
        self._content_type = content_type
        self._l16 = "l16" in content_type
        self._swap = self._l16 and l16_big_endian
        self._verify = verify
        self._token = auth_token
        self._auth_id = auth_id
        self._api_base_url = api_base_url.rstrip("/")
        self._transfer_xml_url = transfer_xml_url

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
            if track is not None and track != "inbound":
                return CarrierError("unexpected_track", f"media on track {str(track)[:20]!r} ignored")
            if self._swap:
                swapped = swap16_b64(payload)
                if swapped is None:
                    return CarrierError("invalid_payload", "L16 payload is not base64 of whole samples")
                payload = swapped
            # media.timestamp is Unix milliseconds in the reference, stream milliseconds in the SDK.
            return Media(payload, int_or_none(media.get("timestamp")))
        if event in ("playedStream", "played"):
            name = msg.get("name")
            if not isinstance(name, str):
                return CarrierError("missing_field", f"{event} message without a name")
            return MarkEcho(name)
        if event == "clearedAudio":
            return Cleared()
        if event == "start":
            return self._start(msg)
        if event == "dtmf":
            body = msg.get("dtmf")
            return dtmf(body.get("digit") if isinstance(body, dict) else None)
        if event == "stop":  # not in the reference (the socket closes), read if it comes
            return Stop(None)
        return unknown_event(event)

    def _start(self, msg: dict[str, Any]) -> CarrierEvent:
        start = msg.get("start")
        if not isinstance(start, dict):
            return CarrierError("missing_field", "start message without a start object", fatal=True)
        stream_id = text(start.get("streamId")) or text(msg.get("streamId"))
        if not stream_id:
            return CarrierError("missing_field", "start message without streamId", fatal=True)
        fmt = start.get("mediaFormat")
        fmt = fmt if isinstance(fmt, dict) else {}
        encoding = fmt.get("encoding", "audio/x-mulaw")
        rate = int_or_none(fmt.get("sampleRate", 8000))
        if not isinstance(encoding, str) or rate is None or rate <= 0:
            return CarrierError("invalid_format", f"unusable mediaFormat {str(fmt)[:100]}", fatal=True)
        if ("l16" in encoding.lower()) != self._l16:
            reason = f"Plivo streams {encoding}, the bridge asked for {self._content_type}"
            return CarrierError("format_mismatch", reason, fatal=True)
        params = unpack_parameters(msg.get("extra_headers"))
        tracks = start.get("tracks")
        return Start(
            stream_sid=stream_id,
            call_sid=text(start.get("callId")),
            account_sid=text(start.get("accountId")),
            encoding=encoding,
            sample_rate=rate,
            channels=1,  # Plivo streams mono and does not say so
            custom_parameters=params,
            tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else ("inbound",),
            from_number=params.get("from"),
            to_number=params.get("to"),
        )

    def writer(self, start: Start) -> PlivoWriter:
        content_type = "audio/x-l16" if self._l16 else "audio/x-mulaw"
        return PlivoWriter(start.stream_sid, content_type, start.sample_rate, self._swap)

    # --- the voice webhook ---------------------------------------------------------------

    def call_details(self, request: InboundRequest) -> CallDetails:
        params = request_params(request)
        return CallDetails(params.get("CallUUID"), params.get("From"), params.get("To"))

    def answer(self, stream_url: str, parameters: Mapping[str, str]) -> Answer:
        attrs = {
            "bidirectional": "true",
            # Without it Plivo runs the next element at once (there is none: the call would end).
            "keepCallAlive": "true",
            "audioTrack": "inbound",
            "contentType": self._content_type,
        }
        extra = pack_parameters(parameters)
        if extra:
            attrs["extraHeaders"] = extra
        root = ElementTree.Element("Response")
        ElementTree.SubElement(root, "Stream", attrs).text = stream_url
        body = '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(root, encoding="unicode")
        return Answer(body.encode(), "text/xml; charset=utf-8")

    # --- authentication --------------------------------------------------------------------

    def verifies(self) -> bool:
        return self._verify

    def _signed(self, request: InboundRequest, urls: Iterable[str], form: Iterable[tuple[str, str]]) -> bool:
        assert self._token is not None
        nonce = request.headers.get("x-plivo-signature-v3-nonce")
        # X-Plivo-Signature-Ma-V3 is signed with the main account's token: a subaccount's bridge
        # configured with the main token checks that one.
        for header in ("x-plivo-signature-v3", "x-plivo-signature-ma-v3"):
            if signature_valid(self._token, request.method, urls, nonce, request.headers.get(header), form):
                return True
        return False

    def verify_request(self, request: InboundRequest) -> bool:
        if not self._verify:
            return True
        if split_url(request.url) is None:
            return False  # not a URL Plivo could have requested (and signed_url cannot split it)
        form = request.form if request.method.upper() == "POST" else ()
        return self._signed(request, [request.url], form)

    def verify_upgrade(self, request: InboundRequest) -> bool:
        if not self._verify:
            return True
        requested = split_url(request.url)
        if requested is None:
            return False  # not a URL Plivo could have requested
        urls = []
        for scheme in dict.fromkeys((requested.scheme, "https", "http", "wss")):
            base = with_scheme(request.url, scheme)
            parts = urlsplit(base)
            urls += [base, urlunsplit(parts._replace(path=parts.path + "/websocket"))]
        return self._signed(InboundRequest("GET", request.url, request.headers), urls, ())

    # --- transfer -------------------------------------------------------------------------

    @property
    def can_transfer(self) -> bool:
        return bool(self._token and self._auth_id and self._transfer_xml_url)

    def transfer(self, call: CallIds, destination: str) -> HttpRequest:
        """Move the caller's leg to the XML at ``transfer_xml_url?to=<destination>``."""
        assert self._transfer_xml_url is not None and self._auth_id is not None
        sep = "&" if "?" in self._transfer_xml_url else "?"
        body = json.dumps(
            {
                "legs": "aleg",
                "aleg_url": f"{self._transfer_xml_url}{sep}{urlencode({'to': destination})}",
                "aleg_method": "GET",
            }
        ).encode()
        path = f"/v1/Account/{quote(self._auth_id, safe='')}/Call/{quote(call.call_sid, safe='')}/"
        headers = (
            ("Authorization", basic_authorization(self._auth_id, self._token or "")),
            ("Content-Type", "application/json"),
        )
        return HttpRequest("POST", self._api_base_url + path, headers, body, timeout_s=10.0)


def from_settings(settings: PlivoSettings, secrets: Mapping[str, str]) -> Plivo:
    token = secret(secrets, settings.auth_token_secret)
    if settings.verify:
        require(token, "carriers.plivo.verify: the Plivo auth token", settings.auth_token_secret)
    return Plivo(
        content_type=settings.content_type,
        l16_big_endian=settings.l16_byte_order == "big",
        verify=settings.verify,
        auth_token=token,
        auth_id=settings.auth_id,
        api_base_url=settings.api_base_url,
        transfer_xml_url=settings.transfer_xml_url,
    )
