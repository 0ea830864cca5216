"""Plivo dialect: the documented stream messages, Plivo XML, X-Plivo-Signature-V3, transfers."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest
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
)
from bridge.carrier.plivo import (
    Plivo,
    PlivoSettings,
    dial_xml,
    from_settings,
    pack_parameters,
    signature,
    unpack_parameters,
)

TOKEN = "MAXXXXXXXXXXXXXXXXXX-token"
STREAM_ID = "87654321-4321-4321-4321-cba987654321"
CALL_ID = "12345678-1234-1234-1234-123456789abc"


def _j(obj: Any) -> str:
    return json.dumps(obj)


def _start(extra_headers: Any = None, **fmt: Any) -> dict[str, Any]:
    """The start event of https://www.plivo.com/docs/voice-agents/audio-streaming/concepts/audio-streaming-reference."""
    msg: dict[str, Any] = {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": CALL_ID,
            "streamId": STREAM_ID,
            "accountId": "MAXXXXXXXXXXXXXXXXXX",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, **fmt},
        },
    }
    if extra_headers is not None:
        msg["extra_headers"] = extra_headers
    return msg


# --- messages from Plivo ------------------------------------------------------------------------


def test_start_documented_example_with_our_parameters() -> None:
    extra = pack_parameters({"profile": "sales-eu", "from": "+14155550100", "to": "+14155550199", "call_sid": "x"})
    ev = Plivo().parse(_j(_start(extra_headers=extra)))
    assert ev == Start(
        stream_sid=STREAM_ID,
        call_sid=CALL_ID,
        account_sid="MAXXXXXXXXXXXXXXXXXX",
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
        custom_parameters={"profile": "sales-eu", "from": "+14155550100", "to": "+14155550199"},
        tracks=("inbound",),
        from_number="+14155550100",
        to_number="+14155550199",
    )


def test_extra_headers_documented_shape_without_ours_gives_no_parameters() -> None:
    ev = Plivo().parse(_j(_start(extra_headers="userId=12345;sessionId=abc-xyz")))
    assert isinstance(ev, Start) and ev.custom_parameters == {}


@pytest.mark.parametrize("separator", [";", ","])
def test_extra_headers_either_separator_and_json(separator: str) -> None:
    packed = pack_parameters({"profile": "p"})
    assert unpack_parameters(f"userId=1{separator}{packed}{separator}x=y") == {"profile": "p"}
    key, _, value = packed.partition("=")
    assert unpack_parameters(json.dumps({"userId": "1", key: value})) == {"profile": "p"}
    assert unpack_parameters({"X-PH-bridge": value}) == {"profile": "p"}


@pytest.mark.parametrize("junk", ["bridge=!!!!", "bridge=", 5, None, "bridge=" + "A" * 5000, "{broken"])
def test_extra_headers_junk_gives_no_parameters(junk: Any) -> None:
    assert unpack_parameters(junk) == {}


def test_packed_parameters_are_alphanumeric_and_fit_512_bytes() -> None:
    packed = pack_parameters({"profile": "ü-ñ <x>", "from": "+1 (415) 555", "to": "sip:a@b;c"})
    key, eq, value = packed.partition("=")
    assert (key, eq) == ("bridge", "=") and value.isalnum()
    big = pack_parameters({"profile": "p", "from": "x" * 200, "to": "y" * 400})
    assert len(big) <= 512
    assert unpack_parameters(big) == {"profile": "p", "from": "x" * 200}  # what did not fit is left out


def test_media_checkpoint_cleared_dtmf() -> None:
    media = {
        "event": "media",
        "sequenceNumber": 42,
        "streamId": STREAM_ID,
        "media": {"track": "inbound", "timestamp": "1705312200000", "chunk": 41, "payload": "//uQxA=="},
        "extra_headers": "userId=12345",
    }
    carrier = Plivo()
    assert carrier.parse(_j(media)) == Media("//uQxA==", 1705312200000)
    played = {"event": "playedStream", "streamId": STREAM_ID, "name": "g0m3"}
    assert carrier.parse(_j(played)) == MarkEcho("g0m3")
    assert carrier.parse(_j({**played, "event": "played"})) == MarkEcho("g0m3")  # the FAQ's name for it
    assert carrier.parse(_j({"sequenceNumber": 0, "event": "clearedAudio", "streamId": STREAM_ID})) == Cleared()
    dtmf = {"event": "dtmf", "sequenceNumber": 9, "streamId": STREAM_ID, "dtmf": {"track": "inbound", "digit": "5"}}
    assert carrier.parse(_j(dtmf)) == Dtmf("5")


@pytest.mark.parametrize(
    ("text", "kind", "fatal"),
    [
        ("nope", "invalid_json", False),
        ('{"event": "media", "media": {}}', "missing_field", False),
        ('{"event": "media", "media": {"track": "outbound", "payload": "AA=="}}', "unexpected_track", False),
        ('{"event": "playedStream"}', "missing_field", False),
        ('{"event": "something"}', "unknown_event", False),
        ('{"event": "start"}', "missing_field", True),
        ('{"event": "start", "start": {"callId": "c"}}', "missing_field", True),
    ],
)
def test_junk(text: str, kind: str, fatal: bool) -> None:
    ev = Plivo().parse(text)
    assert isinstance(ev, CarrierError) and (ev.kind, ev.fatal) == (kind, fatal)


def test_start_in_another_format_than_asked_is_refused() -> None:
    ev = Plivo(content_type="audio/x-l16;rate=16000").parse(_j(_start()))
    assert isinstance(ev, CarrierError) and ev.kind == "format_mismatch" and ev.fatal
    ev = Plivo().parse(_j(_start(encoding="audio/x-l16", sampleRate=16000)))
    assert isinstance(ev, CarrierError) and ev.kind == "format_mismatch"


def test_l16_big_endian_setting_swaps_both_ways() -> None:
    carrier = Plivo(content_type="audio/x-l16;rate=16000", l16_big_endian=True)
    wire = base64.b64encode(struct.pack(">2h", 7, -7)).decode()
    ev = carrier.parse(_j({"event": "media", "media": {"payload": wire}}))
    assert isinstance(ev, Media) and base64.b64decode(ev.payload) == struct.pack("<2h", 7, -7)
    start = carrier.parse(_j(_start(encoding="audio/x-l16", sampleRate=16000)))
    assert isinstance(start, Start)
    frame = json.loads(carrier.writer(start).media(ev.payload))
    assert frame["media"] == {"contentType": "audio/x-l16", "sampleRate": 16000, "payload": wire}


# --- frames to Plivo ----------------------------------------------------------------------------


def test_writer_frames() -> None:
    start = Plivo().parse(_j(_start()))
    assert isinstance(start, Start)
    writer = Plivo().writer(start)
    assert json.loads(writer.media("AAEC")) == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "AAEC"},
    }
    assert json.loads(writer.mark("g0m1")) == {"event": "checkpoint", "streamId": STREAM_ID, "name": "g0m1"}
    assert json.loads(writer.clear()) == {"event": "clearAudio", "streamId": STREAM_ID}


def test_writer_escapes_a_hostile_stream_id() -> None:
    hostile = Plivo().writer(Start('x","event":"hangup', "c", "a", "audio/x-mulaw", 8000, 1))
    assert json.loads(hostile.clear()) == {"event": "clearAudio", "streamId": 'x","event":"hangup'}


# --- the XML answer ---------------------------------------------------------------------------


def test_answer_is_a_bidirectional_stream_that_keeps_the_call() -> None:
    params = {"profile": "sales", "from": "+14155550100", "to": "+14155550199", "call_sid": "abc"}
    answer = Plivo().answer("wss://bridge.example/plivo/media", params)
    root = ElementTree.fromstring(answer.body)
    stream = root.find("Stream")
    assert root.tag == "Response" and stream is not None and answer.content_type.startswith("text/xml")
    assert stream.text == "wss://bridge.example/plivo/media"
    assert stream.get("bidirectional") == "true" and stream.get("keepCallAlive") == "true"
    assert stream.get("audioTrack") == "inbound"
    assert stream.get("contentType") == "audio/x-mulaw;rate=8000"
    # The parameters travel in extraHeaders and come back in start.
    ev = Plivo().parse(_j(_start(extra_headers=stream.get("extraHeaders"))))
    assert isinstance(ev, Start)
    assert ev.custom_parameters == {"profile": "sales", "from": "+14155550100", "to": "+14155550199"}


def test_answer_without_parameters_has_no_extra_headers() -> None:
    stream = ElementTree.fromstring(Plivo().answer("wss://h/plivo/media", {}).body).find("Stream")
    assert stream is not None and "extraHeaders" not in stream.attrib


# --- signatures ----------------------------------------------------------------------------------

# Vectors computed with plivo-python's validate_v3_signature (plivo/utils/signature_v3.py).
ANSWER_URL = "https://bridge.example/plivo/answer"
FORM = (("CallUUID", "abc-123"), ("From", "+14155550100"), ("To", "+14155550199"), ("Direction", "inbound"))
VECTORS = [
    ("POST", ANSWER_URL, FORM, "12345678901234567890", "qBRpv7hv/mxIhuxltYsEdbvx5SDfysDP2KEmKQ+MENU="),
    ("POST", ANSWER_URL + "?b=2&a=1", (("To", "+1"), ("From", "+2")), "n1", "O1qrf0Df0BRwyPlLpLF76x4z9LW91/d+er5fs55Rka8="),  # noqa: E501
    ("GET", ANSWER_URL + "?To=%2B1&From=%2B2&CallUUID=u", (), "n2", "nHHtxGiDEwKRxn1oSibB8FSTbdZ2S7DN4w/HhRD6qwU="),
    ("POST", ANSWER_URL, (), "n4", "ziXKLuj2zXbWkPf95LY77JCc4XUWnK7t89vxOm9KLNM="),
]


@pytest.mark.parametrize(("method", "url", "form", "nonce", "expected"), VECTORS)
def test_signature_matches_plivos_sdk(
    method: str, url: str, form: tuple[tuple[str, str], ...], nonce: str, expected: str
) -> None:
    assert signature(TOKEN, method, url, nonce, form) == expected


def _answer_request(headers: dict[str, str], form: tuple[tuple[str, str], ...] = FORM) -> InboundRequest:
    return InboundRequest("POST", ANSWER_URL, headers, b"", form)


SIGNED = {"x-plivo-signature-v3": VECTORS[0][4], "x-plivo-signature-v3-nonce": "12345678901234567890"}


def test_signed_answer_request_is_accepted() -> None:
    carrier = Plivo(verify=True, auth_token=TOKEN)
    assert carrier.verify_request(_answer_request(SIGNED))
    # Several signatures in one header (comma-separated), and the main account's header.
    assert carrier.verify_request(_answer_request({**SIGNED, "x-plivo-signature-v3": "bogus," + VECTORS[0][4]}))
    ma = {"x-plivo-signature-ma-v3": VECTORS[0][4], "x-plivo-signature-v3-nonce": SIGNED["x-plivo-signature-v3-nonce"]}
    assert carrier.verify_request(_answer_request(ma))


@pytest.mark.parametrize(
    "request_",
    [
        _answer_request({}),
        _answer_request({"x-plivo-signature-v3": VECTORS[0][4]}),  # no nonce
        _answer_request({**SIGNED, "x-plivo-signature-v3-nonce": "other"}),
        _answer_request(SIGNED, form=(*FORM[:3], ("Direction", "outbound"))),  # tampered field
        _answer_request(SIGNED, form=(*FORM, ("Extra", "1"))),  # added field
    ],
)
def test_forged_or_missing_signature_is_refused(request_: InboundRequest) -> None:
    assert not Plivo(verify=True, auth_token=TOKEN).verify_request(request_)
    assert not Plivo(verify=True, auth_token="another token").verify_request(_answer_request(SIGNED))


def test_signed_upgrade_is_accepted_as_either_stream_sdk_signs_it() -> None:
    carrier = Plivo(verify=True, auth_token=TOKEN)
    url = "wss://bridge.example/plivo/media"
    # The Python stream SDK's form (vector from plivo-python): http://host/path/websocket.
    python_sdk = {
        "x-plivo-signature-v3": "a9qPn+I0xFHEm/0+JSE9Wr0OiV4RgGwW2Bo/qTWW+6o=",
        "x-plivo-signature-v3-nonce": "n3",
    }
    assert carrier.verify_upgrade(InboundRequest("GET", url, python_sdk))
    # The Node stream SDK's form: https://host/path.
    node_sdk = signature(TOKEN, "GET", "https://bridge.example/plivo/media", "n5")
    assert carrier.verify_upgrade(
        InboundRequest("GET", url, {"x-plivo-signature-v3": node_sdk, "x-plivo-signature-v3-nonce": "n5"})
    )
    forged = signature("wrong", "GET", "https://bridge.example/plivo/media", "n5")
    assert not carrier.verify_upgrade(
        InboundRequest("GET", url, {"x-plivo-signature-v3": forged, "x-plivo-signature-v3-nonce": "n5"})
    )
    other_path = signature(TOKEN, "GET", "https://bridge.example/twilio/media", "n5")
    assert not carrier.verify_upgrade(
        InboundRequest("GET", url, {"x-plivo-signature-v3": other_path, "x-plivo-signature-v3-nonce": "n5"})
    )
    assert not carrier.verify_upgrade(InboundRequest("GET", url, {}))
    assert Plivo().verify_upgrade(InboundRequest("GET", url, {}))


def test_call_details() -> None:
    assert Plivo().call_details(_answer_request({})) == CallDetails("abc-123", "+14155550100", "+14155550199")


# --- transfer --------------------------------------------------------------------------------


def test_transfer_moves_the_a_leg_to_the_dial_url() -> None:
    carrier = Plivo(auth_token=TOKEN, auth_id="MAID", transfer_xml_url="https://bridge.example/plivo/dial?k=1")
    assert carrier.can_transfer
    assert not Plivo(auth_token=TOKEN, auth_id="MAID").can_transfer  # no URL to move the call to
    request = carrier.transfer(CallIds(CALL_ID, STREAM_ID, "MA"), "+15551230000")
    assert (request.method, request.url) == ("POST", f"https://api.plivo.com/v1/Account/MAID/Call/{CALL_ID}/")
    headers = dict(request.headers)
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"MAID:{TOKEN}".encode()).decode()
    body = json.loads(request.body)
    assert body["legs"] == "aleg" and body["aleg_method"] == "GET"
    query = parse_qs(urlsplit(body["aleg_url"]).query)
    assert query == {"k": ["1"], "to": ["+15551230000"]}


def test_dial_xml() -> None:
    number = ElementTree.fromstring(dial_xml("+15551230000")).find("./Dial/Number")
    assert number is not None and number.text == "+15551230000"
    user = ElementTree.fromstring(dial_xml("sip:desk@pbx.example")).find("./Dial/User")
    assert user is not None and user.text == "sip:desk@pbx.example"


# --- settings ---------------------------------------------------------------------------------


def test_settings_and_factory() -> None:
    carrier = from_settings(PlivoSettings(auth_id="MAID"), {"PLIVO_AUTH_TOKEN": TOKEN})
    assert carrier.verifies() and not carrier.can_transfer and not carrier.marks_echoed_on_clear
    with pytest.raises(ValueError, match="PLIVO_AUTH_TOKEN"):
        from_settings(PlivoSettings(), {})
    assert not from_settings(PlivoSettings(verify=False), {}).verifies()
    with pytest.raises(ValidationError):
        PlivoSettings.model_validate({"content_type": "audio/x-l16;rate=24000"})
    with pytest.raises(ValidationError):
        PlivoSettings.model_validate({"auth_token": "inline secrets are not settings"})
