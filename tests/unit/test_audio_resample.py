"""Quality of the streaming 8 kHz ↔ 24 kHz resamplers: aliasing, imaging, passband, seams, delay.

Levels are measured by a joint least-squares fit of sinusoids at the frequencies of interest
(the tone and its aliases or images) over the steady state, so a strong tone cannot leak into the
measurement of a weak one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt
import pytest

from bridge.audio import g711
from bridge.audio.resample import (
    DELAY_MS,
    FILTER_TAPS,
    GROUP_DELAY_24K,
    Downsampler,
    Upsampler,
    design_root_nyquist,
    lowpass_taps,
)
from bridge.audio.wavfile import ASSISTANT_PCM16, CALLER_ULAW, bundled

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Array = npt.NDArray[np.float64]
AMPLITUDE = 16384.0  # −6 dBFS
SETTLE = 200  # samples skipped at the start (filter start-up), at either rate


def tone(freq: float, rate: int, seconds: float = 0.5, amplitude: float = AMPLITUDE) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t + 0.3)).astype(np.int16)


def amplitudes(signal: npt.NDArray[np.generic], rate: int, freqs: Iterable[float]) -> Array:
    """Amplitude of each frequency in ``signal[SETTLE:]`` (joint fit, plus DC)."""
    y = np.asarray(signal, dtype=np.float64)[SETTLE:]
    t = (np.arange(len(y)) + SETTLE) / rate
    freqs = list(freqs)
    cols = [np.ones_like(t)]
    for f in freqs:
        cols += [np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)]
    coef, *_ = np.linalg.lstsq(np.stack(cols, axis=1), y, rcond=None)
    return np.hypot(coef[1::2], coef[2::2])


def db(ratio: float) -> float:
    return float(20 * np.log10(max(ratio, 1e-12)))


def chunked(
    process: Callable[[npt.NDArray[np.int16]], npt.NDArray[np.int16]], x: npt.NDArray[np.int16], sizes: Iterable[int]
) -> npt.NDArray[np.int16]:
    """Feed ``x`` through ``process`` in chunks cycling through ``sizes``; copy each returned view."""
    out = []
    sizes = list(sizes)
    i = k = 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(process(x[i : i + n]).copy())
        i += n
        k += 1
    return np.concatenate(out)


def alias_of(freq: float) -> float:
    """Where a 24 kHz-rate component at ``freq`` lands after decimation to 8 kHz."""
    f = freq % 8000
    return min(f, 8000 - f)


# --- 24 kHz → 8 kHz (model to caller) ---------------------------------------------------------

STOP_FREQS = [float(f) for f in np.arange(4600, 12000, 137)] + [5000.0]


def downsample_alias_db(resample: Callable[[npt.NDArray[np.int16]], npt.NDArray[np.int16]], freq: float) -> float:
    out = resample(tone(freq, 24000))
    return db(amplitudes(out, 8000, [alias_of(freq)])[0] / AMPLITUDE)


@pytest.mark.parametrize("freq", STOP_FREQS)
def test_downsampling_removes_everything_that_would_fold_into_the_band(freq: float) -> None:
    def ours(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        return chunked(Downsampler().process, x, [480])

    assert downsample_alias_db(ours, freq) <= -60.0


def test_five_khz_does_not_come_out_at_three_khz_but_it_does_with_ratecv() -> None:
    def ours(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        return chunked(Downsampler().process, x, [480])

    def ratecv(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        out, _ = audioop.ratecv(x.tobytes(), 2, 1, 24000, 8000, None)
        return np.frombuffer(out, dtype=np.int16)

    assert alias_of(5000) == 3000
    assert downsample_alias_db(ours, 5000) <= -60.0
    # The measurement is sensitive: linear interpolation folds 5 kHz to 3 kHz at about full level.
    assert downsample_alias_db(ratecv, 5000) > -3.0


@pytest.mark.parametrize("freq", [300.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3300.0, 3400.0])
def test_downsampling_passband_is_flat(freq: float) -> None:
    out = chunked(Downsampler().process, tone(freq, 24000), [480])
    assert abs(db(amplitudes(out, 8000, [freq])[0] / AMPLITUDE)) <= 0.5


# --- 8 kHz → 24 kHz (caller to model) ---------------------------------------------------------

PASS_FREQS = [300.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3300.0, 3400.0]


@pytest.mark.parametrize("freq", PASS_FREQS)
def test_upsampling_images_are_50db_down_and_passband_flat(freq: float) -> None:
    out = chunked(Upsampler().process, tone(freq, 8000), [160])
    signal, *images = amplitudes(out, 24000, [freq, 8000 - freq, 8000 + freq])
    assert abs(db(signal / AMPLITUDE)) <= 0.5
    for image in images:
        assert db(image / signal) <= -50.0


def test_ratecv_fails_the_imaging_measurement() -> None:
    # Same measurement on linear interpolation: its images are only ~30 dB down.
    out, _ = audioop.ratecv(tone(1000, 8000).tobytes(), 2, 1, 8000, 24000, None)
    signal, low, high = amplitudes(np.frombuffer(out, np.int16), 24000, [1000, 7000, 9000])
    assert max(db(low / signal), db(high / signal)) > -50.0


def test_filter_design_response() -> None:
    # The prototype's own response, densely sampled (independent of the streaming code).
    taps = lowpass_taps()
    assert len(taps) == FILTER_TAPS and np.array_equal(taps, taps[::-1])
    freqs = np.concatenate([np.linspace(0, 3400, 300), np.linspace(4600, 12000, 3000)])
    response = np.abs(np.exp(-2j * np.pi * np.outer(freqs / 24000, np.arange(len(taps)))) @ taps)
    passband, stopband = response[:300], response[300:]
    assert 20 * np.log10(passband.max() / passband.min()) <= 0.01
    assert 20 * np.log10(stopband.max()) <= -69.0


def test_filter_is_root_nyquist_so_up_then_down_is_the_identity() -> None:
    # 3·(h∗h) taken every 3rd sample (the 8 kHz round trip's impulse response) is a unit impulse
    # at the 32-sample round-trip delay; every other tap is at least 70 dB down.
    taps = lowpass_taps()
    round_trip = 3 * np.convolve(taps, taps)[::3]
    peak = int(np.argmax(np.abs(round_trip)))
    assert peak == 2 * GROUP_DELAY_24K // 3
    assert round_trip[peak] == pytest.approx(1.0, abs=1e-3)
    others = np.delete(round_trip, peak)
    assert 20 * np.log10(np.abs(others).max()) <= -70.0


def test_stored_taps_are_what_the_design_function_produces() -> None:
    assert np.allclose(design_root_nyquist(), lowpass_taps(), rtol=0, atol=1e-9)


# --- streaming: chunked equals whole, and equals a direct convolution ---------------------------

CHUNKINGS = [[160], [56], [264], [1], [7, 33, 160, 1, 2, 999, 3]]  # 20 ms, 7 ms, 33 ms, odd mixes


def speech_8k() -> npt.NDArray[np.int16]:
    return g711.ULAW_TO_LIN[np.frombuffer(bundled(CALLER_ULAW).data, np.uint8)][:16000]


def speech_24k() -> npt.NDArray[np.int16]:
    return np.frombuffer(bundled(ASSISTANT_PCM16).data, dtype="<i2")[:48000].astype(np.int16)


def reference_up(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int64]:
    stuffed = np.zeros(3 * len(x))
    stuffed[::3] = 3.0 * x.astype(np.float64)
    y = np.convolve(stuffed, lowpass_taps())[: 3 * len(x)]
    return np.clip(np.rint(y), -32768, 32767).astype(np.int64)


def reference_down(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int64]:
    y = np.convolve(x.astype(np.float64), lowpass_taps())[: len(x)][::3]
    return np.clip(np.rint(y), -32768, 32767).astype(np.int64)


@pytest.mark.parametrize("sizes", CHUNKINGS)
def test_upsampler_chunked_equals_whole_and_direct_convolution(sizes: list[int]) -> None:
    x = speech_8k()
    streamed = chunked(Upsampler().process, x, sizes)
    whole = Upsampler(capacity=len(x)).process(x).astype(np.int64)
    assert len(streamed) == len(whole) == 3 * len(x)
    assert np.abs(streamed - whole).max() <= 1
    assert np.abs(streamed - reference_up(x)).max() <= 1


@pytest.mark.parametrize("sizes", [[480], [168], [792], [1], [2], [7, 33, 480, 1, 2, 4801, 5]])
def test_downsampler_chunked_equals_whole_and_direct_convolution(sizes: list[int]) -> None:
    x = speech_24k()
    streamed = chunked(Downsampler().process, x, sizes)
    whole = Downsampler(capacity=len(x)).process(x).astype(np.int64)
    assert len(streamed) == len(whole) == -(-len(x) // 3)
    assert np.abs(streamed - whole).max() <= 1
    assert np.abs(streamed - reference_down(x)).max() <= 1


def test_frame_edges_do_not_click() -> None:
    # A pure tone streamed in 20 ms frames: after fitting the tone and its (−69 dB) images, what
    # is left is int16 rounding everywhere, including at every frame boundary, where a click or a
    # seam would show as a spike.
    out = chunked(Upsampler().process, tone(1000, 8000, seconds=1.0), [160]).astype(np.float64)
    t = np.arange(len(out)) / 24000
    cols = np.stack([fn(2 * np.pi * f * t) for f in (1000, 7000, 9000, 15000) for fn in (np.cos, np.sin)], axis=1)
    steady = slice(SETTLE, None)
    coef, *_ = np.linalg.lstsq(cols[steady], out[steady], rcond=None)
    residual = out[steady] - cols[steady] @ coef
    assert np.abs(residual).max() <= 1.0


def test_full_scale_overshoot_saturates_instead_of_wrapping() -> None:
    # A full-scale square wave makes the FIR ring past ±32767 (Gibbs); output must clip, not wrap.
    square = np.where((np.arange(2400) // 40) % 2 == 0, 32767, -32768).astype(np.int16)
    out = Downsampler().process(square).astype(np.int64)
    ref = reference_down(square)
    assert np.abs(out - ref).max() <= 1
    assert out.max() == 32767 and out.min() == -32768  # it did overshoot and was clipped
    up = Upsampler().process(square[:800]).astype(np.int64)
    assert np.abs(up - reference_up(square[:800])).max() <= 1


# --- delay ------------------------------------------------------------------------------------


def test_delay_constant() -> None:
    assert GROUP_DELAY_24K == 48
    assert pytest.approx(2.0) == DELAY_MS
    assert DELAY_MS <= 5.0


def lag_of(reference: Array, delayed: Array, max_lag: int) -> int:
    n = len(reference) - max_lag
    scores = [float(np.dot(reference[:n], delayed[lag : lag + n])) for lag in range(max_lag)]
    return int(np.argmax(scores))


def test_measured_delay_upsampling_is_2ms() -> None:
    x = speech_8k()
    y = chunked(Upsampler().process, x, [160]).astype(np.float64)
    # Compare against the input placed on the 24 kHz grid (zero-stuffed), lag in 24 kHz samples.
    stuffed = np.zeros(len(y))
    stuffed[::3] = x
    lag = lag_of(stuffed, y, 300)
    assert lag == GROUP_DELAY_24K
    assert lag / 24.0 <= 5.0  # ms


def test_measured_delay_downsampling_is_2ms() -> None:
    x = speech_24k().astype(np.float64)
    y = chunked(Downsampler().process, speech_24k(), [480]).astype(np.float64)
    # Output k is the input near 24 kHz time 3k − delay; score each candidate delay at 24 kHz.
    n = len(y) - 200
    scores = [float(np.dot(y[100 : 100 + n], x[300 - d : 300 - d + 3 * n : 3])) for d in range(200)]
    lag = int(np.argmax(scores))
    assert lag == GROUP_DELAY_24K
    assert lag / 24.0 <= 5.0  # ms


def test_impulse_response_peaks_at_the_group_delay() -> None:
    impulse8 = np.zeros(400, dtype=np.int16)
    impulse8[100] = 10000
    up = Upsampler().process(impulse8)
    assert int(np.argmax(up)) == 3 * 100 + GROUP_DELAY_24K
    impulse24 = np.zeros(1200, dtype=np.int16)
    impulse24[300] = 30000
    down = Downsampler().process(impulse24)
    assert int(np.argmax(down)) == 100 + GROUP_DELAY_24K // 3


def test_reset_forgets_history() -> None:
    x = speech_24k()
    fresh = Downsampler().process(x[:480]).copy()
    d = Downsampler()
    d.process(x[1000:1481])  # leaves history and a non-zero phase
    d.reset()
    assert np.array_equal(d.process(x[:480]), fresh)
    u = Upsampler()
    fresh_up = Upsampler().process(speech_8k()[:160]).copy()
    u.process(speech_8k()[500:660])
    u.reset()
    assert np.array_equal(u.process(speech_8k()[:160]), fresh_up)


def test_tiny_chunks_carry_the_phase() -> None:
    d = Downsampler()
    counts = [len(d.process(np.full(n, 1000, dtype=np.int16))) for n in [1, 1, 1, 2, 2, 2, 4]]
    # Outputs fall on input samples 0, 3, 6, 9, 12: one every third sample, none lost or doubled.
    assert counts == [1, 0, 0, 1, 1, 0, 2]
    assert sum(counts) == -(-13 // 3)
