"""TwiML for the voice webhook: the stream document, profile routing, the overflow documents."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bridge.carrier.twiml import MAX_PARAMETER_LENGTH, connect_stream, redirect, say_and_hang_up
from bridge.server.routes import choose_profile, media_url, route, stream_path

# --- media_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "expected"),
    [
        ("https://bridge.example.com", "wss://bridge.example.com/media"),
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/media"),
        ("https://example.com/voice", "wss://example.com/voice/media"),
        ("https://example.com/voice/", "wss://example.com/voice/media"),
        ("wss://already.example.com", "wss://already.example.com/media"),
        ("https://example.com:8443/a/b", "wss://example.com:8443/a/b/media"),
    ],
)
def test_media_url_from_public_url(public_url: str, expected: str) -> None:
    assert media_url(public_url, "ignored.example.net") == expected


def test_media_url_public_url_drops_query_and_fragment() -> None:
    # Twilio does not support query strings on the stream URL.
    assert media_url("https://example.com/x?a=1#f", None) == "wss://example.com/x/media"


def test_media_url_from_host_header() -> None:
    assert media_url(None, "abc123.ngrok.app") == "wss://abc123.ngrok.app/media"
    assert media_url("", " bridge.example.com:8443 ") == "wss://bridge.example.com:8443/media"


def test_media_url_custom_path_and_no_host() -> None:
    assert media_url(None, "h.example", path="/stream") == "wss://h.example/stream"
    assert media_url(None, None) == "wss://localhost/media"


# --- connect_stream -----------------------------------------------------------------------


def _stream(xml: str) -> ET.Element:
    root = ET.fromstring(xml.encode())
    assert root.tag == "Response"
    connect = root.find("Connect")
    assert connect is not None
    stream = connect.find("Stream")
    assert stream is not None
    return stream


def test_connect_stream_parses_with_url_and_parameters() -> None:
    xml = connect_stream("wss://bridge.example.com/media", {"profile": "sales", "caller_name": "Jane"})
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    stream = _stream(xml)
    assert stream.get("url") == "wss://bridge.example.com/media"
    params = [(p.tag, p.get("name"), p.get("value")) for p in stream]
    assert params == [("Parameter", "profile", "sales"), ("Parameter", "caller_name", "Jane")]


def test_connect_stream_without_parameters() -> None:
    stream = _stream(connect_stream("wss://h/media", {}))
    assert list(stream) == []


@pytest.mark.parametrize(
    "value",
    ['"quoted"', "it's", "a & b", "<Hangup/>", '"/><Hangup/><Parameter name="x', "line\nbreak\ttab", "Zoë 🙂"],
)
def test_connect_stream_escapes_attribute_values(value: str) -> None:
    xml = connect_stream("wss://h/media?x=" + value, {value: value})
    stream = _stream(xml)
    assert stream.get("url") == "wss://h/media?x=" + value
    (param,) = list(stream)
    assert param.get("name") == value
    assert param.get("value") == value
    # Nothing was injected as markup.
    root = ET.fromstring(xml.encode())
    assert root.find(".//Hangup") is None


def test_connect_stream_truncates_long_parameters_under_500() -> None:
    value = "v" * 2000
    stream = _stream(connect_stream("wss://h/media", {"instructions": value, "short": "ok"}))
    long_param, short_param = list(stream)
    name, got = long_param.get("name"), long_param.get("value")
    assert name == "instructions"
    assert got is not None
    assert len(name) + len(got) < 500
    assert len(name) + len(got) == MAX_PARAMETER_LENGTH
    assert value.startswith(got)
    assert short_param.get("value") == "ok"


def test_connect_stream_leaves_parameters_at_the_limit_alone() -> None:
    value = "x" * (MAX_PARAMETER_LENGTH - len("k"))
    (param,) = list(_stream(connect_stream("wss://h/media", {"k": value})))
    assert param.get("value") == value


# --- choose_profile -----------------------------------------------------------------------


ROUTES: list[tuple[str | None, str | None, str]] = [
    ("+1800*", None, "tollfree"),
    (None, "+44*", "uk"),
    ("+1415555????", "+1*", "sf_local"),
    ("+1415*", None, "sf"),
]


@pytest.mark.parametrize(
    ("to", "from_", "expected"),
    [
        ("+18005551212", "+14158675310", "tollfree"),
        ("+18005551212", "+447700900123", "tollfree"),  # first match wins
        ("+14155550000", "+447700900123", "uk"),  # uk listed before sf
        ("+14155550123", "+12125550000", "sf_local"),
        ("+14155551", "+12125550000", "sf"),  # ???? needs exactly four more characters
        ("+14159990000", None, "sf"),
        ("+33123456789", "+33987654321", None),
        (None, None, None),
    ],
)
def test_choose_profile(to: str | None, from_: str | None, expected: str | None) -> None:
    assert choose_profile(ROUTES, to, from_) == expected


def test_choose_profile_route_with_both_patterns_needs_both() -> None:
    routes: list[tuple[str | None, str | None, str]] = [("+1415*", "+44*", "both")]
    assert choose_profile(routes, "+14150000000", "+447700900000") == "both"
    assert choose_profile(routes, "+14150000000", "+12120000000") is None
    assert choose_profile(routes, None, "+447700900000") is None


def test_choose_profile_is_case_sensitive_and_literal() -> None:
    routes: list[tuple[str | None, str | None, str]] = [(None, "client:Alice", "alice")]
    assert choose_profile(routes, None, "client:Alice") == "alice"
    assert choose_profile(routes, None, "client:alice") is None
    assert choose_profile([], "+1", "+2") is None


# --- overflow documents -------------------------------------------------------------------


def test_say_and_hang_up() -> None:
    root = ET.fromstring(say_and_hang_up('Busy & "sorry" <now>').encode())
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root[0].text == 'Busy & "sorry" <now>'


def test_redirect() -> None:
    root = ET.fromstring(redirect("https://example.com/busy?a=1&b=2").encode())
    assert [child.tag for child in root] == ["Redirect"]
    assert root[0].text == "https://example.com/busy?a=1&b=2"
    assert root[0].get("method") == "POST"


# --- routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/twiml", ("twilio", "answer")),
        ("/media", ("twilio", "media")),
        ("/twilio/answer", ("twilio", "answer")),
        ("/telnyx/answer", ("telnyx", "answer")),
        ("/vonage/media", ("vonage", "media")),
        ("/exotel/media/", ("exotel", "media")),
        ("/nobody/answer", None),
        ("/telnyx/other", None),
        ("/", None),
    ],
)
def test_every_carrier_has_an_answer_and_a_media_route(path: str, expected: tuple[str, str] | None) -> None:
    assert route(path) == expected


def test_twilio_legacy_answer_keeps_pointing_at_media() -> None:
    assert stream_path("/twiml", "twilio") == "/media"
    assert stream_path("/twilio/answer", "twilio") == "/twilio/media"
    assert stream_path("/plivo/answer", "plivo") == "/plivo/media"
