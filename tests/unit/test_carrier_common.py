"""What the carrier dialects share: field reading, L16 byte order, HTTP auth pieces, stream tokens."""

from __future__ import annotations

import base64
import struct

import pytest

from bridge.carrier import streamtoken
from bridge.carrier.base import CarrierError, Dtmf, media_frames
from bridge.carrier.common import (
    basic_authorization,
    basic_credentials,
    bearer_token,
    dial_target,
    dtmf,
    int_or_none,
    json_object,
    port_variants,
    str_map,
    swap16,
    swap16_b64,
    text,
)
from bridge.carrier.twilio import TwilioWriter

# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (8000, 8000),
        ("8000", 8000),
        (" 16 ", 16),
        ("x", None),
        (True, None),
        (None, None),
        (1.5, None),
        ("9" * 30, None),
    ],
)
def test_int_or_none_takes_numbers_and_numeric_strings(value: object, expected: int | None) -> None:
    assert int_or_none(value) == expected


def test_text_of_ids() -> None:
    assert (text("a"), text(12), text(None), text(True), text({"a": 1})) == ("a", "12", "", "", "")


def test_str_map_keeps_strings_and_dumps_the_rest() -> None:
    assert str_map({"a": "x", "n": 3, "b": False}) == {"a": "x", "n": "3", "b": "false"}
    assert str_map(["a"]) == {}


@pytest.mark.parametrize("message", ["{", "[1]", '"x"', b"\xff\xfe", "[" * 100_000])
def test_json_object_refuses_junk_without_raising(message: str | bytes) -> None:
    assert isinstance(json_object(message), CarrierError)


@pytest.mark.parametrize(("digit", "expected"), [("5", "5"), (7, "7"), ("#", "#"), ("D", "D")])
def test_dtmf_digits(digit: object, expected: str) -> None:
    assert dtmf(digit) == Dtmf(expected)


@pytest.mark.parametrize("digit", ["55", "x", "", None, 12, True, -1])
def test_dtmf_junk(digit: object) -> None:
    ev = dtmf(digit)
    assert isinstance(ev, CarrierError) and ev.kind == "invalid_dtmf"


# --- L16 byte order ---------------------------------------------------------------------------


def test_swap16_turns_big_endian_samples_into_little_endian() -> None:
    samples = [0, 1, -1, 32767, -32768, 258]
    big = struct.pack(f">{len(samples)}h", *samples)
    assert swap16(big) == struct.pack(f"<{len(samples)}h", *samples)
    assert swap16(swap16(big)) == big


def test_swap16_drops_an_odd_last_byte() -> None:
    assert swap16(b"\x01\x02\x03") == b"\x02\x01"


def test_swap16_b64_round_trip_and_refusals() -> None:
    raw = struct.pack(">3h", 1, 2, 3)
    out = swap16_b64(base64.b64encode(raw).decode())
    assert out is not None and base64.b64decode(out) == struct.pack("<3h", 1, 2, 3)
    assert swap16_b64("not base64!") is None
    assert swap16_b64(base64.b64encode(b"abc").decode()) is None  # not whole samples


# --- HTTP pieces --------------------------------------------------------------------------------


def test_basic_credentials_round_trip() -> None:
    assert basic_credentials(basic_authorization("key", "to:ken")) == ("key", "to:ken")
    assert basic_credentials("basic " + base64.b64encode(b"a:b").decode()) == ("a", "b")


NO_COLON = "Basic " + base64.b64encode(b"nocolon").decode()


@pytest.mark.parametrize("value", [None, "", "Bearer abc", "Basic !!!", NO_COLON])
def test_basic_credentials_junk(value: str | None) -> None:
    assert basic_credentials(value) is None


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer  x ") == "x"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_port_variants() -> None:
    assert port_variants("https://h.example/a?b=1") == ["https://h.example/a?b=1", "https://h.example:443/a?b=1"]
    assert port_variants("https://h.example:443/a") == ["https://h.example:443/a", "https://h.example/a"]
    assert port_variants("http://h.example:8080/a") == ["http://h.example:8080/a"]
    assert port_variants("https://h.example:99999/a") == ["https://h.example:99999/a"]  # a bad port: as given


def test_dial_target() -> None:
    assert dial_target("+15551234567") == ("number", "+15551234567")
    assert dial_target("sip:desk@pbx.example") == ("sip", "sip:desk@pbx.example")
    assert dial_target("client:alice") == ("client", "alice")


# --- stream tokens --------------------------------------------------------------------------------

KEY = b"a long random stream secret"


def test_stream_token_valid_for_its_scope_only() -> None:
    token = streamtoken.issue(KEY, "telnyx", "v3:call-1")
    assert streamtoken.check(KEY, "telnyx", token) == "v3:call-1"
    assert streamtoken.check(KEY, "signalwire", token) is None
    assert streamtoken.check(b"another key", "telnyx", token) is None
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def test_stream_token_tampering_is_refused() -> None:
    token = streamtoken.issue(KEY, "telnyx", "call-1")
    version, sub, mac = token.split(".")
    other_sub = base64.urlsafe_b64encode(b"call-2").rstrip(b"=").decode()
    forged = [
        f"{version}.{other_sub}.{mac}",  # another call under the same MAC
        f"{version}.{sub}.{mac[:-2]}AA",  # a changed MAC
        f"b2.{sub}.{mac}",  # an unknown version
        f"{version}.{sub}.{mac[:5]}!{mac[5:]}",  # junk characters base64 would skip
        f"{version}.{sub}",
        "",
        "x" * 5000,
    ]
    for bad in forged:
        assert streamtoken.check(KEY, "telnyx", bad) is None, bad
    assert streamtoken.check(KEY, "telnyx", None) is None


def test_stream_token_for_an_empty_subject() -> None:
    assert streamtoken.check(KEY, "telnyx", streamtoken.issue(KEY, "telnyx", "")) == ""


# --- media_frames --------------------------------------------------------------------------


def test_media_frames_default_is_one_media_frame() -> None:
    writer = TwilioWriter("MZ1")
    assert media_frames(writer, "AAAA") == (writer.media("AAAA"),)
