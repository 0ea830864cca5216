"""Read the mono WAV files bundled with bridge (PCM16, G.711 μ-law, G.711 A-law).

The stdlib ``wave`` module refuses the G.711 format tags (6 and 7), so the RIFF chunks are
walked here. Pure: bytes in, samples out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from importlib import resources

FORMAT_PCM = 1
FORMAT_ALAW = 6
FORMAT_ULAW = 7

_ENCODINGS = {FORMAT_PCM: "pcm16", FORMAT_ALAW: "alaw", FORMAT_ULAW: "ulaw"}


class WavError(ValueError):
    """The bytes are not a mono WAV file in one of the supported encodings."""


@dataclass(frozen=True, slots=True)
class Wav:
    encoding: str  # "pcm16", "ulaw" or "alaw"
    sample_rate: int
    data: bytes  # raw sample bytes, no header

    @property
    def duration_ms(self) -> float:
        width = 2 if self.encoding == "pcm16" else 1
        return len(self.data) / width / self.sample_rate * 1000.0


def parse_wav(blob: bytes) -> Wav:
    """Parse a RIFF/WAVE file held in memory."""
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(blob):
        chunk_id = blob[pos : pos + 4]
        (size,) = struct.unpack_from("<I", blob, pos + 4)
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise WavError("fmt chunk too short")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavError("data chunk before fmt chunk")
            tag, channels, rate, bits = fmt
            if tag not in _ENCODINGS:
                raise WavError(f"unsupported WAV format tag {tag}")
            if channels != 1:
                raise WavError(f"only mono is supported, got {channels} channels")
            expected_bits = 16 if tag == FORMAT_PCM else 8
            if bits != expected_bits:
                raise WavError(f"format tag {tag} needs {expected_bits} bits per sample, got {bits}")
            data = body
            if tag == FORMAT_PCM and len(data) % 2:
                data = data[:-1]
            return Wav(_ENCODINGS[tag], rate, bytes(data))
        pos += 8 + size + (size & 1)  # chunks are word-aligned
    raise WavError("no data chunk")


def bundled(name: str) -> Wav:
    """Load one of the recordings shipped in ``bridge/data`` (for the demo and the simulator)."""
    blob = resources.files("bridge").joinpath("data", name).read_bytes()
    return parse_wav(blob)


CALLER_ULAW = "caller_8k_ulaw.wav"
CALLER_ALAW = "caller_8k_alaw.wav"
ASSISTANT_PCM16 = "assistant_24k_pcm16.wav"
