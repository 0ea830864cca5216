"""Telnyx dialect: the documented stream messages, TeXML, Ed25519 webhook signatures, stream tokens."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import ValidationError

from bridge.carrier import streamtoken
from bridge.carrier.base import (
    CallDetails,
    CallIds,
    CarrierError,
    Connected,
    Dtmf,
    InboundRequest,
    MarkEcho,
    Media,
    Start,
    Stop,
)
from bridge.carrier.telnyx import Telnyx, TelnyxSettings, from_settings

STREAM_KEY = "stream-secret-for-tests"
SIGNING = Ed25519PrivateKey.generate()
PUBLIC_KEY = base64.b64encode(SIGNING.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
CALL_CONTROL_ID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
STREAM_ID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"


def _start(**fields: Any) -> dict[str, Any]:
    """The start frame of https://developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket."""
    start: dict[str, Any] = {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": CALL_CONTROL_ID,
        "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1", "TAG2"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    }
    start.update(fields)
    return {"event": "start", "sequence_number": "1", "stream_id": STREAM_ID, "start": start}


def _j(obj: Any) -> str:
    return json.dumps(obj)


def _verifying(**kw: Any) -> Telnyx:
    return Telnyx(verify=True, public_key=PUBLIC_KEY, stream_key=STREAM_KEY, **kw)


def _token(call_id: str = "v3:abc", key: str = STREAM_KEY) -> str:
    return streamtoken.issue(key.encode(), "telnyx", call_id)


# --- messages from Telnyx ---------------------------------------------------------------------


def test_connected() -> None:
    assert Telnyx().parse('{"event": "connected", "version": "1.0.0"}') == Connected("", "1.0.0")


def test_start_documented_example() -> None:
    ev = Telnyx().parse(_j(_start()))
    assert ev == Start(
        stream_sid=STREAM_ID,
        call_sid=CALL_CONTROL_ID,
        account_sid="3E6F995F-85F7-4705-9741-53B116D28237",
        encoding="PCMU",
        sample_rate=8000,
        channels=1,
        custom_parameters={"customer_id": "customer_123"},
        tracks=("inbound",),
        from_number="+13122010094",
        to_number="+13122123456",
    )


def test_start_prefers_the_texml_call_sid_parameter_and_takes_strings() -> None:
    msg = _start(
        custom_parameters={"call_sid": "v3:texml-sid", "profile": "sales"},
        media_format={"encoding": "PCMU", "sample_rate": "8000", "channels": "1"},
    )
    ev = Telnyx().parse(_j(msg))
    assert isinstance(ev, Start)
    assert ev.call_sid == "v3:texml-sid"
    assert ev.custom_parameters == {"call_sid": "v3:texml-sid", "profile": "sales"}


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ({"event": "start", "stream_id": STREAM_ID}, "missing_field"),
        ({"event": "start", "start": {"call_control_id": "x"}}, "missing_field"),
        (_start(media_format={"encoding": "PCMU", "sample_rate": "fast"}), "invalid_format"),
        (_start(media_format={"encoding": "PCMA", "sample_rate": 8000}), "format_mismatch"),
        (_start(media_format={"encoding": "L16", "sample_rate": 16000}), "format_mismatch"),
    ],
)
def test_unusable_start_is_fatal(message: dict[str, Any], kind: str) -> None:
    ev = Telnyx().parse(_j(message))
    assert isinstance(ev, CarrierError) and ev.fatal and ev.kind == kind, ev


def test_l16_start_must_have_the_configured_rate() -> None:
    carrier = Telnyx(codec="L16", sample_rate=16000)
    assert isinstance(carrier.parse(_j(_start(media_format={"encoding": "L16", "sample_rate": 16000}))), Start)
    ev = carrier.parse(_j(_start(media_format={"encoding": "L16", "sample_rate": 8000})))
    assert isinstance(ev, CarrierError) and ev.kind == "format_mismatch" and ev.fatal


def test_media_inbound() -> None:
    msg = {
        "event": "media",
        "sequence_number": "4",
        "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "no+JhoaJjpzAxg=="},
        "stream_id": STREAM_ID,
    }
    assert Telnyx().parse(_j(msg)) == Media("no+JhoaJjpzAxg==", 5)
    msg["media"]["track"] = "inbound_track"
    assert Telnyx().parse(_j(msg)) == Media("no+JhoaJjpzAxg==", 5)


def test_media_on_outbound_track_or_without_payload() -> None:
    ev = Telnyx().parse(_j({"event": "media", "media": {"track": "outbound", "payload": "AA=="}}))
    assert isinstance(ev, CarrierError) and ev.kind == "unexpected_track" and not ev.fatal
    ev = Telnyx().parse(_j({"event": "media", "media": {"payload": 5}}))
    assert isinstance(ev, CarrierError) and ev.kind == "missing_field"


def test_l16_is_big_endian_on_the_wire_and_little_endian_inside() -> None:
    carrier = Telnyx(codec="L16", sample_rate=16000)
    samples = (1, -2, 300, -32768)
    wire = base64.b64encode(struct.pack(">4h", *samples)).decode()
    ev = carrier.parse(_j({"event": "media", "media": {"track": "inbound", "payload": wire}}))
    assert isinstance(ev, Media)
    assert base64.b64decode(ev.payload) == struct.pack("<4h", *samples)
    start = carrier.parse(_j(_start(media_format={"encoding": "L16", "sample_rate": 16000})))
    assert isinstance(start, Start)
    frame = json.loads(carrier.writer(start).media(ev.payload))
    assert frame["media"]["payload"] == wire


def test_l16_little_endian_setting_passes_through() -> None:
    carrier = Telnyx(codec="L16", sample_rate=16000, l16_big_endian=False)
    wire = base64.b64encode(struct.pack("<2h", 1, 2)).decode()
    assert carrier.parse(_j({"event": "media", "media": {"payload": wire}})) == Media(wire)


def test_l16_payload_of_half_a_sample_is_refused() -> None:
    carrier = Telnyx(codec="L16", sample_rate=16000)
    ev = carrier.parse(_j({"event": "media", "media": {"payload": base64.b64encode(b"abc").decode()}}))
    assert isinstance(ev, CarrierError) and ev.kind == "invalid_payload" and not ev.fatal


def test_mark_dtmf_stop_error() -> None:
    carrier = Telnyx()
    assert carrier.parse(_j({"event": "mark", "stream_id": STREAM_ID, "mark": {"name": "g0m1"}})) == MarkEcho("g0m1")
    assert carrier.parse(_j({"event": "dtmf", "stream_id": STREAM_ID, "dtmf": {"digit": "1"}})) == Dtmf("1")
    stop = {"event": "stop", "stop": {"user_id": "u", "call_control_id": CALL_CONTROL_ID}, "stream_id": STREAM_ID}
    assert carrier.parse(_j(stop)) == Stop(CALL_CONTROL_ID)
    err = carrier.parse(_j({"event": "error", "payload": {"code": 100002, "title": "unknown_error", "detail": "x"}}))
    assert isinstance(err, CarrierError) and err.kind == "carrier_error" and "100002" in err.reason and not err.fatal


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("not json", "invalid_json"),
        ("[]", "invalid_json"),
        ('{"media": {}}', "missing_field"),
        ('{"event": "bogus"}', "unknown_event"),
        ('{"event": "mark", "mark": {}}', "missing_field"),
        ('{"event": "dtmf", "dtmf": {"digit": "xy"}}', "invalid_dtmf"),
    ],
)
def test_junk_is_an_error_not_an_exception(text: str, kind: str) -> None:
    ev = Telnyx().parse(text)
    assert isinstance(ev, CarrierError) and ev.kind == kind and not ev.fatal


# --- frames to Telnyx ---------------------------------------------------------------------------


def test_writer_frames() -> None:
    start = Telnyx().parse(_j(_start()))
    assert isinstance(start, Start)
    writer = Telnyx().writer(start)
    assert json.loads(writer.media("AAEC")) == {"event": "media", "media": {"payload": "AAEC"}}
    assert json.loads(writer.mark("g1m7")) == {"event": "mark", "mark": {"name": "g1m7"}}
    assert json.loads(writer.clear()) == {"event": "clear"}


# --- the TeXML answer --------------------------------------------------------------------------


def _stream(body: bytes) -> ElementTree.Element:
    root = ElementTree.fromstring(body)
    assert root.tag == "Response"
    stream = root.find("./Connect/Stream")
    assert stream is not None
    return stream


def test_answer_connects_a_bidirectional_rtp_stream_with_parameters() -> None:
    answer = Telnyx().answer("wss://bridge.example/telnyx/media", {"profile": 'a"<&>', "from": "+1555"})
    assert answer.content_type.startswith("text/xml") and answer.status == 200
    stream = _stream(answer.body)
    assert stream.attrib == {
        "url": "wss://bridge.example/telnyx/media",
        "track": "inbound_track",
        "codec": "PCMU",
        "bidirectionalMode": "rtp",
        "bidirectionalCodec": "PCMU",
    }
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"profile": 'a"<&>', "from": "+1555"}


def test_answer_l16_names_the_rate() -> None:
    stream = _stream(Telnyx(codec="L16", sample_rate=24000).answer("wss://h/telnyx/media", {}).body)
    assert (stream.get("codec"), stream.get("bidirectionalCodec"), stream.get("bidirectionalSamplingRate")) == (
        "L16",
        "L16",
        "24000",
    )


def test_answer_token_round_trips_through_start_and_is_not_a_custom_parameter() -> None:
    carrier = _verifying()
    stream = _stream(carrier.answer("wss://h/telnyx/media", {"call_sid": "v3:abc", "bridge_token": "spoof"}).body)
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["bridge_token"] != "spoof"  # a caller-supplied value never stands in for the token
    ev = carrier.parse(_j(_start(custom_parameters=params)))
    assert isinstance(ev, Start)
    assert ev.custom_parameters == {"call_sid": "v3:abc"}


@pytest.mark.parametrize(
    "params",
    [
        {},  # no token
        {"bridge_token": "b1.x.y"},  # forged
        {"bridge_token": _token(key="another secret")},  # made with another key
        {"bridge_token": streamtoken.issue(STREAM_KEY.encode(), "signalwire", "v3:abc")},  # another carrier's
    ],
)
def test_start_without_a_valid_token_is_refused(params: dict[str, str]) -> None:
    ev = _verifying().parse(_j(_start(custom_parameters=params)))
    assert isinstance(ev, CarrierError) and ev.kind == "unauthenticated" and ev.fatal


def test_token_is_stripped_even_when_not_verifying() -> None:
    ev = Telnyx().parse(_j(_start(custom_parameters={"bridge_token": _token(), "a": "b"})))
    assert isinstance(ev, Start) and ev.custom_parameters == {"a": "b"}


# --- the voice webhook --------------------------------------------------------------------------

FORM = (("CallSid", "v3:abc"), ("From", "+35319605860"), ("To", "+13129457420"), ("AccountSid", "acc"))


def test_call_details_post_and_get() -> None:
    post = InboundRequest("POST", "https://bridge.example/telnyx/answer", {}, form=FORM)
    assert Telnyx().call_details(post) == CallDetails("v3:abc", "+35319605860", "+13129457420")
    get = InboundRequest("GET", "https://bridge.example/telnyx/answer?CallSid=c1&From=%2B1&To=%2B2", {})
    assert Telnyx().call_details(get) == CallDetails("c1", "+1", "+2")


def _signed(body: bytes, timestamp: str = "1700000000", key: Ed25519PrivateKey = SIGNING) -> dict[str, str]:
    signature = base64.b64encode(key.sign(timestamp.encode() + b"|" + body)).decode()
    return {"telnyx-signature-ed25519": signature, "telnyx-timestamp": timestamp}


BODY = b"CallSid=v3%3Aabc&From=%2B35319605860&To=%2B13129457420"


def _request(headers: dict[str, str], body: bytes = BODY, received_at: float | None = None) -> InboundRequest:
    form = tuple((k, v[0]) for k, v in parse_qs(body.decode()).items())
    return InboundRequest("POST", "https://bridge.example/telnyx/answer", headers, body, form, received_at)


def test_signed_request_is_accepted() -> None:
    assert _verifying().verify_request(_request(_signed(BODY)))
    assert _verifying().verify_request(_request(_signed(BODY), received_at=1700000100.0))


@pytest.mark.parametrize(
    "request_",
    [
        _request({}),  # unsigned
        _request(_signed(BODY), body=BODY + b"&x=1"),  # tampered body
        _request(_signed(BODY, key=Ed25519PrivateKey.generate())),  # another key
        _request({**_signed(BODY), "telnyx-timestamp": "1700000001"}),  # timestamp changed
        _request({**_signed(BODY), "telnyx-signature-ed25519": "not base64!"}),
        _request({**_signed(BODY), "telnyx-signature-ed25519": base64.b64encode(b"short").decode()}),
        _request({"telnyx-signature-ed25519": _signed(BODY)["telnyx-signature-ed25519"]}),  # no timestamp
        _request(_signed(BODY, timestamp="soon"), received_at=1700000000.0),
        _request(_signed(BODY), received_at=1700000000.0 + 301),  # a replay, six minutes late
        _request(_signed(BODY), received_at=1700000000.0 - 301),  # from the future
    ],
)
def test_forged_missing_or_stale_signature_is_refused(request_: InboundRequest) -> None:
    assert not _verifying().verify_request(request_)


def test_verification_off_accepts_everything_and_upgrades_pass() -> None:
    assert Telnyx().verify_request(_request({}))
    assert not Telnyx().verifies() and _verifying().verifies()
    # The upgrade carries nothing Telnyx signs: the start's token is what is checked.
    assert _verifying().verify_upgrade(InboundRequest("GET", "wss://h/telnyx/media", {}))


# --- transfer ------------------------------------------------------------------------------------


def test_transfer_replaces_the_texml_with_a_dial() -> None:
    carrier = Telnyx(api_key="KEYabc", api_base_url="https://api.telnyx.test/")
    assert carrier.can_transfer and not Telnyx().can_transfer
    request = carrier.transfer(CallIds("v3:call/1", STREAM_ID, "acct-1"), "+15551230000")
    assert request.method == "POST"
    assert request.url == "https://api.telnyx.test/v2/texml/Accounts/acct-1/Calls/v3%3Acall%2F1"
    headers = dict(request.headers)
    assert headers["Authorization"] == "Bearer KEYabc"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    texml = parse_qs(request.body.decode())["Texml"][0]
    dial = ElementTree.fromstring(texml).find("./Dial/Number")
    assert dial is not None and dial.text == "+15551230000"


def test_transfer_uses_the_configured_account() -> None:
    carrier = Telnyx(api_key="k", account_sid="configured")
    assert "/Accounts/configured/" in carrier.transfer(CallIds("c", "s", "from-start"), "sip:a@b").url


# --- settings ---------------------------------------------------------------------------------


def test_settings_and_factory() -> None:
    settings = TelnyxSettings(codec="L16", sample_rate=16000)
    carrier = from_settings(settings, {"TELNYX_PUBLIC_KEY": PUBLIC_KEY, "BRIDGE_STREAM_SECRET": STREAM_KEY})
    assert carrier.verifies() and not carrier.can_transfer
    assert settings.secret_names() == ("TELNYX_PUBLIC_KEY", "BRIDGE_STREAM_SECRET", "TELNYX_API_KEY")
    with pytest.raises(ValueError, match="TELNYX_PUBLIC_KEY"):
        from_settings(TelnyxSettings(), {"BRIDGE_STREAM_SECRET": STREAM_KEY})
    with pytest.raises(ValueError, match="BRIDGE_STREAM_SECRET"):
        from_settings(TelnyxSettings(), {"TELNYX_PUBLIC_KEY": PUBLIC_KEY})
    with pytest.raises(ValueError, match="public key"):
        from_settings(TelnyxSettings(), {"TELNYX_PUBLIC_KEY": "bm90IGEga2V5", "BRIDGE_STREAM_SECRET": "s"})
    assert not from_settings(TelnyxSettings(verify=False), {}).verifies()


@pytest.mark.parametrize(
    "fields",
    [{"codec": "PCMU", "sample_rate": 16000}, {"codec": "OPUS"}, {"bogus": 1}, {"api_base_url": "ftp://x"}],
)
def test_bad_settings_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TelnyxSettings.model_validate(fields)
