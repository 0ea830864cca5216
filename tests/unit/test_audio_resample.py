"""Quality of the streaming resamplers (8 ↔ 24, 8 ↔ 16, 16 ↔ 24 kHz): aliasing, imaging,
passband, seams, delay.

Levels are measured by a joint least-squares fit of sinusoids at the frequencies of interest
(the tone and its aliases or images) over the steady state, so a strong tone cannot leak into the
measurement of a weak one. The band each pair must keep is the band its lower rate carries:
300–3400 Hz for 8 kHz (G.711's telephone band), 50–7000 Hz for 16 kHz (G.722's wideband).

``python tests/unit/test_audio_resample.py`` prints the measured figures (for BENCHMARKS.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt
import pytest

from bridge.audio import g711
from bridge.audio.resample import FILTERS, Resampler, design_root_nyquist, filter_for
from bridge.audio.wavfile import ASSISTANT_PCM16, CALLER_ULAW, bundled

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Array = npt.NDArray[np.float64]
Process = Callable[[npt.NDArray[np.int16]], npt.NDArray[np.int16]]
AMPLITUDE = 16384.0  # −6 dBFS
SETTLE = 200  # samples skipped at the start (filter start-up), at either rate

RATE_PAIRS = sorted(FILTERS)  # (low, high)
DIRECTIONS = [(a, b) for low, high in RATE_PAIRS for a, b in ((low, high), (high, low))]
BAND = {8000: (300.0, 3400.0), 16000: (50.0, 7000.0)}  # what the lower rate carries
PASS_FREQS = {
    8000: [300.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3300.0, 3400.0],
    # no 4 kHz: at 16 → 24 kHz its image 20 kHz folds onto 4 kHz itself
    16000: [50.0, 100.0, 300.0, 1000.0, 2000.0, 3400.0, 5000.0, 6000.0, 6500.0, 7000.0],
}


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


def chunked(process: Process, x: npt.NDArray[np.int16], sizes: Iterable[int]) -> npt.NDArray[np.int16]:
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


def fold(freq: float, rate: int) -> float:
    """Where a component at ``freq`` lands in a signal sampled at ``rate`` (0 … rate/2)."""
    f = freq % rate
    return min(f, rate - f)


def in_frames(in_rate: int, out_rate: int) -> Process:
    """A fresh resampler fed 20 ms frames, as a call feeds it."""
    r = Resampler(in_rate, out_rate)
    return lambda x: chunked(r.process, x, [in_rate // 50])


# --- decimation: nothing folds into the lower rate's band --------------------------------------


def stop_freqs(high: int, low: int) -> list[float]:
    """Input tones at ``high`` whose alias would land in the lower rate's band, ~140 Hz apart."""
    first = low - BAND[low][1]  # folds onto the band's upper edge
    freqs = [float(f) for f in np.arange(first, high / 2, 137.0)]
    return [f for f in freqs if 1.0 < fold(f, low) < low / 2 - 1.0]  # not onto DC or Nyquist


def worst_alias_db(high: int, low: int) -> tuple[float, float]:
    """The loudest alias (dB re the input tone) over :func:`stop_freqs`, and the tone causing it."""
    worst = (-np.inf, 0.0)
    for freq in stop_freqs(high, low):
        out = in_frames(high, low)(tone(freq, high))
        worst = max(worst, (db(amplitudes(out, low, [fold(freq, low)])[0] / AMPLITUDE), freq))
    return worst


@pytest.mark.parametrize(("low", "high"), RATE_PAIRS)
def test_downsampling_removes_everything_that_would_fold_into_the_band(low: int, high: int) -> None:
    assert len(stop_freqs(high, low)) >= 20
    level, freq = worst_alias_db(high, low)
    assert level <= -60.0, f"{freq} Hz aliases at {level:.1f} dB"


def test_five_khz_does_not_come_out_at_three_khz_but_it_does_with_ratecv() -> None:
    def ratecv(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        out, _ = audioop.ratecv(x.tobytes(), 2, 1, 24000, 8000, None)
        return np.frombuffer(out, dtype=np.int16)

    assert fold(5000, 8000) == 3000
    ours = in_frames(24000, 8000)(tone(5000, 24000))
    assert db(amplitudes(ours, 8000, [3000])[0] / AMPLITUDE) <= -60.0
    # The measurement is sensitive: linear interpolation folds 5 kHz to 3 kHz at about full level.
    assert db(amplitudes(ratecv(tone(5000, 24000)), 8000, [3000])[0] / AMPLITUDE) > -3.0


def passband_db(in_rate: int, out_rate: int) -> list[float]:
    low = min(in_rate, out_rate)
    return [
        db(amplitudes(in_frames(in_rate, out_rate)(tone(f, in_rate)), out_rate, [f])[0] / AMPLITUDE)
        for f in PASS_FREQS[low]
    ]


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_passband_is_flat(in_rate: int, out_rate: int) -> None:
    low = min(in_rate, out_rate)
    assert PASS_FREQS[low][0] == BAND[low][0] and PASS_FREQS[low][-1] == BAND[low][1]
    levels = passband_db(in_rate, out_rate)
    assert max(abs(level) for level in levels) <= 0.5, levels


# --- interpolation: images of the band are 50 dB down ----------------------------------------


def image_freqs(freq: float, low: int, high: int) -> list[float]:
    """Images of a tone at ``freq`` (sampled at ``low``) in the output at ``high``: the copies at
    k·low ± freq below the filter rate's Nyquist, folded into the output band."""
    rate = filter_for(low, high).rate
    images = {
        fold(k * low + sign * freq, high)
        for k in range(1, rate // low + 1)
        for sign in (-1, 1)
        if 0 < k * low + sign * freq <= rate / 2
    }
    return sorted(f for f in images if abs(f - freq) > 1.0 and 1.0 < f < high / 2 - 1.0)


def worst_image_db(low: int, high: int) -> tuple[float, float]:
    worst = (-np.inf, 0.0)
    for freq in PASS_FREQS[low]:
        images = image_freqs(freq, low, high)
        assert images, freq
        signal, *levels = amplitudes(in_frames(low, high)(tone(freq, low)), high, [freq, *images])
        worst = max(worst, (max(db(level / signal) for level in levels), freq))
    return worst


@pytest.mark.parametrize(("low", "high"), RATE_PAIRS)
def test_upsampling_images_are_50db_down(low: int, high: int) -> None:
    level, freq = worst_image_db(low, high)
    assert level <= -50.0, f"an image of {freq} Hz at {level:.1f} dB"


def test_image_frequencies_are_where_the_theory_says() -> None:
    assert image_freqs(1000, 8000, 24000) == [7000, 9000]
    assert image_freqs(1000, 8000, 16000) == [7000]
    assert image_freqs(1000, 16000, 24000) == [7000, 9000]  # 16k+1k and 16k−1k, folded at 24 kHz


def test_ratecv_fails_the_imaging_measurement() -> None:
    # Same measurement on linear interpolation: its images are only ~30 dB down.
    out, _ = audioop.ratecv(tone(1000, 8000).tobytes(), 2, 1, 8000, 24000, None)
    signal, low, high = amplitudes(np.frombuffer(out, np.int16), 24000, [1000, 7000, 9000])
    assert max(db(low / signal), db(high / signal)) > -50.0


# --- the filters themselves ------------------------------------------------------------------


def response(taps: Array, rate: int, freqs: Array) -> Array:
    n = np.arange(len(taps))
    result: Array = np.abs(np.exp(-2j * np.pi * np.outer(freqs / rate, n)) @ taps)
    return result


@pytest.mark.parametrize(("low", "high"), RATE_PAIRS)
def test_filter_design_response(low: int, high: int) -> None:
    # The prototype's own response, densely sampled (independent of the streaming code).
    design = filter_for(low, high)
    taps = design.taps
    assert np.array_equal(taps, taps[::-1])  # linear phase
    assert design.pass_hz == BAND[low][1] and design.stop_hz == low - design.pass_hz  # centred on low/2
    passband = response(taps, design.rate, np.linspace(0, design.pass_hz, 300))
    stopband = response(taps, design.rate, np.linspace(design.stop_hz, design.rate / 2, 3000))
    assert 20 * np.log10(passband.max() / passband.min()) <= 0.01
    assert 20 * np.log10(stopband.max()) <= -69.0
    assert not taps.flags.writeable


def test_the_8_24_filter_is_root_nyquist_so_up_then_down_is_the_identity() -> None:
    # 3·(h∗h) taken every 3rd sample (the 8 kHz round trip's impulse response) is a unit impulse
    # at the 32-sample round-trip delay; every other tap is at least 70 dB down.
    design = filter_for(8000, 24000)
    round_trip = 3 * np.convolve(design.taps, design.taps)[::3]
    peak = int(np.argmax(np.abs(round_trip)))
    assert peak == 2 * design.group_delay // 3
    assert round_trip[peak] == pytest.approx(1.0, abs=1e-3)
    others = np.delete(round_trip, peak)
    assert 20 * np.log10(np.abs(others).max()) <= -70.0


def test_stored_taps_are_what_the_design_function_produces() -> None:
    assert np.allclose(design_root_nyquist(), filter_for(24000, 8000).taps, rtol=0, atol=1e-9)


def test_unknown_rate_pairs_are_refused() -> None:
    for a, b in [(8000, 8000), (8000, 48000), (22050, 24000)]:
        with pytest.raises(ValueError):
            Resampler(a, b)


# --- streaming: chunked equals whole, and equals a direct convolution ---------------------------


def speech(rate: int) -> npt.NDArray[np.int16]:
    """One second of speech at ``rate``: the caller recording (8 kHz), the assistant's (24 kHz), or
    the assistant's brought to 16 kHz by the reference below (content up to 7 kHz)."""
    if rate == 8000:
        return g711.ULAW_TO_LIN[np.frombuffer(bundled(CALLER_ULAW).data, np.uint8)][:8000]
    assistant = np.frombuffer(bundled(ASSISTANT_PCM16).data, dtype="<i2")[:24000].astype(np.int16)
    return assistant if rate == 24000 else reference(assistant, 24000, 16000).astype(np.int16)


def reference(x: npt.NDArray[np.int16], in_rate: int, out_rate: int) -> npt.NDArray[np.int64]:
    """Textbook resampling in float64: zero-stuff ×up, convolve with the prototype, keep every down-th."""
    r = Resampler(in_rate, out_rate)
    stuffed = np.zeros(r.up * len(x))
    stuffed[:: r.up] = r.up * x.astype(np.float64)
    y = np.convolve(stuffed, r.design.taps)[: len(stuffed)][:: r.down]
    return np.clip(np.rint(y), -32768, 32767).astype(np.int64)


def chunkings(rate: int) -> list[list[int]]:
    ms = rate // 1000
    return [[20 * ms], [7 * ms], [33 * ms], [1], [2], [7, 33, 20 * ms, 1, 2, 999, 5, 3]]


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_chunked_equals_whole_and_direct_convolution(in_rate: int, out_rate: int) -> None:
    x = speech(in_rate)
    whole = Resampler(in_rate, out_rate, capacity=len(x)).process(x).astype(np.int64)
    expected_len = -(-len(x) * out_rate // in_rate)
    assert len(whole) == expected_len
    assert np.abs(whole - reference(x, in_rate, out_rate)).max() <= 1
    for sizes in chunkings(in_rate):
        n = len(x) if max(sizes) > 2 else len(x) // 5  # 1-sample calls: 200 ms is plenty
        streamed = chunked(Resampler(in_rate, out_rate).process, x[:n], sizes)
        assert len(streamed) == -(-n * out_rate // in_rate), sizes
        assert np.abs(streamed - whole[: len(streamed)]).max() <= 1, sizes


def test_frame_edges_do_not_click() -> None:
    # A pure tone streamed in 20 ms frames: after fitting the tone and its (−69 dB) images, what
    # is left is int16 rounding everywhere, including at every frame boundary, where a click or a
    # seam would show as a spike.
    for low, high in RATE_PAIRS:
        out = in_frames(low, high)(tone(1000, low, seconds=1.0)).astype(np.float64)
        freqs = [1000.0, *image_freqs(1000, low, high)]
        t = np.arange(len(out)) / high
        cols = np.stack([fn(2 * np.pi * f * t) for f in freqs for fn in (np.cos, np.sin)], axis=1)
        steady = slice(SETTLE, None)
        coef, *_ = np.linalg.lstsq(cols[steady], out[steady], rcond=None)
        residual = out[steady] - cols[steady] @ coef
        assert np.abs(residual).max() <= 1.0, (low, high)


def test_full_scale_overshoot_saturates_instead_of_wrapping() -> None:
    # A full-scale square wave makes the FIR ring past ±32767 (Gibbs); output must clip, not wrap.
    for in_rate, out_rate in DIRECTIONS:
        square = np.where((np.arange(in_rate // 10) // 40) % 2 == 0, 32767, -32768).astype(np.int16)
        out = Resampler(in_rate, out_rate).process(square).astype(np.int64)
        assert np.abs(out - reference(square, in_rate, out_rate)).max() <= 1
        assert out.max() == 32767 and out.min() == -32768  # it did overshoot and was clipped


# --- delay ------------------------------------------------------------------------------------


def test_delay_constants() -> None:
    delays = {pair: (design.group_delay, design.delay_ms) for pair, design in FILTERS.items()}
    assert delays == {(8000, 24000): (48, 2.0), (8000, 16000): (30, 1.875), (16000, 24000): (54, 1.125)}
    for (low, high), design in FILTERS.items():
        # a whole number of samples at both rates of the pair
        assert design.group_delay % (design.rate // low) == 0 and design.group_delay % (design.rate // high) == 0
        assert design.delay_ms <= 5.0


def measured_lag(in_rate: int, out_rate: int, max_lag: int) -> int:
    """Delay of the resampler on speech, by cross-correlation, in samples at the filter's rate.

    Input sample i sits at filter time i·up, output n at n·down; the score of a candidate delay
    d pairs every output with the input sample (if any) at filter time n·down − d.
    """
    r = Resampler(in_rate, out_rate)
    x = speech(in_rate).astype(np.float64)
    y = chunked(r.process, speech(in_rate), [in_rate // 50]).astype(np.float64)
    n = np.arange(len(y))
    scores = []
    for d in range(max_lag):
        t = n * r.down - d
        hit = (t >= 0) & (t % r.up == 0)
        scores.append(float(np.dot(y[hit], x[t[hit] // r.up])) / max(int(hit.sum()), 1))
    return int(np.argmax(scores))


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_measured_delay_is_the_group_delay(in_rate: int, out_rate: int) -> None:
    design = filter_for(in_rate, out_rate)
    lag = measured_lag(in_rate, out_rate, 3 * design.group_delay)
    assert lag == design.group_delay
    assert lag * 1000 / design.rate <= 5.0  # ms


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_impulse_response_peaks_at_the_group_delay(in_rate: int, out_rate: int) -> None:
    r = Resampler(in_rate, out_rate)
    at = 30 * r.down  # an input sample that falls exactly on an output sample
    impulse = np.zeros(in_rate // 20, dtype=np.int16)
    impulse[at] = 20000
    out = r.process(impulse)
    assert int(np.argmax(out)) == (at * r.up + r.design.group_delay) // r.down


# --- state ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_reset_forgets_history_and_phase(in_rate: int, out_rate: int) -> None:
    x = speech(in_rate)
    frame = in_rate // 50
    fresh = Resampler(in_rate, out_rate).process(x[:frame]).copy()
    r = Resampler(in_rate, out_rate)
    r.process(x[1000 : 1000 + frame + 1])  # leaves history and, when decimating, a phase
    assert not np.array_equal(r.process(x[:frame]), fresh)  # the history matters…
    r.reset()
    assert np.array_equal(r.process(x[:frame]), fresh)  # …and the reset forgot it


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "counts"),
    [
        # outputs fall on every 3rd input sample (0, 3, 6, 9, 12): none lost or doubled
        (24000, 8000, [1, 0, 0, 1, 1, 0, 2]),
        (16000, 8000, [1, 0, 1, 1, 1, 1, 2]),
        # 2 outputs per 3 inputs, at inputs 0, 1.5, 3, 4.5, 6, …: out once input ⌊1.5·n⌋ is in
        (24000, 16000, [1, 1, 0, 2, 1, 1, 3]),
        (16000, 24000, [2, 1, 2, 3, 3, 3, 6]),
    ],
)
def test_tiny_chunks_carry_the_phase(in_rate: int, out_rate: int, counts: list[int]) -> None:
    r = Resampler(in_rate, out_rate)
    sizes = [1, 1, 1, 2, 2, 2, 4]
    got = [len(r.process(np.full(n, 1000, dtype=np.int16))) for n in sizes]
    assert got == counts
    assert sum(got) == -(-sum(sizes) * out_rate // in_rate)


def test_long_chunks_are_processed_in_pieces() -> None:
    for in_rate, out_rate in DIRECTIONS:
        x = speech(in_rate)
        small = Resampler(in_rate, out_rate, capacity=97)  # an odd capacity: pieces end mid-phase
        assert np.abs(small.process(x).astype(np.int64) - reference(x, in_rate, out_rate)).max() <= 1


if __name__ == "__main__":  # the figures for BENCHMARKS.md, measured by the code above
    for low, high in RATE_PAIRS:
        design = filter_for(low, high)
        level, freq = worst_alias_db(high, low)
        print(f"{high} → {low}: worst alias {level:.1f} dB (from {freq:.0f} Hz)")
        level, freq = worst_image_db(low, high)
        print(f"{low} → {high}: worst image {level:.1f} dB (of {freq:.0f} Hz)")
        for a, b in ((high, low), (low, high)):
            levels = passband_db(a, b)
            print(f"{a} → {b}: passband {min(levels):+.3f} … {max(levels):+.3f} dB")
        stop = response(design.taps, design.rate, np.linspace(design.stop_hz, design.rate / 2, 3000))
        print(f"{low} ↔ {high}: {len(design.taps)} taps, stopband {20 * np.log10(stop.max()):.1f} dB, ", end="")
        print(f"delay {design.delay_ms} ms, measured {measured_lag(low, high, 200) * 1000 / design.rate} ms")
