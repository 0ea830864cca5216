"""Twilio Media Streams dialect: parsing every message shape, and the frames we write back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.carrier.base import CarrierError, Connected, Dtmf, MarkEcho, Media, Start, Stop
from bridge.carrier.twilio import TwilioWriter, parse

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"


def _j(obj: Any) -> str:
    return json.dumps(obj)


def _start(**start: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accountSid": "AC0123456789abcdef0123456789abcdef",
        "streamSid": SID,
        "callSid": "CA0123456789abcdef0123456789abcdef",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
    }
    body.update(start)
    return {"event": "start", "sequenceNumber": "1", "start": body, "streamSid": SID}


def _error(text: str | bytes) -> CarrierError:
    ev = parse(text)
    assert isinstance(ev, CarrierError), ev
    assert ev.reason  # always says why
    return ev


# --- messages from Twilio -----------------------------------------------------------------


def test_connected() -> None:
    ev = parse('{ "event": "connected", "protocol": "Call", "version": "1.0.0" }')
    assert ev == Connected(protocol="Call", version="1.0.0")


def test_start_documented_example() -> None:
    ev = parse(_j(_start()))
    assert ev == Start(
        stream_sid=SID,
        call_sid="CA0123456789abcdef0123456789abcdef",
        account_sid="AC0123456789abcdef0123456789abcdef",
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
        custom_parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        tracks=("inbound",),
    )


def test_start_media_format_as_strings_and_other_encoding() -> None:
    ev = parse(_j(_start(mediaFormat={"encoding": "audio/x-alaw", "sampleRate": "8000", "channels": "1"})))
    assert isinstance(ev, Start)
    assert (ev.encoding, ev.sample_rate, ev.channels) == ("audio/x-alaw", 8000, 1)


def test_start_without_media_format_defaults_to_twilio_mulaw() -> None:
    msg = _start()
    del msg["start"]["mediaFormat"]
    ev = parse(_j(msg))
    assert isinstance(ev, Start)
    assert (ev.encoding, ev.sample_rate, ev.channels) == ("audio/x-mulaw", 8000, 1)


def test_start_custom_parameters_non_strings_become_strings() -> None:
    ev = parse(_j(_start(customParameters={"n": 3, "flag": True, "s": "x"})))
    assert isinstance(ev, Start)
    assert ev.custom_parameters == {"n": "3", "flag": "true", "s": "x"}
    assert all(isinstance(v, str) for v in ev.custom_parameters.values())


def test_start_without_custom_parameters_or_tracks() -> None:
    msg = _start()
    del msg["start"]["customParameters"]
    del msg["start"]["tracks"]
    ev = parse(_j(msg))
    assert isinstance(ev, Start)
    assert ev.custom_parameters == {}
    assert ev.tracks == ("inbound",)


def test_start_stream_sid_only_at_top_level() -> None:
    msg = _start()
    del msg["start"]["streamSid"]
    ev = parse(_j(msg))
    assert isinstance(ev, Start)
    assert ev.stream_sid == SID


def test_media_twilio_strings() -> None:
    msg = {
        "event": "media",
        "sequenceNumber": "4",
        "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "no+JhoaJjpzS"},
        "streamSid": SID,
    }
    assert parse(_j(msg)) == Media(payload="no+JhoaJjpzS", timestamp_ms=5)


def test_media_numeric_counters_from_other_carriers() -> None:
    msg = {"event": "media", "sequenceNumber": 4, "media": {"chunk": 2, "timestamp": 120, "payload": "AAAA"}}
    assert parse(_j(msg)) == Media(payload="AAAA", timestamp_ms=120)


def test_media_bad_or_missing_timestamp_keeps_the_audio() -> None:
    assert parse(_j({"event": "media", "media": {"payload": "AAAA", "timestamp": "soon"}})) == Media("AAAA", None)
    assert parse(_j({"event": "media", "media": {"payload": "AAAA"}})) == Media("AAAA", None)
    assert parse(_j({"event": "media", "media": {"payload": "AAAA", "timestamp": True}})) == Media("AAAA", None)


def test_media_payload_is_passed_through_untouched() -> None:
    payload = "/////w==" * 27
    ev = parse(_j({"event": "media", "media": {"payload": payload, "timestamp": "20"}}))
    assert isinstance(ev, Media)
    assert ev.payload == payload


def test_media_as_bytes() -> None:
    assert parse(b'{"event":"media","media":{"payload":"AAAA","timestamp":"0"}}') == Media("AAAA", 0)


def test_mark() -> None:
    msg = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "my label"}}
    assert parse(_j(msg)) == MarkEcho(name="my label")


@pytest.mark.parametrize("digit", ["0", "1", "9", "*", "#", "A", "D"])
def test_dtmf(digit: str) -> None:
    msg = {"event": "dtmf", "streamSid": SID, "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": digit}}
    assert parse(_j(msg)) == Dtmf(digit=digit)


def test_stop() -> None:
    msg = {
        "event": "stop",
        "sequenceNumber": "5",
        "stop": {"accountSid": "ACxx", "callSid": "CA123"},
        "streamSid": SID,
    }
    assert parse(_j(msg)) == Stop(call_sid="CA123")


def test_stop_without_body() -> None:
    assert parse('{"event":"stop"}') == Stop(call_sid=None)


# --- malformed messages -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "not json", '{"event": "media"', b"\xff\xfe\x00garbage"])
def test_invalid_json(text: str | bytes) -> None:
    ev = _error(text)
    assert ev.kind == "invalid_json"
    assert not ev.fatal


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    assert _error("[" * 100_000).kind == "invalid_json"


@pytest.mark.parametrize("text", ["[]", '"media"', "42", "null", '[{"event": "media"}]'])
def test_non_object_json(text: str) -> None:
    ev = _error(text)
    assert ev.kind == "invalid_json"
    assert "object" in ev.reason


def test_missing_event() -> None:
    ev = _error('{"media": {"payload": "AAAA"}}')
    assert ev.kind == "missing_field"
    assert "event" in ev.reason


def test_unknown_event() -> None:
    ev = _error('{"event": "transcription"}')
    assert ev.kind == "unknown_event"
    assert "transcription" in ev.reason
    assert not ev.fatal


def test_unknown_event_reason_is_bounded() -> None:
    ev = _error(_j({"event": "x" * 10_000}))
    assert ev.kind == "unknown_event"
    assert len(ev.reason) < 200


@pytest.mark.parametrize(
    "media",
    [None, "AAAA", {}, {"payload": None}, {"payload": 123}, {"payload": ["AAAA"]}],
)
def test_media_without_string_payload(media: Any) -> None:
    msg: dict[str, Any] = {"event": "media"}
    if media is not None:
        msg["media"] = media
    ev = _error(_j(msg))
    assert ev.kind == "missing_field"
    assert not ev.fatal


def test_media_on_outbound_track() -> None:
    ev = _error(_j({"event": "media", "media": {"track": "outbound", "payload": "AAAA"}}))
    assert ev.kind == "unexpected_track"
    assert "outbound" in ev.reason
    assert not ev.fatal


@pytest.mark.parametrize("mark", [None, {}, {"name": None}, {"name": 7}, "label"])
def test_mark_without_name(mark: Any) -> None:
    msg: dict[str, Any] = {"event": "mark"}
    if mark is not None:
        msg["mark"] = mark
    ev = _error(_j(msg))
    assert ev.kind == "missing_field"
    assert "name" in ev.reason


@pytest.mark.parametrize("digit", ["", "12", "x", "E", 10, -1, True, None, "١"])
def test_dtmf_bad_digit(digit: Any) -> None:
    ev = _error(_j({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": digit}}))
    assert ev.kind == "invalid_dtmf"
    assert not ev.fatal


def test_dtmf_digit_as_a_number_is_the_digit() -> None:
    # Twilio sends strings; a Twilio-style carrier sending the number 5 still means key 5.
    assert parse(_j({"event": "dtmf", "dtmf": {"digit": 5}})) == Dtmf("5")


def test_dtmf_without_body() -> None:
    assert _error('{"event": "dtmf"}').kind == "invalid_dtmf"


def test_start_without_stream_sid_is_fatal() -> None:
    msg = _start()
    del msg["start"]["streamSid"]
    del msg["streamSid"]
    ev = _error(_j(msg))
    assert ev.kind == "missing_field"
    assert ev.fatal
    assert "streamSid" in ev.reason


@pytest.mark.parametrize("sid", ["", 42, None])
def test_start_with_unusable_stream_sid_is_fatal(sid: Any) -> None:
    msg = _start(streamSid=sid)
    msg["streamSid"] = sid
    ev = _error(_j(msg))
    assert ev.fatal


def test_start_without_start_object_is_fatal() -> None:
    ev = _error('{"event": "start", "streamSid": "MZ1"}')
    assert ev.fatal
    assert ev.kind == "missing_field"


@pytest.mark.parametrize(
    "fmt",
    [
        {"encoding": 7, "sampleRate": 8000, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": "eight thousand", "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": "mono"},
        {"encoding": "audio/x-mulaw", "sampleRate": None, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 0, "channels": 1},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 0},
        {"encoding": "audio/x-mulaw", "sampleRate": -8000, "channels": 1},
    ],
)
def test_start_with_unusable_media_format_is_fatal(fmt: dict[str, Any]) -> None:
    ev = _error(_j(_start(mediaFormat=fmt)))
    assert ev.kind == "invalid_format"
    assert ev.fatal


def test_only_start_errors_are_fatal() -> None:
    bad = ["x", "[]", "{}", '{"event":"nope"}', '{"event":"media"}', '{"event":"mark"}', '{"event":"dtmf"}']
    for text in bad:
        assert not _error(text).fatal, text


# --- frames to Twilio ---------------------------------------------------------------------


def test_writer_media_has_exactly_the_documented_fields() -> None:
    w = TwilioWriter(SID)
    frame = w.media("a3242sa+/==")
    assert json.loads(frame) == {"event": "media", "streamSid": SID, "media": {"payload": "a3242sa+/=="}}


def test_writer_mark_has_exactly_the_documented_fields() -> None:
    w = TwilioWriter(SID)
    assert json.loads(w.mark("r1:3_a-b")) == {"event": "mark", "streamSid": SID, "mark": {"name": "r1:3_a-b"}}


def test_writer_clear_has_exactly_the_documented_fields() -> None:
    assert json.loads(TwilioWriter(SID).clear()) == {"event": "clear", "streamSid": SID}


def test_writer_frames_are_repeatable() -> None:
    w = TwilioWriter(SID)
    assert w.media("AAAA") == w.media("AAAA")
    assert json.loads(w.media("BBBB"))["media"]["payload"] == "BBBB"


@pytest.mark.parametrize(
    "sid", ['MZ"quoted"', "MZ\\back\\slash", 'MZ"},"event":"clear', "MZ\nnewline\u2028", "MZ\u00e9"]
)
def test_writer_escapes_a_hostile_stream_sid(sid: str) -> None:
    w = TwilioWriter(sid)
    media = json.loads(w.media("AAAA"))
    assert media == {"event": "media", "streamSid": sid, "media": {"payload": "AAAA"}}
    assert json.loads(w.mark("m1")) == {"event": "mark", "streamSid": sid, "mark": {"name": "m1"}}
    assert json.loads(w.clear()) == {"event": "clear", "streamSid": sid}


def test_writer_frames_round_trip_through_parse() -> None:
    w = TwilioWriter(SID)
    # Twilio echoes marks with the same shape; media back from the far side parses as inbound audio.
    assert parse(w.mark("m7")) == MarkEcho("m7")
    assert parse(w.media("AAAA")) == Media("AAAA", None)
