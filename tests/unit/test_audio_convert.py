"""Format-pair converters: choice per pair, passthrough, transcoding, resampling, bad input."""

from __future__ import annotations

import base64
import itertools
import warnings

import numpy as np
import numpy.typing as npt
import pytest

import bridge.audio
from bridge.audio import g711
from bridge.audio.convert import (
    AudioError,
    CarrierFormat,
    Converter,
    SessionFormat,
    decoded_len,
    make_converter,
    parse_carrier_encoding,
)
from bridge.audio.resample import filter_for
from bridge.audio.wavfile import ASSISTANT_PCM16, CALLER_ALAW, CALLER_ULAW, bundled

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PAIRS = list(itertools.product(CarrierFormat, SessionFormat))
TABLE = {CarrierFormat.ULAW: g711.ULAW_TO_LIN, CarrierFormat.ALAW: g711.ALAW_TO_LIN}
RECORDING = {CarrierFormat.ULAW: CALLER_ULAW, CarrierFormat.ALAW: CALLER_ALAW}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def caller_codes(carrier: CarrierFormat) -> bytes:
    return bundled(RECORDING[carrier]).data


def model_pcm() -> bytes:
    return bundled(ASSISTANT_PCM16).data


def encode_lin(carrier: CarrierFormat, samples: npt.NDArray[np.int16]) -> bytes:
    fn = audioop.lin2ulaw if carrier is CarrierFormat.ULAW else audioop.lin2alaw
    return fn(samples.astype(np.int16).tobytes(), 2)


def decode_codes(carrier: CarrierFormat, codes: bytes) -> npt.NDArray[np.float64]:
    return TABLE[carrier][np.frombuffer(codes, np.uint8)].astype(np.float64)


def frames(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- formats and the public surface -----------------------------------------------------------


def test_session_format_wire_and_sizes() -> None:
    assert SessionFormat.PCMU.wire == {"type": "audio/pcmu"}
    assert SessionFormat.PCMA.wire == {"type": "audio/pcma"}
    assert SessionFormat.PCM16.wire == {"type": "audio/pcm", "rate": 24000}
    assert [f.bytes_per_ms for f in SessionFormat] == [8, 8, 48]
    assert CarrierFormat.ULAW.bytes_per_ms == CarrierFormat.ALAW.bytes_per_ms == 8
    # a fresh dict each time: a caller mutating it cannot corrupt the next session config
    SessionFormat.PCM16.wire["rate"] = 16000
    assert SessionFormat.PCM16.wire["rate"] == 24000
    for fmt in SessionFormat:
        assert SessionFormat.from_wire(fmt.wire) is fmt
    for bad in [{"type": "audio/pcm", "rate": 16000}, {"type": "audio/opus"}, "pcm16", None]:
        with pytest.raises(AudioError) as info:
            SessionFormat.from_wire(bad)
        assert info.value.kind == "format"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("audio/x-mulaw", CarrierFormat.ULAW),
        ("audio/x-alaw", CarrierFormat.ALAW),
        ("PCMU", CarrierFormat.ULAW),
        ("PCMA", CarrierFormat.ALAW),
        ("audio/pcmu", CarrierFormat.ULAW),
        ("audio/pcma", CarrierFormat.ALAW),
        ("AUDIO/X-MULAW", CarrierFormat.ULAW),
        ("audio/x-mulaw;rate=8000", CarrierFormat.ULAW),
    ],
)
def test_parse_carrier_encoding(text: str, expected: CarrierFormat) -> None:
    assert parse_carrier_encoding(text) is expected


@pytest.mark.parametrize("text", ["", "audio/l16", "audio/x-mulaw;rate=16000", "opus", "x-mulaw-ish"])
def test_parse_carrier_encoding_rejects(text: str) -> None:
    with pytest.raises(AudioError) as info:
        parse_carrier_encoding(text)
    assert info.value.kind == "format"
    assert isinstance(info.value, ValueError)


def test_package_reexports() -> None:
    assert bridge.audio.make_converter is make_converter
    assert bridge.audio.AudioError is AudioError


@pytest.mark.parametrize("size", range(0, 40))
def test_decoded_len_matches_decoding(size: int) -> None:
    data = bytes(range(size))
    padded = b64(data)
    assert decoded_len(padded) == len(data)
    assert decoded_len(padded.rstrip("=")) == len(data)  # unpadded form too


@pytest.mark.parametrize(("carrier", "session"), PAIRS)
def test_converter_choice_per_pair(carrier: CarrierFormat, session: SessionFormat) -> None:
    conv: Converter = make_converter(carrier, session)
    assert conv.carrier is carrier and conv.session is session
    same_law = (carrier, session) in {
        (CarrierFormat.ULAW, SessionFormat.PCMU),
        (CarrierFormat.ALAW, SessionFormat.PCMA),
    }
    assert conv.passthrough is same_law


# --- passthrough ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("carrier", "session"),
    [(CarrierFormat.ULAW, SessionFormat.PCMU), (CarrierFormat.ALAW, SessionFormat.PCMA)],
)
def test_passthrough_returns_the_same_object_without_decoding(carrier: CarrierFormat, session: SessionFormat) -> None:
    conv = make_converter(carrier, session)
    payload = b64(caller_codes(carrier)[:160])
    assert conv.to_session(payload) is payload
    assert conv.to_carrier(payload) is payload
    # Not even validated as base64: proof that nothing was decoded.
    junk = "!!not base64!!"
    assert conv.to_session(junk) is junk
    conv.reset_to_carrier()


# --- transcoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("carrier", "session"),
    [(CarrierFormat.ULAW, SessionFormat.PCMA), (CarrierFormat.ALAW, SessionFormat.PCMU)],
)
def test_transcoding_matches_decode_then_encode(carrier: CarrierFormat, session: SessionFormat) -> None:
    conv = make_converter(carrier, session)
    codes = caller_codes(carrier)[:8000]
    lin = audioop.ulaw2lin(codes, 2) if carrier is CarrierFormat.ULAW else audioop.alaw2lin(codes, 2)
    expected = audioop.lin2alaw(lin, 2) if session is SessionFormat.PCMA else audioop.lin2ulaw(lin, 2)
    got = b"".join(unb64(conv.to_session(b64(f))) for f in frames(codes, 160))
    assert got == expected
    # and back: session codes → carrier codes is the inverse mapping's decode-then-encode
    back = b"".join(unb64(conv.to_carrier(b64(f))) for f in frames(expected, 160))
    back_lin = audioop.alaw2lin(expected, 2) if session is SessionFormat.PCMA else audioop.ulaw2lin(expected, 2)
    assert back == encode_lin(carrier, np.frombuffer(back_lin, np.int16))


# --- resampling through the converter ---------------------------------------------------------


@pytest.mark.parametrize("carrier", list(CarrierFormat))
def test_resampling_sizes_per_20ms_frame(carrier: CarrierFormat) -> None:
    conv = make_converter(carrier, SessionFormat.PCM16)
    for frame in frames(caller_codes(carrier)[:1600], 160):
        assert len(unb64(conv.to_session(b64(frame)))) == 960  # 480 samples × 2 bytes
    for frame in frames(model_pcm()[:9600], 960):
        assert len(unb64(conv.to_carrier(b64(frame)))) == 160


@pytest.mark.parametrize("carrier", list(CarrierFormat))
@pytest.mark.parametrize("chunk_samples", [480, 168, 792, 1, 5, 4801])  # 20 ms, 7 ms, 33 ms, odd ones
def test_to_carrier_in_arbitrary_deltas_matches_one_shot(carrier: CarrierFormat, chunk_samples: int) -> None:
    pcm = model_pcm()[: 2 * 24000]
    whole = make_converter(carrier, SessionFormat.PCM16, max_payload_bytes=10**7).to_carrier(b64(pcm))
    conv = make_converter(carrier, SessionFormat.PCM16)
    parts = [conv.to_carrier(b64(f)) for f in frames(pcm, 2 * chunk_samples)]
    streamed = b"".join(unb64(p) for p in parts if p)
    one_shot = unb64(whole)
    assert len(streamed) == len(one_shot) == -(-len(pcm) // 2 // 3)
    # Same codes, except where float rounding moved a sample across a code boundary (1 LSB): then
    # the codes are neighbours on the codec's level ladder.
    levels = np.unique(TABLE[carrier].astype(np.int64))
    rank_a = np.searchsorted(levels, decode_codes(carrier, streamed).astype(np.int64))
    rank_b = np.searchsorted(levels, decode_codes(carrier, one_shot).astype(np.int64))
    assert np.abs(rank_a - rank_b).max() <= 1
    assert np.mean(rank_a == rank_b) >= 0.999


def test_to_carrier_may_return_empty_while_holding_phase() -> None:
    conv = make_converter(CarrierFormat.ULAW, SessionFormat.PCM16)
    one_sample = b64(b"\x10\x00")
    results = [conv.to_carrier(one_sample) for _ in range(6)]
    assert [len(unb64(r)) if r else 0 for r in results] == [1, 0, 0, 1, 0, 0]


@pytest.mark.parametrize("carrier", list(CarrierFormat))
@pytest.mark.parametrize("chunk_codes", [160, 56, 264, 1, 7])
def test_to_session_in_odd_chunks_matches_one_shot(carrier: CarrierFormat, chunk_codes: int) -> None:
    codes = caller_codes(carrier)[:8000]
    whole = np.frombuffer(unb64(make_converter(carrier, SessionFormat.PCM16).to_session(b64(codes))), "<i2")
    conv = make_converter(carrier, SessionFormat.PCM16)
    streamed = np.frombuffer(b"".join(unb64(conv.to_session(b64(f))) for f in frames(codes, chunk_codes)), "<i2")
    assert len(streamed) == len(whole) == 3 * len(codes)
    assert np.abs(streamed.astype(np.int64) - whole.astype(np.int64)).max() <= 1


def inband_snr_db(reference: npt.NDArray[np.float64], test: npt.NDArray[np.float64]) -> float:
    """SNR of ``test`` against ``reference`` counting only 300–3400 Hz (the telephone band)."""
    freqs = np.fft.rfftfreq(len(reference), 1 / 8000)
    band = (freqs >= 300) & (freqs <= 3400)
    signal = np.abs(np.fft.rfft(reference))[band] ** 2
    noise = np.abs(np.fft.rfft(test - reference))[band] ** 2
    return float(10 * np.log10(signal.sum() / noise.sum()))


@pytest.mark.parametrize("carrier", list(CarrierFormat))
def test_speech_round_trip_through_24k_costs_no_more_than_g711_itself(carrier: CarrierFormat) -> None:
    # An off-grid 8 kHz speech signal (the caller recording at 0.9× level, so it is not already on
    # the codec's levels). G.711's own quantisation noise: encode → decode. The bridge path:
    # encode → [to_session → 24 kHz → to_carrier] → decode, aligned for the 2 × 2 ms delay.
    source = np.rint(0.9 * decode_codes(carrier, caller_codes(carrier)))
    codes = encode_lin(carrier, source.astype(np.int16))
    g711_only = decode_codes(carrier, codes)
    conv = make_converter(carrier, SessionFormat.PCM16)
    out = b"".join(unb64(conv.to_carrier(conv.to_session(b64(f)))) for f in frames(codes, 160))
    through_24k = decode_codes(carrier, out)
    delay = 2 * filter_for(8000, 24000).group_delay // 3  # 32 samples at 8 kHz = 4 ms round trip
    assert delay * 1000 / 8000 == 4.0
    n = len(source) - delay
    snr_g711 = inband_snr_db(source[:n], g711_only[:n])
    snr_path = inband_snr_db(source[:n], through_24k[delay : delay + n])
    assert snr_g711 > 30.0  # sanity: the measurement sees the codec's noise, not a silent signal
    assert snr_path >= snr_g711 - 1.0
    # The alignment is the measured one: one sample off and the SNR collapses.
    assert inband_snr_db(source[: n - 1], through_24k[delay + 1 : delay + n]) < snr_g711 - 10.0


@pytest.mark.parametrize("carrier", list(CarrierFormat))
def test_reset_to_carrier_starts_the_next_response_clean(carrier: CarrierFormat) -> None:
    pcm = model_pcm()
    frame = b64(pcm[48000 : 48000 + 960])
    expected = make_converter(carrier, SessionFormat.PCM16).to_carrier(frame)
    conv = make_converter(carrier, SessionFormat.PCM16)
    conv.to_carrier(b64(pcm[:962]))  # 481 samples: loud history and a non-zero phase
    assert conv.to_carrier(frame) != expected  # the history matters…
    conv.reset_to_carrier()
    assert conv.to_carrier(frame) == expected  # …and the reset forgot it


# --- bad input --------------------------------------------------------------------------------

BAD_BASE64 = ["abc", "ab$d", "Zm9v\nYmFy", "Zm9v YmFy", "éé==", "Zg==Zg==", "====", "Zm9vY"]


def good_frame_for(conv: Converter, direction: str, index: int) -> str:
    if direction == "to_carrier" and conv.session is SessionFormat.PCM16:
        return b64(model_pcm()[960 * index : 960 * index + 962])  # 481 samples: moves the phase
    return b64(caller_codes(conv.carrier)[160 * index : 160 * index + 160])


def bad_payloads(conv: Converter, direction: str) -> list[tuple[str, str]]:
    bad: list[tuple[str, str]] = [("", "empty"), ("A" * 4000, "too_large")]
    if not conv.passthrough:
        bad += [(text, "base64") for text in BAD_BASE64]
    if direction == "to_carrier" and conv.session is SessionFormat.PCM16:
        bad.append((b64(b"\x01\x02\x03"), "odd_length"))
    return bad


@pytest.mark.parametrize(("carrier", "session"), PAIRS)
@pytest.mark.parametrize("direction", ["to_session", "to_carrier"])
def test_bad_input_raises_and_leaves_the_converter_intact(
    carrier: CarrierFormat, session: SessionFormat, direction: str
) -> None:
    clean = make_converter(carrier, session, max_payload_bytes=2000)
    noisy = make_converter(carrier, session, max_payload_bytes=2000)
    for i in range(4):
        good = good_frame_for(clean, direction, i)
        expected = getattr(clean, direction)(good)
        for payload, kind in bad_payloads(noisy, direction):
            with pytest.raises(AudioError) as info:
                getattr(noisy, direction)(payload)
            assert info.value.kind == kind, payload
        # Same output as a converter that never saw the bad frames: no state was touched.
        assert getattr(noisy, direction)(good) == expected


@pytest.mark.parametrize(("carrier", "session"), PAIRS)
def test_non_string_payload_is_rejected(carrier: CarrierFormat, session: SessionFormat) -> None:
    conv = make_converter(carrier, session)
    for payload in [None, 123, b"AAAA"]:
        with pytest.raises(AudioError) as info:
            conv.to_session(payload)  # type: ignore[arg-type]
        assert info.value.kind == "base64"


def test_size_limit_is_checked_before_decoding() -> None:
    conv = make_converter(CarrierFormat.ULAW, SessionFormat.PCM16, max_payload_bytes=160)
    assert conv.to_session(b64(bytes(160)))  # exactly at the limit is fine
    with pytest.raises(AudioError) as info:
        conv.to_session("!" * 400)  # would be invalid base64 too; size wins, nothing decoded
    assert info.value.kind == "too_large"


def test_make_converter_rejects_non_formats() -> None:
    with pytest.raises(AudioError) as info:
        make_converter("audio/x-mulaw", SessionFormat.PCMU)  # type: ignore[arg-type]
    assert info.value.kind == "format"
