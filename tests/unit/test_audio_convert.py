"""Format-pair converters for every carrier format × session format: the choice per pair,
passthrough, transcoding, codec, resampling, state and bad input."""

from __future__ import annotations

import base64
import itertools
import warnings
from functools import cache

import numpy as np
import numpy.typing as npt
import pytest

from bridge.audio import (
    ALAW_8K,
    CARRIER_FORMATS,
    L16_8K,
    L16_16K,
    L16_24K,
    ULAW_8K,
    AudioError,
    AudioFormat,
    Converter,
    Encoding,
    SessionFormat,
    g711,
    make_converter,
    max_payload_limit,
)
from bridge.audio.payload import MAX_EVENT_BYTES
from bridge.audio.resample import Resampler, filter_for
from bridge.audio.wavfile import ASSISTANT_PCM16, CALLER_ALAW, CALLER_ULAW, bundled
from bridge.realtime.events import append_audio

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PAIRS = list(itertools.product(CARRIER_FORMATS, SessionFormat))
P = SessionFormat
METHODS = {
    ULAW_8K: {P.PCMU: "passthrough", P.PCMA: "transcode", P.PCM16: "resample"},
    ALAW_8K: {P.PCMU: "transcode", P.PCMA: "passthrough", P.PCM16: "resample"},
    L16_8K: {P.PCMU: "codec", P.PCMA: "codec", P.PCM16: "resample"},
    L16_16K: {P.PCMU: "resample", P.PCMA: "resample", P.PCM16: "resample"},
    L16_24K: {P.PCMU: "resample", P.PCMA: "resample", P.PCM16: "passthrough"},
}
TABLE = {Encoding.ULAW: g711.ULAW_TO_LIN, Encoding.ALAW: g711.ALAW_TO_LIN}


def pair_id(pair: tuple[AudioFormat, SessionFormat]) -> str:
    return f"{pair[0].id}-{pair[1].value}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def encode(fmt: AudioFormat, samples: npt.NDArray[np.integer]) -> bytes:
    """Linear samples (at fmt's rate) → bytes in ``fmt``."""
    lin = np.clip(samples, -32768, 32767).astype(np.int16)
    if fmt.encoding is Encoding.ULAW:
        return audioop.lin2ulaw(lin.tobytes(), 2)
    if fmt.encoding is Encoding.ALAW:
        return audioop.lin2alaw(lin.tobytes(), 2)
    return lin.astype("<i2").tobytes()


def decode(fmt: AudioFormat, data: bytes) -> npt.NDArray[np.float64]:
    """Bytes in ``fmt`` → linear samples (float64)."""
    if fmt.encoding is Encoding.L16:
        return np.frombuffer(data, "<i2").astype(np.float64)
    return TABLE[fmt.encoding][np.frombuffer(data, np.uint8)].astype(np.float64)


@cache
def caller_audio(fmt: AudioFormat) -> bytes:
    """Two seconds of the caller recording as a carrier in ``fmt`` sends it."""
    if fmt == ULAW_8K:
        return bundled(CALLER_ULAW).data[:16000]
    if fmt == ALAW_8K:
        return bundled(CALLER_ALAW).data[:16000]
    lin = g711.ULAW_TO_LIN[np.frombuffer(bundled(CALLER_ULAW).data[:16000], np.uint8)]
    if fmt.sample_rate != 8000:
        lin = Resampler(8000, fmt.sample_rate, capacity=len(lin)).process(lin)
    return encode(fmt, lin)


@cache
def model_audio(session: SessionFormat) -> bytes:
    """Two seconds of the assistant recording as the model sends it in ``session``'s format."""
    pcm = np.frombuffer(bundled(ASSISTANT_PCM16).data, "<i2")[:48000]
    if session is SessionFormat.PCM16:
        return pcm.tobytes()
    return encode(session.audio, Resampler(24000, 8000, capacity=len(pcm)).process(pcm))


def frames(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run(convert: object, data: bytes, frame_bytes: int) -> bytes:
    """Feed ``data`` through ``convert`` (to_session or to_carrier) in frames; the joined output."""
    assert callable(convert)
    return b"".join(unb64(out) for out in (convert(b64(f)) for f in frames(data, frame_bytes)) if out)


# --- the choice per pair ----------------------------------------------------------------------


@pytest.mark.parametrize(("carrier", "session"), PAIRS, ids=[pair_id(p) for p in PAIRS])
def test_converter_choice_per_pair(carrier: AudioFormat, session: SessionFormat) -> None:
    conv: Converter = make_converter(carrier, session)
    assert conv.carrier == carrier and conv.session is session
    assert conv.method == METHODS[carrier][session]
    assert conv.passthrough is (carrier == session.audio)
    assert carrier.id in repr(conv)


def test_make_converter_rejects_non_formats() -> None:
    for carrier, session in [("audio/x-mulaw", SessionFormat.PCMU), (ULAW_8K, "pcmu"), (SessionFormat.PCMU, ULAW_8K)]:
        with pytest.raises(AudioError) as info:
            make_converter(carrier, session)  # type: ignore[arg-type]
        assert info.value.kind == "format"


# --- what every pair does to audio, both ways ---------------------------------------------------


def tone_level_and_snr(samples: npt.NDArray[np.float64], rate: int, freq: float) -> tuple[float, float]:
    """Level of ``freq`` (dB re −6 dBFS) and everything else against it (dB), after 20 ms."""
    y = samples[rate // 50 :]
    t = (np.arange(len(y)) + rate // 50) / rate
    cols = np.stack([np.ones_like(t), np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(cols, y, rcond=None)
    residual = y - cols @ coef
    amplitude = float(np.hypot(coef[1], coef[2]))
    snr = 10 * np.log10((amplitude**2 / 2) / np.mean(residual**2))
    return 20 * np.log10(amplitude / 16384.0), float(snr)


@pytest.mark.parametrize(("carrier", "session"), PAIRS, ids=[pair_id(p) for p in PAIRS])
@pytest.mark.parametrize("direction", ["to_session", "to_carrier"])
def test_a_tone_arrives_at_the_right_pitch_and_level(
    carrier: AudioFormat, session: SessionFormat, direction: str
) -> None:
    # A 997 Hz tone at −6 dBFS (not a divisor of any rate, so quantisation noise is not periodic),
    # in 20 ms frames of the source format: it must come out at 997 Hz, at the same level, with
    # nothing else but the codec's noise. Catches a wrong rate, byte order, scaling or seam.
    src, dst = (carrier, session.audio) if direction == "to_session" else (session.audio, carrier)
    t = np.arange(src.sample_rate // 2) / src.sample_rate
    data = encode(src, np.rint(16384 * np.sin(2 * np.pi * 997 * t)).astype(np.int64))
    out = decode(dst, run(getattr(make_converter(carrier, session), direction), data, 20 * src.bytes_per_ms))
    assert len(out) == -(-len(t) * dst.sample_rate // src.sample_rate)
    level, snr = tone_level_and_snr(out, dst.sample_rate, 997.0)
    assert abs(level) <= 0.25  # μ-law → A-law transcoding alone moves it by 0.1 dB
    # G.711 at either end: its own noise (~38 dB for this tone); L16 both ends: int16 rounding.
    assert snr >= (60.0 if src.encoding is dst.encoding is Encoding.L16 else 33.0)


@pytest.mark.parametrize(("carrier", "session"), PAIRS, ids=[pair_id(p) for p in PAIRS])
def test_sizes_per_20ms_frame(carrier: AudioFormat, session: SessionFormat) -> None:
    conv = make_converter(carrier, session)
    for frame in frames(caller_audio(carrier)[: 200 * carrier.bytes_per_ms], 20 * carrier.bytes_per_ms):
        assert len(unb64(conv.to_session(b64(frame)))) == 20 * session.bytes_per_ms
    for frame in frames(model_audio(session)[: 200 * session.bytes_per_ms], 20 * session.bytes_per_ms):
        assert len(unb64(conv.to_carrier(b64(frame)))) == 20 * carrier.bytes_per_ms


# --- passthrough ------------------------------------------------------------------------------

PASSTHROUGH = [(c, s) for c, s in PAIRS if c == s.audio]


@pytest.mark.parametrize(("carrier", "session"), PASSTHROUGH, ids=[pair_id(p) for p in PASSTHROUGH])
def test_passthrough_returns_the_same_object_checked_but_not_decoded(
    carrier: AudioFormat, session: SessionFormat
) -> None:
    assert len(PASSTHROUGH) == 3
    conv = make_converter(carrier, session)
    payload = b64(caller_audio(carrier)[: 20 * carrier.bytes_per_ms])
    assert conv.to_session(payload) is payload
    assert conv.to_carrier(payload) is payload
    # Checked: junk no longer goes upstream (the Realtime API would answer invalid_value).
    for junk in ["!!not base64!!", "Zm9v\nYmFy", "AAAA===="]:
        with pytest.raises(AudioError) as info:
            conv.to_session(junk)
        assert info.value.kind == "base64"
    conv.reset_to_carrier()


# --- transcoding and codec (same rate, no filter) ----------------------------------------------


@pytest.mark.parametrize(("carrier", "session"), [(ULAW_8K, P.PCMA), (ALAW_8K, P.PCMU)])
def test_transcoding_matches_decode_then_encode(carrier: AudioFormat, session: SessionFormat) -> None:
    conv = make_converter(carrier, session)
    codes = caller_audio(carrier)
    expected = encode(session.audio, decode(carrier, codes).astype(np.int64))
    assert run(conv.to_session, codes, 160) == expected
    # and back: session codes → carrier codes is the inverse mapping's decode-then-encode
    assert run(conv.to_carrier, expected, 160) == encode(carrier, decode(session.audio, expected).astype(np.int64))


@pytest.mark.parametrize("session", [P.PCMU, P.PCMA])
def test_codec_path_is_exactly_g711(session: SessionFormat) -> None:
    conv = make_converter(L16_8K, session)
    lin = caller_audio(L16_8K)
    codes = encode(session.audio, np.frombuffer(lin, "<i2").astype(np.int64))
    assert run(conv.to_session, lin, 320) == codes
    assert run(conv.to_carrier, codes, 160) == decode(session.audio, codes).astype("<i2").tobytes()


# --- resampling through the converter ---------------------------------------------------------

RESAMPLING = [(c, s) for c, s in PAIRS if METHODS[c][s] == "resample"]


def same_within_one_step(fmt: AudioFormat, a: bytes, b: bytes) -> None:
    """``a`` and ``b`` hold the same samples, but for float rounding: L16 ±1 LSB; G.711 the same
    codes, or neighbours on the codec's level ladder where a sample sat on a code boundary."""
    assert len(a) == len(b)
    if fmt.encoding is Encoding.L16:
        assert np.abs(decode(fmt, a) - decode(fmt, b)).max() <= 1
        return
    levels = np.unique(TABLE[fmt.encoding].astype(np.int64))
    rank_a = np.searchsorted(levels, decode(fmt, a).astype(np.int64))
    rank_b = np.searchsorted(levels, decode(fmt, b).astype(np.int64))
    assert np.abs(rank_a - rank_b).max() <= 1
    assert np.mean(rank_a == rank_b) >= 0.999


@pytest.mark.parametrize(("carrier", "session"), RESAMPLING, ids=[pair_id(p) for p in RESAMPLING])
def test_any_chunking_matches_one_shot_both_ways(carrier: AudioFormat, session: SessionFormat) -> None:
    big = 10**6
    for src, dst, direction, data in [
        (carrier, session.audio, "to_session", caller_audio(carrier)[: 400 * carrier.bytes_per_ms]),
        (session.audio, carrier, "to_carrier", model_audio(session)[: 400 * session.bytes_per_ms]),
    ]:
        whole = unb64(getattr(make_converter(carrier, session, max_payload_bytes=big), direction)(b64(data)))
        ms, width = src.bytes_per_ms, src.sample_width
        assert len(whole) == -(-len(data) // width * dst.sample_rate // src.sample_rate) * dst.sample_width
        # 20, 7 and 33 ms frames over 400 ms; 1 and 5 samples at a time over the first 50 ms
        everything = len(data)
        for chunk, n in [
            (20 * ms, everything),
            (7 * ms, everything),
            (33 * ms, everything),
            (width, 50 * ms),
            (5 * width, 50 * ms),
        ]:
            streamed = run(getattr(make_converter(carrier, session), direction), data[:n], chunk)
            same_within_one_step(dst, streamed, whole[: len(streamed)])
            assert len(streamed) == -(-n // width * dst.sample_rate // src.sample_rate) * dst.sample_width


def test_to_session_may_return_empty_while_holding_phase() -> None:
    # An L16 24 kHz carrier with a G.711 session decimates: one sample in gives one out every 3rd.
    conv = make_converter(L16_24K, SessionFormat.PCMU)
    one_sample = b64(b"\x10\x00")
    assert [len(unb64(r)) if r else 0 for r in (conv.to_session(one_sample) for _ in range(6))] == [1, 0, 0, 1, 0, 0]


def test_to_carrier_may_return_empty_while_holding_phase() -> None:
    conv = make_converter(ULAW_8K, SessionFormat.PCM16)
    one_sample = b64(b"\x10\x00")
    assert [len(unb64(r)) if r else 0 for r in (conv.to_carrier(one_sample) for _ in range(6))] == [1, 0, 0, 1, 0, 0]
    conv = make_converter(L16_16K, SessionFormat.PCM16)  # 24 → 16 kHz: 2 out of every 3
    assert [len(unb64(r)) if r else 0 for r in (conv.to_carrier(one_sample) for _ in range(6))] == [2, 2, 0, 2, 2, 0]


def inband_snr_db(reference: npt.NDArray[np.float64], test: npt.NDArray[np.float64]) -> float:
    """SNR of ``test`` against ``reference`` counting only 300–3400 Hz (the telephone band)."""
    freqs = np.fft.rfftfreq(len(reference), 1 / 8000)
    band = (freqs >= 300) & (freqs <= 3400)
    signal = np.abs(np.fft.rfft(reference))[band] ** 2
    noise = np.abs(np.fft.rfft(test - reference))[band] ** 2
    return float(10 * np.log10(signal.sum() / noise.sum()))


@pytest.mark.parametrize("carrier", [ULAW_8K, ALAW_8K])
def test_speech_round_trip_through_24k_costs_no_more_than_g711_itself(carrier: AudioFormat) -> None:
    # An off-grid 8 kHz speech signal (the caller recording at 0.9× level, so it is not already on
    # the codec's levels). G.711's own quantisation noise: encode → decode. The bridge path:
    # encode → [to_session → 24 kHz → to_carrier] → decode, aligned for the 2 × 2 ms delay.
    source = np.rint(0.9 * decode(carrier, caller_audio(carrier)))
    codes = encode(carrier, source.astype(np.int64))
    g711_only = decode(carrier, codes)
    conv = make_converter(carrier, SessionFormat.PCM16)
    out = b"".join(unb64(conv.to_carrier(conv.to_session(b64(f)))) for f in frames(codes, 160))
    through_24k = decode(carrier, out)
    delay = 2 * filter_for(8000, 24000).group_delay // 3  # 32 samples at 8 kHz = 4 ms round trip
    assert delay * 1000 / 8000 == 4.0
    n = len(source) - delay
    snr_g711 = inband_snr_db(source[:n], g711_only[:n])
    snr_path = inband_snr_db(source[:n], through_24k[delay : delay + n])
    assert snr_g711 > 30.0  # sanity: the measurement sees the codec's noise, not a silent signal
    assert snr_path >= snr_g711 - 1.0
    # The alignment is the measured one: one sample off and the SNR collapses.
    assert inband_snr_db(source[: n - 1], through_24k[delay + 1 : delay + n]) < snr_g711 - 10.0


STATEFUL_DOWN = [(c, s) for c, s in PAIRS if c.sample_rate != s.sample_rate]


@pytest.mark.parametrize(("carrier", "session"), STATEFUL_DOWN, ids=[pair_id(p) for p in STATEFUL_DOWN])
def test_reset_to_carrier_starts_the_next_response_clean(carrier: AudioFormat, session: SessionFormat) -> None:
    model = model_audio(session)
    frame_bytes = 20 * session.bytes_per_ms
    frame = b64(model[frame_bytes * 50 : frame_bytes * 51])
    expected = make_converter(carrier, session).to_carrier(frame)
    conv = make_converter(carrier, session)
    conv.to_carrier(b64(model[: frame_bytes + session.audio.sample_width]))  # history, and a phase
    assert conv.to_carrier(frame) != expected  # the history matters…
    conv.reset_to_carrier()
    assert conv.to_carrier(frame) == expected  # …and the reset forgot it


# --- bad input --------------------------------------------------------------------------------

BAD_BASE64 = ["abc", "ab$d", "Zm9v\nYmFy", "Zm9v YmFy", "éé==", "Zg==Zg==", "====", "Zm9vY", "AAAA====", "AAAA="]


def good_payload(fmt: AudioFormat, index: int, data: bytes) -> str:
    """Frame ``index`` of ``data``: 20 ms and one sample, so a resampler's phase moves too."""
    size = 20 * fmt.bytes_per_ms + fmt.sample_width
    return b64(data[size * index : size * (index + 1)])


def bad_payloads(src: AudioFormat) -> list[tuple[str, str]]:
    bad = [("", "empty"), ("A" * 4000, "too_large"), *((text, "base64") for text in BAD_BASE64)]
    if src.encoding is Encoding.L16:
        bad.append((b64(b"\x01\x02\x03"), "odd_length"))
    return bad


@pytest.mark.parametrize(("carrier", "session"), PAIRS, ids=[pair_id(p) for p in PAIRS])
@pytest.mark.parametrize("direction", ["to_session", "to_carrier"])
def test_bad_input_raises_and_leaves_the_converter_intact(
    carrier: AudioFormat, session: SessionFormat, direction: str
) -> None:
    src, data = (carrier, caller_audio(carrier)) if direction == "to_session" else (session.audio, model_audio(session))
    clean = make_converter(carrier, session, max_payload_bytes=2000)
    noisy = make_converter(carrier, session, max_payload_bytes=2000)
    for i in range(4):
        good = good_payload(src, i, data)
        expected = getattr(clean, direction)(good)
        for payload, kind in bad_payloads(src):
            with pytest.raises(AudioError) as info:
                getattr(noisy, direction)(payload)
            assert info.value.kind == kind, payload
        # Same output as a converter that never saw the bad frames: no state was touched.
        assert getattr(noisy, direction)(good) == expected


@pytest.mark.parametrize(("carrier", "session"), PAIRS, ids=[pair_id(p) for p in PAIRS])
def test_non_string_payload_is_rejected(carrier: AudioFormat, session: SessionFormat) -> None:
    conv = make_converter(carrier, session)
    for payload in [None, 123, b"AAAA"]:
        for fn in (conv.to_session, conv.to_carrier):
            with pytest.raises(AudioError) as info:
                fn(payload)  # type: ignore[arg-type]
            assert info.value.kind == "base64"


# --- the size limit and the API's 15 MiB cap --------------------------------------------------


def test_max_payload_bytes_is_bounded_by_the_api_cap() -> None:
    for carrier, session in PAIRS:
        limit = max_payload_limit(carrier, session)
        make_converter(carrier, session, max_payload_bytes=limit)
        for bad in (0, -1, limit + 1):
            with pytest.raises(ValueError):
                make_converter(carrier, session, max_payload_bytes=bad)
    assert max_payload_limit(ULAW_8K, SessionFormat.PCM16) < max_payload_limit(ULAW_8K, SessionFormat.PCMU)


BIGGEST = [(ULAW_8K, P.PCM16), (L16_16K, P.PCM16), (L16_24K, P.PCM16)]


@pytest.mark.parametrize(("carrier", "session"), BIGGEST, ids=[pair_id(p) for p in BIGGEST])
def test_the_largest_allowed_payload_still_fits_one_append_event(carrier: AudioFormat, session: SessionFormat) -> None:
    # Measured, not computed: convert the largest payload the limit lets through (a whole number
    # of samples) and build the real input_audio_buffer.append event from it.
    limit = max_payload_limit(carrier, session)
    size = limit - limit % carrier.sample_width
    conv = make_converter(carrier, session, max_payload_bytes=limit)
    payload = b64(np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8).tobytes())
    event = append_audio(conv.to_session(payload))
    assert MAX_EVENT_BYTES - 8192 < len(event) <= MAX_EVENT_BYTES
    with pytest.raises(AudioError) as info:
        conv.to_session(b64(bytes(limit + carrier.sample_width)))
    assert info.value.kind == "too_large"
