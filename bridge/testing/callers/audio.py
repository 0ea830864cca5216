"""The simulated caller's audio: formats, frames, silence, speech detection, recordings. Pure.

A call's audio is one format of :mod:`bridge.audio.formats` (G.711 at 8 kHz, or L16 at 8, 16 or
24 kHz, little-endian here whatever byte order a carrier puts on the wire). The bundled caller
recording is 8 kHz G.711; for an L16 call it is expanded and, for 16 and 24 kHz, resampled with
the bridge's own polyphase filters, so every format has the same speech to send.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from bridge.audio import codec
from bridge.audio.formats import ALAW_8K, ULAW_8K, AudioFormat, Encoding
from bridge.audio.resample import Resampler
from bridge.audio.wavfile import CALLER_ALAW, CALLER_ULAW, Wav, bundled, parse_wav
from bridge.testing.callers.script import AudioSpec

# A frame is "voiced" when some sample reaches this linear magnitude (16-bit scale, about
# -36 dBFS). The bundled recording's pauses peak at 8; its quietest speech frames at ~500.
VOICE_THRESHOLD = 500

_SILENCE = {Encoding.ULAW: b"\xff", Encoding.ALAW: b"\xd5", Encoding.L16: b"\x00\x00"}
_WAV_ENCODING = {Encoding.ULAW: "ulaw", Encoding.ALAW: "alaw", Encoding.L16: "pcm16"}


def silence(fmt: AudioFormat, ms: int) -> bytes:
    """``ms`` of digital silence in ``fmt``."""
    return _SILENCE[fmt.encoding] * (fmt.sample_rate * ms // 1000)


def frame_bytes(fmt: AudioFormat, frame_ms: int) -> int:
    return fmt.bytes_per_ms * frame_ms


def split_frames(data: bytes, fmt: AudioFormat, frame_ms: int) -> list[bytes]:
    """Frames of ``frame_ms``; the last one is padded with silence, as a phone would."""
    size = frame_bytes(fmt, frame_ms)
    frames = [data[i : i + size] for i in range(0, len(data), size)]
    if frames and len(frames[-1]) < size:
        frames[-1] = frames[-1] + silence(fmt, frame_ms)[: size - len(frames[-1])]
    return frames


def linear(data: bytes, fmt: AudioFormat) -> np.ndarray:
    """The samples as int32 on the 16-bit scale (int32: ``abs(-32768)`` must not overflow)."""
    if fmt.encoding is Encoding.L16:
        return np.frombuffer(data[: len(data) & ~1], dtype="<i2").astype(np.int32)
    return np.frombuffer(codec.to_linear(data, fmt.encoding), dtype=np.int16).astype(np.int32)


def last_voiced(frames: list[bytes], fmt: AudioFormat) -> int:
    """Index of the last frame with a sample at or above :data:`VOICE_THRESHOLD`, -1 if none."""
    for i in range(len(frames) - 1, -1, -1):
        samples = linear(frames[i], fmt)
        if len(samples) and int(np.abs(samples).max()) >= VOICE_THRESHOLD:
            return i
    return -1


@cache
def recording(fmt: AudioFormat) -> bytes:
    """The bundled caller recording in ``fmt`` (cached: it is the same for every call)."""
    if fmt == ALAW_8K:
        return bundled(CALLER_ALAW).data
    ulaw = bundled(CALLER_ULAW).data
    if fmt == ULAW_8K:
        return ulaw
    samples = np.frombuffer(codec.to_linear(ulaw, Encoding.ULAW), dtype=np.int16)
    if fmt.sample_rate != 8000:
        samples = Resampler(8000, fmt.sample_rate).process(samples)
    return samples.astype("<i2").tobytes()


def load(spec: AudioSpec, fmt: AudioFormat) -> bytes:
    """The samples of ``spec`` in ``fmt``: raw bytes as they are, a WAV file only in ``fmt``."""
    if spec is None:
        return recording(fmt)
    if isinstance(spec, bytes | bytearray):
        if len(spec) % fmt.sample_width:
            raise ValueError(f"raw caller audio in {fmt.id} must be whole {fmt.sample_width}-byte samples")
        return bytes(spec)  # raw samples in the call's format
    wav = spec if isinstance(spec, Wav) else parse_wav(Path(spec).read_bytes())
    wanted = _WAV_ENCODING[fmt.encoding]
    if wav.encoding != wanted or wav.sample_rate != fmt.sample_rate:
        raise ValueError(
            f"caller audio must be {wanted} at {fmt.sample_rate} Hz to match {fmt.id}; "
            f"got {wav.encoding} at {wav.sample_rate} Hz"
        )
    return wav.data
