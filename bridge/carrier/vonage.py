"""Vonage Voice API WebSockets, answered with an NCCO ``connect`` to a ``websocket`` endpoint. Pure.

Sources:

* the stream: https://developer.vonage.com/en/voice/voice-api/concepts/websockets: binary
  messages of 16-bit little-endian linear PCM (mono, 8, 16 or 24 kHz) both ways, text messages
  for events (``websocket:connected`` with the endpoint's ``headers`` as top-level fields,
  ``websocket:notify``, ``websocket:cleared``, ``websocket:dtmf``) and commands (``{"action":
  "notify", "payload": ...}``, ``{"action": "clear"}``); the tutorial
  https://developer.vonage.com/en/tutorials/play-audio-into-a-websocket/create-the-websocket/node
  writes audio in 20 ms messages ("Vonage will only buffer 3072 messages");
* the NCCO: https://developer.vonage.com/en/voice/voice-api/ncco-reference (``connect``) and the
  ``WebsocketEndpoint``/``WebsocketAuthorization`` types of Vonage/vonage-node-sdk
  (``packages/voice/lib/types/Endpoint``): ``"authorization": {"type": "vonage"}`` makes Vonage
  send "the same JWT used for signed webhooks in the Authorization header" of the upgrade;
* signed webhooks: https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks
  (a JWT, HS256 with the account's signature secret, in ``Authorization: Bearer``);
* transfer: https://developer.vonage.com/en/voice/voice-api/code-snippets/controlling-conversations/transfer-a-call
  (``PUT /v1/calls/{uuid}`` with ``{"action": "transfer", "destination": {"type": "ncco", ...}}``,
  authorized by an application JWT: RS256 with the application's private key).

Choices where the sources are silent:

* **Notifies pending at a clear** are taken as dropped, not echoed (``marks_echoed_on_clear =
  False``): the clear "discards queued audio" and the notify is queued behind it; implementations
  that use both report no echo. Should Vonage echo them after all, those late echoes are names the
  playback tracker no longer expects and are counted as stale, not as heard audio.
* **Frame size.** Outgoing audio is cut into 20 ms binary messages (:meth:`VonageWriter.media_frames`);
  a remainder shorter than 20 ms waits for the next chunk and is dropped by a clear.
* **Signed-webhook JWTs** are checked with the standard library, with the algorithm pinned to
  HS256 (the one Vonage uses): a JWT library would add a dependency and read the clock inside this
  pure module, and pinning the algorithm is the part of JWT checking that matters. The
  ``payload_hash`` claim is not compared: Vonage describes it as optional over TLS and hashes a
  re-serialised JSON of the parameters, which a server cannot reproduce reliably.
* **The call's uuid** does not travel on the stream, so the answer passes the webhook's ``uuid``
  as the ``call_sid`` header; transfers move that leg (the caller's).
* **The clock.** A transfer needs a freshly signed application JWT (``iat``/``exp``/``jti``): the
  only clock read of a dialect, through the ``clock`` passed in (``time.time`` by default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import Field, field_validator

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
)
from bridge.carrier.common import (
    CarrierSettings,
    bearer_token,
    dial_target,
    dtmf,
    json_body,
    json_object,
    request_params,
    require,
    secret,
    unknown_event,
)
from bridge.httpmsg import HttpRequest

Rate = Literal[8000, 16000, 24000]
# websocket:connected carries the endpoint's headers as top-level fields beside these.
_CONNECTED_FIELDS = frozenset({"event", "content-type"})


class VonageSettings(CarrierSettings):
    """``[carriers.vonage]``."""

    sample_rate: Rate = 16000
    """The endpoint's ``content-type``: ``audio/l16;rate=N``."""
    signature_secret: str = "VONAGE_SIGNATURE_SECRET"
    """Name of the secret holding the account's signature secret (signed webhooks, the upgrade)."""
    application_id: str | None = None
    """The Voice application's id: a signed JWT for another application is refused; needed for transfers."""
    private_key_secret: str = "VONAGE_PRIVATE_KEY"
    """Name of the secret holding the application's private key (PEM), for transfers."""
    api_base_url: str = "https://api.nexmo.com"
    timestamp_tolerance_s: float = Field(300.0, gt=0, le=3600)
    transfer_from: str | None = None
    """Caller id for transferred calls (one of your Vonage numbers); default: Vonage's choice."""

    @field_validator("api_base_url")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL such as https://api.nexmo.com")
        return v.rstrip("/")

    def secret_names(self) -> tuple[str, ...]:
        return (self.signature_secret, self.private_key_secret)


# --- JWTs ----------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not text or len(text) > 16384 or any(c in text for c in "+/="):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_hs256_claims(token: str, key: bytes) -> dict[str, Any] | None:
    """The claims of an HS256 JWT signed with ``key``; None for any other algorithm, a bad
    signature or a malformed token. Times are not checked here."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    head, body, sig = parts
    try:
        header = json.loads(_unb64url(head))
        claims = json.loads(_unb64url(body))
        given = _unb64url(sig)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return None
    expected = hmac.new(key, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
    return claims if hmac.compare_digest(given, expected) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# --- the dialect -----------------------------------------------------------------------------


class VonageWriter:
    """Frames to Vonage for one stream: audio as binary messages, commands as JSON text."""

    __slots__ = ("_frame_bytes", "_held")

    def __init__(self, sample_rate: int) -> None:
        self._frame_bytes = sample_rate // 50 * 2  # 20 ms of 16-bit samples
        self._held = b""

    def media(self, payload_b64: str) -> bytes:
        """The chunk as one binary message (:meth:`media_frames` is what Vonage wants)."""
        return base64.b64decode(payload_b64)

    def media_frames(self, payload_b64: str) -> list[bytes]:
        """The chunk in 20 ms binary messages; a shorter remainder waits for the next chunk."""
        data = self._held + base64.b64decode(payload_b64)
        size = self._frame_bytes
        whole = len(data) - len(data) % size
        self._held = data[whole:]
        return [data[i : i + size] for i in range(0, whole, size)]

    def flush_frames(self) -> tuple[list[bytes], float]:
        """The held remainder as one 20 ms frame padded with silence, and the padding in ms."""
        held, self._held = self._held, b""
        if not held:
            return [], 0.0
        pad = self._frame_bytes - len(held)
        return [held + bytes(pad)], pad / self._frame_bytes * 20.0

    def mark(self, name: str) -> str:
        # Mark names are generated by the bridge from [A-Za-z0-9] only.
        return '{"action":"notify","payload":{"name":"' + name + '"}}'

    def clear(self) -> str:
        self._held = b""
        return '{"action":"clear"}'


class Vonage:
    """Vonage as a :class:`~bridge.carrier.base.Carrier`."""

    name = "vonage"
    marks_echoed_on_clear = False  # see the module docstring

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        verify: bool = False,
        signature_secret: str | None = None,
        application_id: str | None = None,
        private_key: str | None = None,
        api_base_url: str = "https://api.nexmo.com",
        timestamp_tolerance_s: float = 300.0,
        transfer_from: str | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        if verify and not signature_secret:
            raise ValueError("Vonage signed-webhook checks need the signature secret")
        self._rate = sample_rate
        self._verify = verify
        self._secret = signature_secret.encode() if signature_secret else None
        self._application_id = application_id
        self._private_key = _load_private_key(private_key) if private_key else None
        self._api_base_url = api_base_url.rstrip("/")
        self._tolerance = timestamp_tolerance_s
        self._transfer_from = transfer_from
        self._clock = clock
        self._new_id = new_id

    # --- the stream ------------------------------------------------------------------------

    def parse(self, message: str | bytes) -> CarrierEvent:
        if isinstance(message, bytes):  # audio: 50 a second
            if not message or len(message) & 1:
                return CarrierError("invalid_payload", f"audio message of {len(message)} bytes is not whole samples")
            return Media(base64.b64encode(message).decode("ascii"))
        msg = json_object(message)
        if isinstance(msg, CarrierError):
            return msg
        event = msg.get("event")
        if event == "websocket:notify":
            payload = msg.get("payload")
            name = payload.get("name") if isinstance(payload, dict) else None
            if not isinstance(name, str):
                return CarrierError("missing_field", "websocket:notify without payload.name")
            return MarkEcho(name)
        if event == "websocket:cleared":
            return Cleared()
        if event == "websocket:connected":
            return self._connected(msg)
        if event == "websocket:dtmf":
            # Third-party clients read "digit" at the top level, others "dtmf.digit": take either.
            digit = msg.get("digit")
            body = msg.get("dtmf")
            if digit is None:
                digit = body.get("digit") if isinstance(body, dict) else body
            return dtmf(digit)
        return unknown_event(event)

    def _connected(self, msg: dict[str, Any]) -> CarrierEvent:
        content_type = msg.get("content-type", f"audio/l16;rate={self._rate}")
        if not isinstance(content_type, str):
            return CarrierError("invalid_format", "websocket:connected with a non-text content-type", fatal=True)
        rate = self._rate
        for param in content_type.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "rate":
                digits = value.strip()
                # isascii: "²" passes str.isdigit() but int() refuses it.
                rate = int(digits) if digits.isdigit() and digits.isascii() and len(digits) <= 6 else 0
        if rate <= 0:
            return CarrierError("invalid_format", f"unusable content-type {content_type[:60]!r}", fatal=True)
        params = {k: v for k, v in msg.items() if k not in _CONNECTED_FIELDS and isinstance(v, str)}
        call = params.get("call_sid", "")
        return Start(
            stream_sid=call,  # Vonage names no stream: the call's uuid stands for it
            call_sid=call,
            account_sid="",
            encoding=content_type,
            sample_rate=rate,
            channels=1,
            custom_parameters=params,
            tracks=("inbound",),
            from_number=params.get("from"),
            to_number=params.get("to"),
        )

    def writer(self, start: Start) -> VonageWriter:
        return VonageWriter(start.sample_rate)

    # --- the voice webhook ---------------------------------------------------------------

    def call_details(self, request: InboundRequest) -> CallDetails:
        # GET by default (query string); answer_method POST sends JSON.
        params: dict[str, Any] = {**request_params(request), **json_body(request)}
        fields = (params.get(k) for k in ("uuid", "from", "to"))
        call, caller, callee = (v if isinstance(v, str) and v else None for v in fields)
        return CallDetails(call, caller, callee)

    def answer(self, stream_url: str, parameters: Mapping[str, str]) -> Answer:
        endpoint: dict[str, Any] = {
            "type": "websocket",
            "uri": stream_url,
            "content-type": f"audio/l16;rate={self._rate}",
            "headers": {k: v for k, v in parameters.items() if k not in _CONNECTED_FIELDS},
        }
        if self._verify:
            endpoint["authorization"] = {"type": "vonage"}
        ncco = [{"action": "connect", "endpoint": [endpoint]}]
        return Answer(json.dumps(ncco).encode(), "application/json")

    # --- authentication --------------------------------------------------------------------

    def verifies(self) -> bool:
        return self._verify

    def _signed(self, request: InboundRequest) -> bool:
        assert self._secret is not None
        token = bearer_token(request.headers.get("authorization"))
        claims = jwt_hs256_claims(token, self._secret) if token else None
        if claims is None:
            return False
        application = claims.get("application_id")
        if self._application_id is not None and application is not None and application != self._application_id:
            return False  # signed by this account, but for another of its applications
        now = request.received_at
        if now is None:
            return True
        issued = _number(claims.get("iat"))
        expires = _number(claims.get("exp"))
        if issued is None or abs(now - issued) > self._tolerance:
            return False
        return expires is None or now <= expires + 5  # a few seconds of clock skew

    def verify_request(self, request: InboundRequest) -> bool:
        return not self._verify or self._signed(request)

    def verify_upgrade(self, request: InboundRequest) -> bool:
        return not self._verify or self._signed(request)

    # --- transfer -------------------------------------------------------------------------

    @property
    def can_transfer(self) -> bool:
        return self._private_key is not None and self._application_id is not None

    def _application_jwt(self) -> str:
        assert self._private_key is not None
        now = int(self._clock())
        header = _b64url(b'{"alg":"RS256","typ":"JWT"}')
        claims = {"application_id": self._application_id, "iat": now, "exp": now + 300, "jti": self._new_id()}
        signing_input = f"{header}.{_b64url(json.dumps(claims).encode())}"
        sig = self._private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"

    def transfer(self, call: CallIds, destination: str) -> HttpRequest:
        """Move the caller's leg to an NCCO that connects ``destination`` (the WebSocket leg is left)."""
        kind, target = dial_target(destination)
        endpoint = (
            {"type": "sip", "uri": target}
            if kind == "sip"
            else {"type": "app", "user": target}
            if kind == "client"
            else {"type": "phone", "number": target.removeprefix("+")}
        )
        connect: dict[str, Any] = {"action": "connect", "endpoint": [endpoint]}
        if self._transfer_from and kind == "number":
            connect["from"] = self._transfer_from.removeprefix("+")
        body = {"action": "transfer", "destination": {"type": "ncco", "ncco": [connect]}}
        headers = (("Authorization", f"Bearer {self._application_jwt()}"), ("Content-Type", "application/json"))
        url = f"{self._api_base_url}/v1/calls/{quote(call.call_sid, safe='')}"
        return HttpRequest("PUT", url, headers, json.dumps(body).encode(), timeout_s=10.0)


def _load_private_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("the Vonage private key is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the Vonage private key is not an RSA key")
    return key


def from_settings(settings: VonageSettings, secrets: Mapping[str, str]) -> Vonage:
    signature_secret = secret(secrets, settings.signature_secret)
    if settings.verify:
        require(signature_secret, "carriers.vonage.verify: the Vonage signature secret", settings.signature_secret)
    return Vonage(
        sample_rate=settings.sample_rate,
        verify=settings.verify,
        signature_secret=signature_secret,
        application_id=settings.application_id,
        private_key=secret(secrets, settings.private_key_secret),
        api_base_url=settings.api_base_url,
        timestamp_tolerance_s=settings.timestamp_tolerance_s,
        transfer_from=settings.transfer_from,
    )
