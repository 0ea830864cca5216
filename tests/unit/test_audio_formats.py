"""The table of audio formats: rows, derived facts, session formats and the carriers' codec names."""

from __future__ import annotations

import dataclasses

import pytest

import bridge.audio
from bridge.audio import (
    ALAW_8K,
    CARRIER_FORMATS,
    L16_8K,
    L16_16K,
    L16_24K,
    ULAW_8K,
    AudioError,
    AudioFormat,
    Encoding,
    SessionFormat,
    parse_encoding,
)


def test_the_table_rows_and_their_facts() -> None:
    rows = [(f.id, f.encoding, f.sample_rate, f.sample_width, f.bytes_per_ms) for f in CARRIER_FORMATS]
    assert rows == [
        ("ulaw_8k", Encoding.ULAW, 8000, 1, 8),
        ("alaw_8k", Encoding.ALAW, 8000, 1, 8),
        ("l16_8k", Encoding.L16, 8000, 2, 16),
        ("l16_16k", Encoding.L16, 16000, 2, 32),
        ("l16_24k", Encoding.L16, 24000, 2, 48),
    ]
    assert list(CARRIER_FORMATS) == [ULAW_8K, ALAW_8K, L16_8K, L16_16K, L16_24K]
    assert str(L16_16K) == "l16_16k"


def test_formats_are_immutable_values() -> None:
    same = AudioFormat(Encoding.L16, 16000)
    assert same == L16_16K and hash(same) == hash(L16_16K)
    plain = AudioFormat("l16", 16000)  # type: ignore[arg-type]
    assert plain == L16_16K and plain.encoding is Encoding.L16 and plain.bytes_per_ms == 32
    assert len({*CARRIER_FORMATS, same}) == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        L16_16K.sample_rate = 8000  # type: ignore[misc]


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [
        (Encoding.ULAW, 16000),
        (Encoding.ALAW, 24000),
        (Encoding.L16, 22050),
        (Encoding.L16, 48000),
        ("opus", 8000),
        (None, 8000),
        (Encoding.L16, 16000.0),
        (Encoding.L16, True),
        (Encoding.L16, [16000]),
    ],
)
def test_only_rows_of_the_table_can_be_built(encoding: Encoding, rate: int) -> None:
    with pytest.raises(AudioError) as info:
        AudioFormat(encoding, rate)
    assert info.value.kind == "format"


def test_from_id_round_trips_and_rejects_unknown_ids() -> None:
    for fmt in CARRIER_FORMATS:
        assert AudioFormat.from_id(fmt.id) is fmt
    for bad in ["l16_22k", "ULAW_8K", "", None]:
        with pytest.raises(AudioError) as info:
            AudioFormat.from_id(bad)  # type: ignore[arg-type]
        assert info.value.kind == "format"


def test_session_formats() -> None:
    assert [f.value for f in SessionFormat] == ["pcmu", "pcma", "pcm16"]  # config names
    assert [f.audio for f in SessionFormat] == [ULAW_8K, ALAW_8K, L16_24K]
    assert SessionFormat.PCM16.audio == L16_24K  # an L16 24 kHz carrier is a pcm16 passthrough
    assert SessionFormat.PCMU.wire == {"type": "audio/pcmu"}
    assert SessionFormat.PCMA.wire == {"type": "audio/pcma"}
    assert SessionFormat.PCM16.wire == {"type": "audio/pcm", "rate": 24000}
    assert [f.bytes_per_ms for f in SessionFormat] == [8, 8, 48]
    assert [f.sample_rate for f in SessionFormat] == [8000, 8000, 24000]
    # a fresh dict each time: a caller mutating it cannot corrupt the next session config
    SessionFormat.PCM16.wire["rate"] = 16000
    assert SessionFormat.PCM16.wire["rate"] == 24000
    for fmt in SessionFormat:
        assert SessionFormat.from_wire(fmt.wire) is fmt
        assert SessionFormat.from_config(fmt.value) is fmt
    for bad in [{"type": "audio/pcm", "rate": 16000}, {"type": "audio/opus"}, "pcm16", None]:
        with pytest.raises(AudioError) as info:
            SessionFormat.from_wire(bad)
        assert info.value.kind == "format"
    for name in ["PCMU", "g711_ulaw", "", None]:
        with pytest.raises(AudioError):
            SessionFormat.from_config(name)


def test_session_config_names_match_the_config_schema() -> None:
    from typing import get_args

    from bridge.config import AudioFormatName

    assert set(get_args(AudioFormatName)) == {f.value for f in SessionFormat}


@pytest.mark.parametrize(
    ("name", "rate", "expected"),
    [
        # Twilio, SignalWire (Twilio's format)
        ("audio/x-mulaw", None, ULAW_8K),
        ("audio/x-mulaw", 8000, ULAW_8K),
        ("audio/x-alaw", 8000, ALAW_8K),
        # Telnyx: codec names and a separate sample rate
        ("PCMU", 8000, ULAW_8K),
        ("PCMA", None, ALAW_8K),
        ("L16", 16000, L16_16K),
        ("L16", 24000, L16_24K),
        ("l16", 8000, L16_8K),
        # MIME spellings with a rate parameter (Vonage, Plivo, Exotel's extension guide)
        ("audio/pcmu", None, ULAW_8K),
        ("audio/pcma", None, ALAW_8K),
        ("audio/l16;rate=16000", None, L16_16K),
        ("audio/l16;rate=24000", None, L16_24K),
        ("audio/x-l16;rate=8000", None, L16_8K),
        ("audio/x-l16; rate=16000", 16000, L16_16K),
        ("audio/L16;rate=8000", None, L16_8K),
        ("audio/x-mulaw;rate=8000", None, ULAW_8K),
        ("AUDIO/X-MULAW", None, ULAW_8K),
        # Exotel: raw/slin with the rate apart
        ("audio/x-raw", 16000, L16_16K),
        ("audio/x-raw", 24000, L16_24K),
        ("slin", None, L16_8K),
        ("slin16", None, L16_16K),
        # SignalWire's codec attribute
        ("PCMU@8000h", None, ULAW_8K),
        ("L16@16000h", None, L16_16K),
        ("L16@24000h", 24000, L16_24K),
    ],
)
def test_parse_encoding(name: str, rate: int | None, expected: AudioFormat) -> None:
    assert parse_encoding(name, rate) == expected


@pytest.mark.parametrize(
    ("name", "rate"),
    [
        ("", None),
        ("opus", 8000),
        ("G722", 16000),
        ("audio/x-mulaw", 16000),  # G.711 is 8 kHz
        ("audio/x-mulaw;rate=16000", None),
        ("L16", None),  # L16 needs a rate
        ("audio/x-raw", None),
        ("L16", 22050),  # Telnyx offers it; not in the table
        ("L16", 48000),
        ("audio/l16;rate=16000", 8000),  # rates disagree
        ("slin", 16000),
        ("audio/l16;rate=abc", None),
        ("audio/l16;rate=", None),
        ("L16@16000x", None),
        ("audio/l16;rate=١٦٠٠٠", None),  # non-ASCII digits
        ("x-mulaw-ish", None),
        ("audio/x-mulaw", True),
        ("audio/x-mulaw", "8000"),
        (None, 8000),
        ("a" * 1000, None),
    ],
)
def test_parse_encoding_rejects(name: str, rate: int | None) -> None:
    with pytest.raises(AudioError) as info:
        parse_encoding(name, rate)
    assert info.value.kind == "format"
    assert isinstance(info.value, ValueError)
    assert len(str(info.value)) <= 200


def test_package_reexports() -> None:
    from bridge.audio import convert, formats, payload

    assert bridge.audio.make_converter is convert.make_converter
    assert bridge.audio.AudioError is formats.AudioError
    assert bridge.audio.decoded_len is payload.decoded_len
    assert set(bridge.audio.__all__) <= set(dir(bridge.audio))
