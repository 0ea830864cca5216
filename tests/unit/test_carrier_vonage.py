"""Vonage dialect: binary L16 audio, JSON events and commands, the NCCO, signed JWTs, transfers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import ValidationError

from bridge.carrier.base import (
    CallDetails,
    CallIds,
    CarrierError,
    Cleared,
    Dtmf,
    InboundRequest,
    MarkEcho,
    Media,
    Start,
    flush_frames,
    media_frames,
)
from bridge.carrier.vonage import Vonage, VonageSettings, VonageWriter, from_settings, jwt_hs256_claims

SECRET = "vonage-signature-secret"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
# Made with PyJWT 2.15 (jwt.encode(claims, SECRET, algorithm="HS256")): iat 1700000000, this application.
PYJWT_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3MDAwMDAwMDAsImp0aSI6ImMzYjFkMGEyLTExMTEtMjIyMi0zMzMzLTQ0NDQ1"
    "NTU1NjY2NiIsImlzcyI6IlZvbmFnZSIsInBheWxvYWRfaGFzaCI6ImQ2YzBlNzRiNjg1N2RmMjBjM2I2YTJlM2YwYzciLCJhcGlfa2V5Ijoi"
    "YWJjZDEyMzQiLCJhcHBsaWNhdGlvbl9pZCI6ImFhYWFhYWFhLWJiYmItY2NjYy1kZGRkLTAxMjM0NTY3ODlhYiJ9.iyGZvdbTh2NWoZomHdMTf"
    "tejaXiCGISmWQU03x2p0Lk"
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(claims: dict[str, Any], key: str = SECRET, header: dict[str, Any] | None = None) -> str:
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _j(obj: Any) -> str:
    return json.dumps(obj)


CONNECTED = {
    "event": "websocket:connected",
    "content-type": "audio/l16;rate=16000",
    "profile": "sales",
    "from": "447700900000",
    "to": "447700900001",
    "call_sid": "63f61863-4a51-4f6b-86e1-46edebcf9356",
}


# --- messages from Vonage ------------------------------------------------------------------------


def test_connected_opens_the_stream_with_the_ncco_headers() -> None:
    ev = Vonage().parse(_j(CONNECTED))
    assert ev == Start(
        stream_sid="63f61863-4a51-4f6b-86e1-46edebcf9356",
        call_sid="63f61863-4a51-4f6b-86e1-46edebcf9356",
        account_sid="",
        encoding="audio/l16;rate=16000",
        sample_rate=16000,
        channels=1,
        custom_parameters={
            "profile": "sales",
            "from": "447700900000",
            "to": "447700900001",
            "call_sid": "63f61863-4a51-4f6b-86e1-46edebcf9356",
        },
        tracks=("inbound",),
        from_number="447700900000",
        to_number="447700900001",
    )


def test_connected_at_24k_and_without_headers() -> None:
    ev = Vonage().parse(_j({"event": "websocket:connected", "content-type": "audio/l16;rate=24000", "n": 5}))
    assert isinstance(ev, Start)
    assert (ev.sample_rate, ev.custom_parameters, ev.call_sid) == (24000, {}, "")


@pytest.mark.parametrize("content_type", ["audio/l16;rate=fast", "audio/l16;rate=0", 16000])
def test_connected_with_an_unusable_content_type_is_fatal(content_type: Any) -> None:
    ev = Vonage().parse(_j({"event": "websocket:connected", "content-type": content_type}))
    assert isinstance(ev, CarrierError) and ev.fatal and ev.kind == "invalid_format"


def test_binary_audio_becomes_base64_media() -> None:
    frame = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms at 16 kHz
    ev = Vonage().parse(frame)
    assert isinstance(ev, Media) and base64.b64decode(ev.payload) == frame


@pytest.mark.parametrize("frame", [b"", b"\x01\x02\x03"])
def test_binary_that_is_not_whole_samples(frame: bytes) -> None:
    ev = Vonage().parse(frame)
    assert isinstance(ev, CarrierError) and ev.kind == "invalid_payload" and not ev.fatal


def test_notify_cleared_dtmf() -> None:
    carrier = Vonage()
    assert carrier.parse(_j({"event": "websocket:notify", "payload": {"name": "g0m4"}})) == MarkEcho("g0m4")
    assert carrier.parse(_j({"event": "websocket:cleared"})) == Cleared()
    assert carrier.parse(_j({"event": "websocket:dtmf", "digit": "5", "duration": 260})) == Dtmf("5")
    assert carrier.parse(_j({"event": "websocket:dtmf", "dtmf": {"digit": "#"}})) == Dtmf("#")
    assert carrier.parse(_j({"event": "websocket:dtmf", "dtmf": "7"})) == Dtmf("7")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("{", "invalid_json"),
        ('{"event": "websocket:notify", "payload": "x"}', "missing_field"),
        ('{"event": "websocket:dtmf"}', "invalid_dtmf"),
        ('{"event": "websocket:hangup"}', "unknown_event"),
        ('{"action": "clear"}', "missing_field"),
    ],
)
def test_junk(text: str, kind: str) -> None:
    ev = Vonage().parse(text)
    assert isinstance(ev, CarrierError) and ev.kind == kind and not ev.fatal


# --- frames to Vonage -------------------------------------------------------------------------


def test_writer_commands_and_single_frame_media() -> None:
    writer = VonageWriter(16000)
    assert json.loads(writer.mark("g0m1")) == {"action": "notify", "payload": {"name": "g0m1"}}
    assert json.loads(writer.clear()) == {"action": "clear"}
    assert writer.media(base64.b64encode(b"\x01\x02").decode()) == b"\x01\x02"


def test_media_frames_are_20ms_and_hold_the_remainder() -> None:
    writer = VonageWriter(16000)  # 640 bytes per 20 ms
    audio = bytes(range(200)) * 10  # 2000 bytes
    first = media_frames(writer, base64.b64encode(audio[:1500]).decode())
    assert [len(f) for f in first] == [640, 640]  # 220 bytes held
    second = media_frames(writer, base64.b64encode(audio[1500:]).decode())
    assert [len(f) for f in second] == [640]  # 220 + 500 = 720: one frame, 80 held
    assert b"".join(bytes(f) for f in (*first, *second)) == audio[:1920]
    writer.clear()  # drops the 80 held bytes: they must not play after a barge-in
    assert media_frames(writer, base64.b64encode(bytes(640)).decode()) == [bytes(640)]


def test_flush_pads_the_held_remainder_to_a_whole_frame() -> None:
    writer = VonageWriter(16000)
    audio = bytes(range(1, 201)) * 4  # 800 bytes: one frame sent, 160 held
    assert [len(f) for f in media_frames(writer, base64.b64encode(audio).decode())] == [640]
    frames, padding_ms = flush_frames(writer)
    assert frames == [audio[640:] + bytes(480)] and padding_ms == 15.0
    assert flush_frames(writer) == ([], 0.0)  # nothing held any more
    media_frames(writer, base64.b64encode(audio[:100]).decode())
    writer.clear()
    assert flush_frames(writer) == ([], 0.0)  # a clear dropped the remainder: nothing to flush


@pytest.mark.parametrize(("rate", "size"), [(8000, 320), (16000, 640), (24000, 960)])
def test_frame_size_follows_the_rate(rate: int, size: int) -> None:
    assert [len(f) for f in VonageWriter(rate).media_frames(base64.b64encode(bytes(size * 3)).decode())] == [size] * 3


# --- the NCCO ---------------------------------------------------------------------------------


def test_answer_is_a_connect_to_a_websocket() -> None:
    params = {"profile": "sales", "from": "447700900000", "to": "447700900001", "call_sid": "uuid-1", "event": "x"}
    answer = Vonage(verify=True, signature_secret=SECRET).answer("wss://bridge.example/vonage/media", params)
    assert answer.content_type == "application/json"
    ncco = json.loads(answer.body)
    assert ncco == [
        {
            "action": "connect",
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": "wss://bridge.example/vonage/media",
                    "content-type": "audio/l16;rate=16000",
                    # "event" would collide with websocket:connected's own field: left out.
                    "headers": {"profile": "sales", "from": "447700900000", "to": "447700900001", "call_sid": "uuid-1"},
                    "authorization": {"type": "vonage"},
                }
            ],
        }
    ]
    unverified = json.loads(Vonage(sample_rate=8000).answer("wss://h/vonage/media", {}).body)
    assert "authorization" not in unverified[0]["endpoint"][0]
    assert unverified[0]["endpoint"][0]["content-type"] == "audio/l16;rate=8000"


def test_call_details_from_get_query_or_post_json() -> None:
    query = "to=447700900001&from=447700900000&uuid=u1&conversation_uuid=c"
    get = InboundRequest("GET", f"https://h/vonage/answer?{query}", {})
    assert Vonage().call_details(get) == CallDetails("u1", "447700900000", "447700900001")
    body = json.dumps({"to": "447700900001", "from": "447700900000", "uuid": "u2"}).encode()
    post = InboundRequest("POST", "https://h/vonage/answer", {"content-type": "application/json"}, body)
    assert Vonage().call_details(post) == CallDetails("u2", "447700900000", "447700900001")
    assert Vonage().call_details(InboundRequest("POST", "https://h/vonage/answer", {}, b"[1]")) == CallDetails(
        None, None, None
    )


# --- signed webhooks and the upgrade --------------------------------------------------------------


def test_jwt_checked_against_a_pyjwt_vector() -> None:
    claims = jwt_hs256_claims(PYJWT_TOKEN, SECRET.encode())
    assert claims is not None and claims["application_id"] == APP_ID and claims["iat"] == 1700000000
    assert jwt_hs256_claims(PYJWT_TOKEN, b"another secret") is None


def _req(token: str | None, received_at: float | None = None, url: str = "https://h/vonage/answer") -> InboundRequest:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return InboundRequest("GET", url, headers, received_at=received_at)


def _carrier(**kw: Any) -> Vonage:
    return Vonage(verify=True, signature_secret=SECRET, **kw)


def test_signed_request_and_upgrade_are_accepted() -> None:
    carrier = _carrier(application_id=APP_ID)
    assert carrier.verify_request(_req(PYJWT_TOKEN))
    assert carrier.verify_request(_req(PYJWT_TOKEN, received_at=1700000100.0))
    assert carrier.verify_upgrade(_req(PYJWT_TOKEN, url="wss://h/vonage/media"))


@pytest.mark.parametrize(
    ("token", "received_at"),
    [
        (None, None),  # unsigned
        ("not.a.jwt", None),
        (PYJWT_TOKEN[:-2] + "xx", None),  # signature changed
        (_hs256({"iat": 1700000000}, key="another secret"), None),
        (_hs256({"iat": 1700000000}, header={"alg": "none"}), None),  # algorithm swap
        (_hs256({"iat": 1700000000}, header={"alg": "HS512"}), None),
        (_hs256({"iat": 1700000000, "application_id": "another app"}), None),
        (PYJWT_TOKEN, 1700000000.0 + 301),  # replayed six minutes later
        (_hs256({"jti": "no iat"}), 1700000000.0),  # no iat to check freshness against
        (_hs256({"iat": 1700000000, "exp": 1700000010}), 1700000100.0),  # expired
        (_hs256({"iat": "1700000000"}), 1700000000.0),  # iat not a number
        (_hs256({"iat": 1}).replace(".", "+.", 1), None),  # not base64url
    ],
)
def test_forged_missing_or_stale_jwt_is_refused(token: str | None, received_at: float | None) -> None:
    carrier = _carrier(application_id=APP_ID)
    assert not carrier.verify_request(_req(token, received_at))
    assert not carrier.verify_upgrade(_req(token, received_at, url="wss://h/vonage/media"))


def test_verification_off() -> None:
    assert Vonage().verify_request(_req(None)) and Vonage().verify_upgrade(_req(None))
    assert not Vonage().verifies() and _carrier().verifies()


# --- transfer --------------------------------------------------------------------------------

PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = PRIVATE.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_transfer_is_a_put_with_an_ncco_and_an_application_jwt() -> None:
    carrier = Vonage(
        application_id=APP_ID,
        private_key=PEM,
        transfer_from="+447700900009",
        clock=lambda: 1700000000.5,
        new_id=lambda: "j1",
    )
    assert carrier.can_transfer and not Vonage(application_id=APP_ID).can_transfer
    request = carrier.transfer(CallIds("uuid-1", "uuid-1", ""), "+447700900123")
    assert (request.method, request.url) == ("PUT", "https://api.nexmo.com/v1/calls/uuid-1")
    assert json.loads(request.body) == {
        "action": "transfer",
        "destination": {
            "type": "ncco",
            "ncco": [
                {"action": "connect", "endpoint": [{"type": "phone", "number": "447700900123"}], "from": "447700900009"}
            ],
        },
    }
    headers = dict(request.headers)
    token = headers["Authorization"].removeprefix("Bearer ")
    head, body, sig = token.split(".")
    assert json.loads(_unb64(head)) == {"alg": "RS256", "typ": "JWT"}
    assert json.loads(_unb64(body)) == {"application_id": APP_ID, "iat": 1700000000, "exp": 1700000300, "jti": "j1"}
    # Signed with the application's key (raises if not).
    PRIVATE.public_key().verify(_unb64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_transfer_to_sip_and_app_endpoints() -> None:
    carrier = Vonage(application_id=APP_ID, private_key=PEM)
    sip = json.loads(carrier.transfer(CallIds("u", "u", ""), "sip:desk@pbx.example").body)
    assert sip["destination"]["ncco"][0]["endpoint"] == [{"type": "sip", "uri": "sip:desk@pbx.example"}]
    assert "from" not in sip["destination"]["ncco"][0]
    app = json.loads(carrier.transfer(CallIds("u", "u", ""), "client:alice").body)
    assert app["destination"]["ncco"][0]["endpoint"] == [{"type": "app", "user": "alice"}]


# --- settings ---------------------------------------------------------------------------------


def test_settings_and_factory() -> None:
    secrets = {"VONAGE_SIGNATURE_SECRET": SECRET, "VONAGE_PRIVATE_KEY": PEM}
    carrier = from_settings(VonageSettings(application_id=APP_ID, sample_rate=24000), secrets)
    assert carrier.verifies() and carrier.can_transfer and not carrier.marks_echoed_on_clear
    with pytest.raises(ValueError, match="VONAGE_SIGNATURE_SECRET"):
        from_settings(VonageSettings(), {})
    with pytest.raises(ValueError, match="private key"):
        from_settings(VonageSettings(verify=False), {"VONAGE_PRIVATE_KEY": "not a pem"})
    with pytest.raises(ValidationError):
        VonageSettings.model_validate({"sample_rate": 44100})
