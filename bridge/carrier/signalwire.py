"""SignalWire's Compatibility API: cXML ``<Connect><Stream>`` and Twilio's stream messages. Pure.

Sources:

* the stream and the answer document: https://signalwire.com/docs/compatibility-api/cxml/reference/voice/stream
  (Twilio's ``connected``/``start``/``media``/``dtmf``/``mark``/``stop`` messages and ``media``/
  ``mark``/``clear`` commands; ``codec`` ``L16@16000h`` or ``L16@24000h``, ``start.mediaFormat``
  ``audio/x-L16``; "You'll also receive mark confirmations when the audio queue is cleared";
  ``authBearerToken`` is sent as the upgrade's ``Authorization: Bearer`` header; the URL "does
  not support query string parameters");
* request signatures: https://developer.signalwire.com/guides/webhook-security: every webhook is
  signed with the project's Signing Key, in ``X-SignalWire-Signature`` (and ``X-Twilio-Signature``
  for cXML): base64 HMAC-SHA1 of the URL plus the sorted form fields, as Twilio signs; a JSON body
  is signed as hex HMAC-SHA1 of the URL plus the raw body (signalwire/signalwire-typescript
  ``src/WebhookValidator.ts``);
* moving a live call: https://developer.signalwire.com/compatibility-api/client-sdks/methods/calls/update
  (``POST {space}/api/laml/2010-04-01/Accounts/{project}/Calls/{sid}.json``; the parameters
  documented take a ``Url`` of new cXML, not inline cXML).

Choices where the sources are silent:

* **The upgrade** is not documented as signed; the answer sets ``authBearerToken`` to a token the
  bridge makes with the Signing Key (:mod:`bridge.carrier.streamtoken`) and
  :meth:`SignalWire.verify_upgrade` checks it.
* **Wrapped messages.** The reference's examples show each event inside ``rawEvent`` with
  ``eventType``/``timestamp`` beside it, while its prose and Twilio-compatible clients use bare
  Twilio messages. Bare messages are read first; a message without ``event`` that has a
  ``rawEvent`` object is unwrapped. A ``clear`` event from SignalWire (its acknowledgement of a
  clear) is :class:`Cleared`.
* **L16 byte order** is not stated; little-endian by default, ``l16_byte_order = "big"`` swaps it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Literal
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

from pydantic import field_validator

from bridge.carrier import streamtoken, twilio
from bridge.carrier.base import (
    Answer,
    CallDetails,
    CallIds,
    CarrierError,
    CarrierEvent,
    Cleared,
    InboundRequest,
    Media,
    Start,
)
from bridge.carrier.common import (
    CarrierSettings,
    basic_authorization,
    bearer_token,
    json_object,
    port_variants,
    request_params,
    require,
    secret,
    swap16,
    swap16_b64,
)
from bridge.carrier.twilio import TwilioWriter
from bridge.httpmsg import HttpRequest

Codec = Literal["PCMU@8000h", "L16@16000h", "L16@24000h"]


class SignalWireSettings(CarrierSettings):
    """``[carriers.signalwire]``."""

    codec: Codec = "PCMU@8000h"
    l16_byte_order: Literal["little", "big"] = "little"
    signing_key_secret: str = "SIGNALWIRE_SIGNING_KEY"
    """Name of the secret holding the project's Signing Key (webhook signatures, stream tokens)."""
    space_url: str | None = None
    """``https://<space>.signalwire.com``, for transfers."""
    project_id: str | None = None
    api_token_secret: str = "SIGNALWIRE_API_TOKEN"
    """Name of the secret holding the API token, for transfers."""
    transfer_xml_url: str | None = None
    """A URL answering cXML that dials the number in its ``to`` query parameter (a ``<Dial>``, as
    :func:`bridge.carrier.twiml.dial` writes); SignalWire's call update takes a URL."""

    @field_validator("space_url", "transfer_xml_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL such as https://example.signalwire.com")
        return v.rstrip("/") if v else v

    def secret_names(self) -> tuple[str, ...]:
        return (self.signing_key_secret, self.api_token_secret)


# --- signatures ----------------------------------------------------------------------------------


def compat_signature(key: str, url: str, form: list[tuple[str, str]]) -> str:
    """Base64 HMAC-SHA1 of the URL and the form fields sorted by name (repeated names in order)."""
    payload = url + "".join(k + v for k, v in sorted(form, key=lambda kv: kv[0]))
    return base64.b64encode(hmac.new(key.encode(), payload.encode(), hashlib.sha1).digest()).decode("ascii")


def raw_body_signature(key: str, url: str, body: bytes) -> str:
    """Hex HMAC-SHA1 of the URL and the raw body (JSON webhooks)."""
    return hmac.new(key.encode(), url.encode() + body, hashlib.sha1).hexdigest()


def signature_valid(key: str, request: InboundRequest) -> bool:
    header = request.headers.get("x-signalwire-signature") or request.headers.get("x-twilio-signature")
    if not header:
        return False
    # Compared as bytes: hmac.compare_digest raises TypeError for a str with non-ASCII
    # characters, and a header may hold any (it is decoded as latin-1).
    given = header.encode("utf-8", "replace")
    form = list(request.form) if request.method.upper() == "POST" else []
    for url in port_variants(request.url):
        if hmac.compare_digest(compat_signature(key, url, form).encode(), given):
            return True
        if form and hmac.compare_digest(compat_signature(key, url, []).encode(), given):
            return True  # JSON on the compatibility surface is signed without parameters
    if not request.body:
        return False
    return hmac.compare_digest(raw_body_signature(key, request.url, request.body).encode(), given)


# --- the dialect ---------------------------------------------------------------------------------


class _SwappingWriter(TwilioWriter):
    """Twilio's frames, with L16 swapped to the carrier's byte order."""

    __slots__ = ()

    def media(self, payload_b64: str) -> str:
        return super().media(base64.b64encode(swap16(base64.b64decode(payload_b64))).decode("ascii"))


class SignalWire:
    """SignalWire as a :class:`~bridge.carrier.base.Carrier`."""

    name = "signalwire"
    marks_echoed_on_clear = True  # "mark confirmations when the audio queue is cleared"

    def __init__(
        self,
        *,
        codec: Codec = "PCMU@8000h",
        l16_big_endian: bool = False,
        verify: bool = False,
        signing_key: str | None = None,
        space_url: str | None = None,
        project_id: str | None = None,
        api_token: str | None = None,
        transfer_xml_url: str | None = None,
    ) -> None:
        if verify and not signing_key:
            raise ValueError("SignalWire signature checks need the signing key")
        self._codec = codec
        self._l16 = codec.startswith("L16")
        self._rate = int(codec.partition("@")[2].removesuffix("h"))
        self._swap = self._l16 and l16_big_endian
        self._verify = verify
        self._key = signing_key
        self._space_url = space_url.rstrip("/") if space_url else None
        self._project_id = project_id
        self._api_token = api_token
        self._transfer_xml_url = transfer_xml_url

    # --- the stream ------------------------------------------------------------------------

    def parse(self, message: str | bytes) -> CarrierEvent:
        ev = twilio.parse(message)
        kind = type(ev)
        if kind is Media:
            if self._swap:
                assert isinstance(ev, Media)
                swapped = swap16_b64(ev.payload)
                if swapped is None:
                    return CarrierError("invalid_payload", "L16 payload is not base64 of whole samples")
                return Media(swapped, ev.timestamp_ms)
            return ev
        if kind is Start:
            assert isinstance(ev, Start)
            return self._start(ev)
        if isinstance(ev, CarrierError) and ev.kind in ("unknown_event", "missing_field"):
            return self._rare(message, ev)
        return ev

    def _rare(self, message: str | bytes, error: CarrierError) -> CarrierEvent:
        msg = json_object(message)
        if isinstance(msg, CarrierError):
            return error
        event = msg.get("event")
        if event == "clear":
            return Cleared()
        raw = msg.get("rawEvent")
        if event is None and isinstance(raw, dict) and "rawEvent" not in raw:
            return self.parse(json.dumps(raw))
        return error

    def _start(self, ev: Start) -> CarrierEvent:
        l16 = "l16" in ev.encoding.lower()
        if l16 != self._l16 or (l16 and ev.sample_rate != self._rate):
            reason = f"SignalWire streams {ev.encoding} at {ev.sample_rate} Hz, the bridge asked for {self._codec}"
            return CarrierError("format_mismatch", reason, fatal=True)
        return ev

    def writer(self, start: Start) -> TwilioWriter:
        return _SwappingWriter(start.stream_sid) if self._swap else TwilioWriter(start.stream_sid)

    # --- the voice webhook ---------------------------------------------------------------

    def call_details(self, request: InboundRequest) -> CallDetails:
        params = request_params(request)
        return CallDetails(params.get("CallSid"), params.get("From"), params.get("To"))

    def answer(self, stream_url: str, parameters: Mapping[str, str]) -> Answer:
        attrs = {"url": stream_url}
        if self._codec != "PCMU@8000h":  # the default: left out
            attrs["codec"] = self._codec
        if self._key is not None:
            attrs["authBearerToken"] = streamtoken.issue(self._key.encode(), self.name, parameters.get("call_sid", ""))
        root = ElementTree.Element("Response")
        stream = ElementTree.SubElement(ElementTree.SubElement(root, "Connect"), "Stream", attrs)
        for key, value in parameters.items():
            ElementTree.SubElement(stream, "Parameter", {"name": key, "value": value})
        body = '<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(root, encoding="unicode")
        return Answer(body.encode(), "text/xml; charset=utf-8")

    # --- authentication --------------------------------------------------------------------

    def verifies(self) -> bool:
        return self._verify

    def verify_request(self, request: InboundRequest) -> bool:
        if not self._verify:
            return True
        assert self._key is not None
        return signature_valid(self._key, request)

    def verify_upgrade(self, request: InboundRequest) -> bool:
        if not self._verify:
            return True
        assert self._key is not None
        token = bearer_token(request.headers.get("authorization"))
        return streamtoken.check(self._key.encode(), self.name, token) is not None

    # --- transfer -------------------------------------------------------------------------

    @property
    def can_transfer(self) -> bool:
        return bool(self._space_url and self._project_id and self._api_token and self._transfer_xml_url)

    def transfer(self, call: CallIds, destination: str) -> HttpRequest:
        """Redirect the live call to the cXML at ``transfer_xml_url?to=<destination>``."""
        assert self._space_url and self._project_id and self._transfer_xml_url
        sep = "&" if "?" in self._transfer_xml_url else "?"
        url = f"{self._transfer_xml_url}{sep}{urlencode({'to': destination})}"
        body = urlencode({"Url": url, "Method": "GET"}).encode()
        path = (
            f"/api/laml/2010-04-01/Accounts/{quote(self._project_id, safe='')}"
            f"/Calls/{quote(call.call_sid, safe='')}.json"
        )
        headers = (
            ("Authorization", basic_authorization(self._project_id, self._api_token or "")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        )
        return HttpRequest("POST", self._space_url + path, headers, body, timeout_s=10.0)


def from_settings(settings: SignalWireSettings, secrets: Mapping[str, str]) -> SignalWire:
    key = secret(secrets, settings.signing_key_secret)
    if settings.verify:
        require(key, "carriers.signalwire.verify: the SignalWire signing key", settings.signing_key_secret)
    return SignalWire(
        codec=settings.codec,
        l16_big_endian=settings.l16_byte_order == "big",
        verify=settings.verify,
        signing_key=key,
        space_url=settings.space_url,
        project_id=settings.project_id,
        api_token=secret(secrets, settings.api_token_secret),
        transfer_xml_url=settings.transfer_xml_url,
    )
