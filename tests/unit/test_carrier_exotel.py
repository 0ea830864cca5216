"""Exotel dialect: the documented Voicebot messages, the dynamic-URL answer, Basic auth, chunk rules."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from bridge.carrier.base import (
    CallDetails,
    CarrierError,
    Connected,
    Dtmf,
    InboundRequest,
    MarkEcho,
    Media,
    Start,
    Stop,
    flush_frames,
    media_frames,
)
from bridge.carrier.common import basic_authorization
from bridge.carrier.exotel import Exotel, ExotelSettings, ExotelWriter, from_settings

SID = "MZ0123456789abcdef0123456789abcd"


def _j(obj: Any) -> str:
    return json.dumps(obj)


def _start(**fmt: Any) -> dict[str, Any]:
    """The start event of https://developer.exotel.com/docs/agentstream/websocket-protocol."""
    return {
        "event": "start",
        "sequence_number": "1",
        "stream_sid": SID,
        "start": {
            "stream_sid": SID,
            "call_sid": "CA0123456789abcdef0123456789abcd",
            "account_sid": "AC0123456789abcdef0123456789abcd",
            "from": "+919876543210",
            "to": "+918047491899",
            "custom_parameters": {"profile": "billing"},
            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16", **fmt},
        },
    }


# --- messages from Exotel ----------------------------------------------------------------------


def test_start_documented_example_means_little_endian_l16() -> None:
    ev = Exotel().parse(_j(_start()))
    assert ev == Start(
        stream_sid=SID,
        call_sid="CA0123456789abcdef0123456789abcd",
        account_sid="AC0123456789abcdef0123456789abcd",
        encoding="audio/x-l16",
        sample_rate=8000,
        channels=1,
        custom_parameters={"profile": "billing"},
        tracks=("inbound",),
        from_number="+919876543210",
        to_number="+918047491899",
    )


def test_start_other_rates_and_the_betas_mulaw() -> None:
    ev = Exotel().parse(_j(_start(sample_rate=24000)))
    assert isinstance(ev, Start) and (ev.encoding, ev.sample_rate) == ("audio/x-l16", 24000)
    ev = Exotel().parse(_j(_start(encoding="audio/x-mulaw", bit_rate="8")))
    assert isinstance(ev, Start) and ev.encoding == "audio/x-mulaw"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (_start(bit_rate="8"), "invalid_format"),  # raw audio that is not 16-bit
        (_start(sample_rate="eight thousand"), "invalid_format"),
        ({"event": "start", "stream_sid": SID}, "missing_field"),
        ({"event": "start", "start": {"call_sid": "CA1"}}, "missing_field"),
    ],
)
def test_unusable_start_is_fatal(message: dict[str, Any], kind: str) -> None:
    ev = Exotel().parse(_j(message))
    assert isinstance(ev, CarrierError) and ev.fatal and ev.kind == kind


def test_connected_media_dtmf_mark_stop() -> None:
    carrier = Exotel()
    assert carrier.parse('{"event": "connected"}') == Connected("", "")
    body = {"chunk": "2", "timestamp": "200", "payload": "AAE="}
    assert carrier.parse(_j({"event": "media", "sequence_number": "3", "stream_sid": SID, "media": body})) == Media(
        "AAE=", 200
    )
    dtmf = {"event": "dtmf", "sequence_number": "7", "stream_sid": SID, "dtmf": {"digit": "5", "duration": "100"}}
    assert carrier.parse(_j(dtmf)) == Dtmf("5")
    mark = {"event": "mark", "sequence_number": "15", "stream_sid": SID, "mark": {"name": "g0m9"}}
    assert carrier.parse(_j(mark)) == MarkEcho("g0m9")
    stop = {"event": "stop", "stream_sid": SID, "stop": {"call_sid": "CA1", "reason": "callended"}}
    assert carrier.parse(_j(stop)) == Stop("CA1")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("oops", "invalid_json"),
        ('{"event": "media", "media": {"payload": null}}', "missing_field"),
        ('{"event": "media", "media": {"track": "outbound", "payload": "AA=="}}', "unexpected_track"),
        ('{"event": "mark"}', "missing_field"),
        ('{"event": "dtmf", "dtmf": {"digit": "55"}}', "invalid_dtmf"),
        ('{"event": "clear"}', "unknown_event"),
    ],
)
def test_junk(text: str, kind: str) -> None:
    ev = Exotel().parse(text)
    assert isinstance(ev, CarrierError) and ev.kind == kind and not ev.fatal


# --- frames to Exotel -------------------------------------------------------------------------


def test_writer_frames() -> None:
    writer = ExotelWriter(SID)
    assert json.loads(writer.media("AAEC")) == {"event": "media", "stream_sid": SID, "media": {"payload": "AAEC"}}
    assert json.loads(writer.mark("g0m1")) == {"event": "mark", "stream_sid": SID, "mark": {"name": "g0m1"}}
    assert json.loads(writer.clear()) == {"event": "clear", "stream_sid": SID}


def _payloads(frames: Any) -> list[bytes]:
    return [base64.b64decode(json.loads(f)["media"]["payload"]) for f in frames]


def test_media_frames_are_multiples_of_320_bytes() -> None:
    writer = ExotelWriter(SID)
    audio = bytes(range(250)) * 8  # 2000 bytes
    first = _payloads(media_frames(writer, base64.b64encode(audio[:1000]).decode()))
    assert [len(p) for p in first] == [960]  # 40 held
    assert media_frames(writer, base64.b64encode(audio[1000:1100]).decode()) == []  # 140 held
    second = _payloads(media_frames(writer, base64.b64encode(audio[1100:]).decode()))
    assert [len(p) for p in second] == [960]  # 140 + 900 = 1040: 960 sent, 80 held
    assert b"".join(first + second) == audio[:1920]
    writer.clear()
    assert _payloads(media_frames(writer, base64.b64encode(bytes(320)).decode())) == [bytes(320)]


@pytest.mark.parametrize(("rate", "padding_ms"), [(8000, 15.0), (16000, 7.5)])
def test_flush_pads_the_held_remainder_to_320_bytes(rate: int, padding_ms: float) -> None:
    writer = ExotelWriter(SID, rate)
    audio = bytes(range(1, 81)) * 5  # 400 bytes: 320 sent, 80 held
    assert [len(p) for p in _payloads(media_frames(writer, base64.b64encode(audio).decode()))] == [320]
    frames, pad = flush_frames(writer)
    assert _payloads(frames) == [audio[320:] + bytes(240)] and pad == padding_ms
    assert flush_frames(writer) == ([], 0.0)


def test_media_frames_split_at_100_kb() -> None:
    sizes = [len(p) for p in _payloads(ExotelWriter(SID).media_frames(base64.b64encode(bytes(250_000)).decode()))]
    assert all(s <= 100_000 and s % 320 == 0 for s in sizes) and sum(sizes) == 250_000 - 250_000 % 320


# --- the dynamic URL ------------------------------------------------------------------------------


def _url(answer_body: bytes) -> str:
    doc = json.loads(answer_body)
    assert list(doc) == ["url"]
    url: str = doc["url"]
    return url


def test_answer_returns_the_stream_url_with_rate_and_parameters() -> None:
    params = {"profile": "billing", "from": "+91", "to": "+91", "call_sid": "CA1"}
    answer = Exotel(sample_rate=16000).answer("wss://bridge.example/exotel/media", params)
    assert answer.content_type == "application/json"
    url = urlsplit(_url(answer.body))
    assert (url.scheme, url.netloc, url.path) == ("wss", "bridge.example", "/exotel/media")
    # from, to and the call id travel in start: only the profile spends one of the three parameters.
    assert parse_qs(url.query) == {"sample-rate": ["16000"], "profile": ["billing"]}


def test_answer_keeps_to_three_parameters_and_256_characters() -> None:
    params = {"a": "1", "b": "2", "c": "3", "d": "4", "long": "x" * 300}
    query = parse_qs(urlsplit(_url(Exotel().answer("wss://h/exotel/media", params).body)).query)
    assert query == {"sample-rate": ["8000"], "a": ["1"], "b": ["2"], "c": ["3"]}
    query = parse_qs(urlsplit(_url(Exotel().answer("wss://h/exotel/media", {"long": "x" * 300}).body)).query)
    assert query == {"sample-rate": ["8000"]}


def test_answer_carries_the_basic_credentials_when_verifying() -> None:
    carrier = Exotel(verify=True, api_key="key", api_token="t@k:en")
    url = urlsplit(_url(carrier.answer("wss://bridge.example/exotel/media", {}).body))
    assert (url.username, url.password, url.hostname) == ("key", "t%40k%3Aen", "bridge.example")


def test_call_details_from_the_dynamic_url_request() -> None:
    request = InboundRequest("GET", "https://h/exotel/answer?CallSid=CA9&CallFrom=09876543210&CallTo=08047491899", {})
    assert Exotel().call_details(request) == CallDetails("CA9", "09876543210", "08047491899")
    request = InboundRequest("GET", "https://h/exotel/answer?CallSid=CA9&From=1&To=2", {})
    assert Exotel().call_details(request) == CallDetails("CA9", "1", "2")


# --- Basic auth ----------------------------------------------------------------------------------


def _req(authorization: str | None) -> InboundRequest:
    return InboundRequest("GET", "wss://h/exotel/media", {"authorization": authorization} if authorization else {})


def test_basic_auth_accepted() -> None:
    carrier = Exotel(verify=True, api_key="key", api_token="token")
    assert carrier.verify_upgrade(_req(basic_authorization("key", "token")))
    assert carrier.verify_request(_req(basic_authorization("key", "token")))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        basic_authorization("key", "wrong"),
        basic_authorization("other", "token"),
        basic_authorization("key", "token "),
        "Bearer token",
        "Basic !!!",
    ],
)
def test_basic_auth_refused(authorization: str | None) -> None:
    carrier = Exotel(verify=True, api_key="key", api_token="token")
    assert not carrier.verify_upgrade(_req(authorization))
    assert not carrier.verify_request(_req(authorization))
    assert Exotel().verify_upgrade(_req(authorization))  # verification off


def test_no_transfer() -> None:
    assert not Exotel().can_transfer


# --- settings ---------------------------------------------------------------------------------


def test_settings_and_factory() -> None:
    carrier = from_settings(ExotelSettings(api_key="key", sample_rate=16000), {"EXOTEL_API_TOKEN": "token"})
    assert carrier.verifies() and carrier.marks_echoed_on_clear
    assert not from_settings(ExotelSettings(verify=False, marks_echoed_on_clear=False), {}).marks_echoed_on_clear
    with pytest.raises(ValueError, match="api_key"):
        from_settings(ExotelSettings(), {"EXOTEL_API_TOKEN": "token"})
    with pytest.raises(ValueError, match="EXOTEL_API_TOKEN"):
        from_settings(ExotelSettings(api_key="key"), {})
    with pytest.raises(ValidationError):
        ExotelSettings.model_validate({"sample_rate": 11025})
