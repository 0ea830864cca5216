"""SignalWire dialect: Twilio's messages (bare or wrapped), cXML, signing-key signatures, bearer tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree

import pytest
from pydantic import ValidationError

from bridge.carrier import streamtoken
from bridge.carrier.base import (
    CallDetails,
    CallIds,
    CarrierError,
    Cleared,
    Connected,
    Dtmf,
    InboundRequest,
    MarkEcho,
    Media,
    Start,
    Stop,
)
from bridge.carrier.signalwire import SignalWire, SignalWireSettings, from_settings

KEY = "PSK_signing_key_123"
STREAM = "7d56cc11-536d-4a45-b4fb-ed3d55be843b"
CALL = "76ac3c36-56da-4a3e-a0d6-b5f8df6da9ad"


def _j(obj: Any) -> str:
    return json.dumps(obj)


def _raw_start(**fmt: Any) -> dict[str, Any]:
    """The rawEvent of the start example in https://signalwire.com/docs/compatibility-api/cxml/reference/voice/stream."""
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "streamSid": STREAM,
            "accountSid": "b08dacad-2f6c-4de1-93d6-cc732e0c69c5",
            "callSid": CALL,
            "tracks": ["inbound"],
            "customParameters": {"profile": "support"},
            "mediaFormat": {"encoding": "audio/x-L16", "sampleRate": 24000, "channels": 1, **fmt},
        },
    }


def _wrapped(raw: dict[str, Any], event_type: str) -> dict[str, Any]:
    return {"timestamp": "2025-09-26T16:25:04.794Z", "direction": "inbound", "eventType": event_type, "rawEvent": raw}


L16_24K = SignalWire(codec="L16@24000h")


# --- messages from SignalWire ----------------------------------------------------------------------


@pytest.mark.parametrize("wrap", [False, True])
def test_start_bare_or_wrapped(wrap: bool) -> None:
    msg = _wrapped(_raw_start(), "start") if wrap else _raw_start()
    ev = L16_24K.parse(_j(msg))
    assert ev == Start(
        stream_sid=STREAM,
        call_sid=CALL,
        account_sid="b08dacad-2f6c-4de1-93d6-cc732e0c69c5",
        encoding="audio/x-L16",
        sample_rate=24000,
        channels=1,
        custom_parameters={"profile": "support"},
        tracks=("inbound",),
    )


@pytest.mark.parametrize("wrap", [False, True])
def test_media_mark_dtmf_stop_bare_or_wrapped(wrap: bool) -> None:
    def w(raw: dict[str, Any]) -> str:
        return _j(_wrapped(raw, raw["event"]) if wrap else raw)

    body = {"track": "inbound", "chunk": "1001", "timestamp": "20041", "payload": "AAEC"}
    assert L16_24K.parse(w({"event": "media", "sequenceNumber": "1002", "media": body})) == Media("AAEC", 20041)
    assert L16_24K.parse(w({"event": "mark", "streamSid": STREAM, "mark": {"name": "g0m2"}})) == MarkEcho("g0m2")
    dtmf = {"event": "dtmf", "streamSid": STREAM, "dtmf": {"duration": 2700, "digit": "8"}}
    assert L16_24K.parse(w(dtmf)) == Dtmf("8")
    assert L16_24K.parse(w({"event": "stop", "sequenceNumber": "1002"})) == Stop(None)
    connected = {"event": "connected", "protocol": "Call", "version": "0.2.0"}
    assert L16_24K.parse(w(connected)) == Connected("Call", "0.2.0")


def test_clear_acknowledgement() -> None:
    assert L16_24K.parse(_j({"event": "clear", "streamSid": STREAM})) == Cleared()
    assert L16_24K.parse(_j(_wrapped({"event": "clear", "streamSid": STREAM}, "clear"))) == Cleared()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("]", "invalid_json"),
        ('{"event": "bogus"}', "unknown_event"),
        ('{"rawEvent": "x"}', "missing_field"),
        ('{"rawEvent": {"rawEvent": {"event": "clear"}}}', "missing_field"),  # unwrapped once only
        ('{"event": "media", "media": {"track": "outbound", "payload": "AA=="}}', "unexpected_track"),
    ],
)
def test_junk(text: str, kind: str) -> None:
    ev = L16_24K.parse(text)
    assert isinstance(ev, CarrierError) and ev.kind == kind and not ev.fatal


def test_start_in_another_format_than_asked_is_refused() -> None:
    mulaw = _raw_start(encoding="audio/x-mulaw", sampleRate=8000)
    ev = L16_24K.parse(_j(mulaw))
    assert isinstance(ev, CarrierError) and ev.kind == "format_mismatch" and ev.fatal
    ev = SignalWire(codec="L16@16000h").parse(_j(_raw_start()))  # 24 kHz when 16 was asked for
    assert isinstance(ev, CarrierError) and ev.kind == "format_mismatch"
    assert isinstance(SignalWire().parse(_j(mulaw)), Start)


def test_l16_big_endian_setting_swaps_both_ways() -> None:
    carrier = SignalWire(codec="L16@24000h", l16_big_endian=True)
    wire = base64.b64encode(struct.pack(">2h", 1000, -1000)).decode()
    ev = carrier.parse(_j({"event": "media", "media": {"payload": wire}}))
    assert isinstance(ev, Media) and base64.b64decode(ev.payload) == struct.pack("<2h", 1000, -1000)
    start = carrier.parse(_j(_raw_start()))
    assert isinstance(start, Start)
    assert json.loads(carrier.writer(start).media(ev.payload))["media"]["payload"] == wire


# --- frames to SignalWire ----------------------------------------------------------------------


def test_writer_frames_are_twilios() -> None:
    start = L16_24K.parse(_j(_raw_start()))
    assert isinstance(start, Start)
    writer = L16_24K.writer(start)
    assert json.loads(writer.media("AAEC")) == {"event": "media", "streamSid": STREAM, "media": {"payload": "AAEC"}}
    assert json.loads(writer.mark("g0m1")) == {"event": "mark", "streamSid": STREAM, "mark": {"name": "g0m1"}}
    assert json.loads(writer.clear()) == {"event": "clear", "streamSid": STREAM}


# --- the cXML answer -----------------------------------------------------------------------------


def test_answer_connects_a_stream_with_codec_token_and_parameters() -> None:
    carrier = SignalWire(codec="L16@16000h", verify=True, signing_key=KEY)
    answer = carrier.answer("wss://bridge.example/signalwire/media", {"profile": "support", "call_sid": CALL})
    root = ElementTree.fromstring(answer.body)
    stream = root.find("./Connect/Stream")
    assert root.tag == "Response" and stream is not None
    assert stream.get("url") == "wss://bridge.example/signalwire/media"
    assert stream.get("codec") == "L16@16000h"
    token = stream.get("authBearerToken")
    assert streamtoken.check(KEY.encode(), "signalwire", token) == CALL
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"profile": "support", "call_sid": CALL}
    # ... and that token opens the stream.
    upgrade = InboundRequest("GET", "wss://bridge.example/signalwire/media", {"authorization": f"Bearer {token}"})
    assert carrier.verify_upgrade(upgrade)


def test_answer_default_codec_is_left_out() -> None:
    stream = ElementTree.fromstring(SignalWire().answer("wss://h/signalwire/media", {}).body).find("./Connect/Stream")
    assert stream is not None and "codec" not in stream.attrib and "authBearerToken" not in stream.attrib


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer b1.x.y",
        "Bearer " + streamtoken.issue(b"another key", "signalwire", CALL),
        "Bearer " + streamtoken.issue(KEY.encode(), "telnyx", CALL),  # another carrier's token
        "Basic " + streamtoken.issue(KEY.encode(), "signalwire", CALL),
    ],
)
def test_upgrade_without_a_valid_bearer_token_is_refused(authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    request = InboundRequest("GET", "wss://bridge.example/signalwire/media", headers)
    assert not SignalWire(verify=True, signing_key=KEY).verify_upgrade(request)
    assert SignalWire().verify_upgrade(request)


# --- webhook signatures ------------------------------------------------------------------------

URL = "https://bridge.example/signalwire/answer"
FORM = (("CallSid", "c-1"), ("From", "+15551230000"), ("To", "+15559870000"), ("AccountSid", "proj"))
# Computed with twilio-python's RequestValidator (the compatibility scheme is Twilio's).
FORM_SIGNATURE = "vJn5XQgPHXbzEA7ehyf11r0CNnw="


def _post(headers: dict[str, str], form: tuple[tuple[str, str], ...] = FORM, url: str = URL) -> InboundRequest:
    return InboundRequest("POST", url, headers, b"", form)


def test_form_signature_in_either_header_and_port_spelling() -> None:
    carrier = SignalWire(verify=True, signing_key=KEY)
    assert carrier.verify_request(_post({"x-signalwire-signature": FORM_SIGNATURE}))
    assert carrier.verify_request(_post({"x-twilio-signature": FORM_SIGNATURE}))
    with_port = URL.replace(".example", ".example:443")
    assert carrier.verify_request(_post({"x-signalwire-signature": FORM_SIGNATURE}, url=with_port))
    get = InboundRequest("GET", URL + "?x=1", {"x-signalwire-signature": "zhXbtWL4LvD4HGE++wH+u/Xt7Q8="})
    assert carrier.verify_request(get)


def test_json_body_signature() -> None:
    body = b'{"call": {"call_id": "c-1"}}'
    sig = hmac.new(KEY.encode(), URL.encode() + body, hashlib.sha1).hexdigest()
    request = InboundRequest("POST", URL, {"x-signalwire-signature": sig}, body)
    assert SignalWire(verify=True, signing_key=KEY).verify_request(request)
    tampered = InboundRequest("POST", URL, {"x-signalwire-signature": sig}, body + b" ")
    assert not SignalWire(verify=True, signing_key=KEY).verify_request(tampered)


@pytest.mark.parametrize(
    "request_",
    [
        _post({}),
        _post({"x-signalwire-signature": "bogus"}),
        _post({"x-signalwire-signature": FORM_SIGNATURE}, form=(*FORM[:3], ("AccountSid", "other"))),
        _post({"x-signalwire-signature": FORM_SIGNATURE}, url=URL + "?extra=1"),
    ],
)
def test_forged_or_missing_signature_is_refused(request_: InboundRequest) -> None:
    assert not SignalWire(verify=True, signing_key=KEY).verify_request(request_)
    assert not SignalWire(verify=True, signing_key="other key").verify_request(
        _post({"x-signalwire-signature": FORM_SIGNATURE})
    )


def test_call_details() -> None:
    assert SignalWire().call_details(_post({})) == CallDetails("c-1", "+15551230000", "+15559870000")


# --- transfer ------------------------------------------------------------------------------------


def test_transfer_redirects_to_the_dial_url() -> None:
    carrier = SignalWire(
        space_url="https://example.signalwire.com",
        project_id="proj-1",
        api_token="PTtoken",
        transfer_xml_url="https://bridge.example/signalwire/dial",
    )
    assert carrier.can_transfer and not SignalWire(space_url="https://x", project_id="p", api_token="t").can_transfer
    request = carrier.transfer(CallIds(CALL, STREAM, "proj-1"), "+15551230000")
    assert request.method == "POST"
    assert request.url == f"https://example.signalwire.com/api/laml/2010-04-01/Accounts/proj-1/Calls/{CALL}.json"
    headers = dict(request.headers)
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"proj-1:PTtoken").decode()
    assert parse_qs(request.body.decode()) == {
        "Url": ["https://bridge.example/signalwire/dial?to=%2B15551230000"],
        "Method": ["GET"],
    }


# --- settings ---------------------------------------------------------------------------------


def test_settings_and_factory() -> None:
    carrier = from_settings(SignalWireSettings(), {"SIGNALWIRE_SIGNING_KEY": KEY})
    assert carrier.verifies() and carrier.marks_echoed_on_clear and not carrier.can_transfer
    with pytest.raises(ValueError, match="SIGNALWIRE_SIGNING_KEY"):
        from_settings(SignalWireSettings(), {})
    with pytest.raises(ValidationError):
        SignalWireSettings.model_validate({"codec": "L16@8000h"})
    with pytest.raises(ValidationError):
        SignalWireSettings.model_validate({"space_url": "example.signalwire.com"})
