"""The simulator's audio: the bundled assistant recording in the three GA wire formats, and level maths.

Pure (no I/O beyond reading the bundled recording once): the Realtime simulator streams slices of
this audio as ``response.output_audio.delta`` and measures input levels for its VAD.
"""

from __future__ import annotations

import functools
import warnings
from typing import Final

import numpy as np
import numpy.typing as npt

from bridge.audio.wavfile import ASSISTANT_PCM16, bundled

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 and gone in 3.13, where the audioop-lts package provides
    # the same module; the warning is noise for us, not a signal.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PCMU: Final = "audio/pcmu"
PCMA: Final = "audio/pcma"
PCM: Final = "audio/pcm"
PCM_RATE: Final = 24000


def design_lowpass(cutoff_hz: float, rate: int, taps: int = 161, beta: float = 8.0) -> npt.NDArray[np.float64]:
    """Kaiser-windowed sinc low-pass FIR with unity DC gain.

    161 taps at beta 8 give a ~570 Hz transition band at 24 kHz and ~80 dB of stopband, so a 3.6 kHz
    cutoff is fully attenuated by 4 kHz, the Nyquist frequency after keeping every third sample.
    """
    n = np.arange(taps) - (taps - 1) / 2.0
    fc = cutoff_hz / rate
    h = 2.0 * fc * np.sinc(2.0 * fc * n) * np.kaiser(taps, beta)
    result: npt.NDArray[np.float64] = h / h.sum()
    return result


@functools.cache
def _assistant_pcm24k() -> bytes:
    wav = bundled(ASSISTANT_PCM16)
    if wav.encoding != "pcm16" or wav.sample_rate != PCM_RATE:
        raise ValueError(f"{ASSISTANT_PCM16}: expected 24 kHz PCM16, got {wav.encoding} {wav.sample_rate}")
    return wav.data


@functools.cache
def _assistant_pcm8k() -> bytes:
    # Offline over the whole signal, once: no streaming state to get wrong, and the cost is paid at
    # first use rather than per delta.
    samples = np.frombuffer(_assistant_pcm24k(), dtype="<i2").astype(np.float64)
    filtered = np.convolve(samples, design_lowpass(3600.0, PCM_RATE), mode="same")
    decimated = np.clip(np.round(filtered[::3]), -32768, 32767).astype("<i2")
    return decimated.tobytes()


@functools.cache
def assistant_audio(fmt_type: str) -> bytes:
    """The assistant recording in one of the three GA wire formats (cached per format)."""
    if fmt_type == PCM:
        return _assistant_pcm24k()
    if fmt_type == PCMU:
        return audioop.lin2ulaw(_assistant_pcm8k(), 2)
    if fmt_type == PCMA:
        return audioop.lin2alaw(_assistant_pcm8k(), 2)
    raise ValueError(f"unknown audio format {fmt_type!r}")


def bytes_per_ms(fmt_type: str) -> int:
    """48 bytes/ms for 24 kHz PCM16, 8 for G.711 at 8 kHz."""
    return 48 if fmt_type == PCM else 8


def sample_rate(fmt_type: str) -> int:
    return PCM_RATE if fmt_type == PCM else 8000


def decode_to_pcm16(data: bytes, fmt_type: str) -> bytes:
    if fmt_type == PCMU:
        return audioop.ulaw2lin(data, 2)
    if fmt_type == PCMA:
        return audioop.alaw2lin(data, 2)
    return data


def threshold_to_rms(threshold: float) -> float:
    """Map the API's 0..1 VAD threshold onto an RMS level of 16-bit audio.

    0.5 (the default) is -40 dBFS, 0 is -60 dBFS and 1 is -20 dBFS: quiet phone-line noise sits near
    -60 dBFS and speech peaks well above -30 dBFS, so the default triggers on speech but not hiss,
    and "higher needs louder audio", as the real parameter promises.
    """
    return dbfs_to_rms(-60.0 + 40.0 * threshold)


def dbfs_to_rms(dbfs: float) -> float:
    return float(32768.0 * 10.0 ** (dbfs / 20.0))


def loop_slice(source: bytes, lo: int, hi: int) -> bytes:
    """``source[lo:hi]`` as if ``source`` repeated forever (answers longer than the recording loop it)."""
    n = len(source)
    if hi <= n:
        return source[lo:hi]
    parts: list[bytes] = []
    pos = lo
    while pos < hi:
        start = pos % n
        take = min(hi - pos, n - start)
        parts.append(source[start : start + take])
        pos += take
    return b"".join(parts)


__all__ = [
    "PCM",
    "PCMA",
    "PCMU",
    "PCM_RATE",
    "assistant_audio",
    "bytes_per_ms",
    "dbfs_to_rms",
    "decode_to_pcm16",
    "design_lowpass",
    "loop_slice",
    "sample_rate",
    "threshold_to_rms",
]
