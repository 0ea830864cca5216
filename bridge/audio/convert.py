"""Format-pair converters between the carrier's audio and the Realtime session's audio.

A call has one carrier format (G.711 μ-law or A-law at 8 kHz) and one session format
(``audio/pcmu``, ``audio/pcma`` or ``audio/pcm`` 16-bit little-endian mono at 24 kHz). The
converter for the pair is chosen once per call by :func:`make_converter`:

=================  =========================  ====================================================
carrier, session   converter                  per frame
=================  =========================  ====================================================
same G.711 law     passthrough                nothing: the base64 ``str`` itself is returned
other G.711 law    transcode                  base64 decode, ``bytes.translate``, base64 encode
G.711 ↔ PCM16      resample                   decode, polyphase FIR 8 ↔ 24 kHz with state, encode
=================  =========================  ====================================================

Payloads are untrusted. Every converter rejects a payload that is not a string, empty, or larger
than ``max_payload_bytes`` (judged from its length, before decoding); decoding converters also
reject invalid base64 (strict mode) and PCM16 of odd length. Errors are :class:`AudioError` with a
short ``kind`` for metrics, raised before any state is touched, so the call simply goes on with
the next frame.

Pure: no I/O, no clock, no trio.
"""

from __future__ import annotations

import binascii
import enum
from typing import Any, Final, Protocol

import numpy as np

from bridge.audio import g711
from bridge.audio.resample import Resampler

__all__ = [
    "AudioError",
    "CarrierFormat",
    "Converter",
    "SessionFormat",
    "decoded_len",
    "make_converter",
    "parse_carrier_encoding",
]

DEFAULT_MAX_PAYLOAD_BYTES: Final = 1_000_000


class AudioError(ValueError):
    """A payload or format that cannot be converted. ``kind`` is a short label for metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class CarrierFormat(enum.Enum):
    """The carrier's media encoding (always 8 kHz mono); values are Twilio's ``encoding`` names."""

    ULAW = "audio/x-mulaw"
    ALAW = "audio/x-alaw"

    @property
    def sample_rate(self) -> int:
        return 8000

    @property
    def bytes_per_ms(self) -> int:
        return 8


class SessionFormat(enum.Enum):
    """The Realtime session's audio format (GA ``audio.input.format`` / ``audio.output.format``)."""

    PCMU = "pcmu"
    PCMA = "pcma"
    PCM16 = "pcm16"

    @property
    def wire(self) -> dict[str, Any]:
        """The GA session-config object, e.g. ``{"type": "audio/pcm", "rate": 24000}`` (a fresh dict)."""
        if self is SessionFormat.PCM16:
            return {"type": "audio/pcm", "rate": 24000}
        return {"type": f"audio/{self.value}"}

    @property
    def sample_rate(self) -> int:
        return 24000 if self is SessionFormat.PCM16 else 8000

    @property
    def bytes_per_ms(self) -> int:
        return 48 if self is SessionFormat.PCM16 else 8

    @classmethod
    def from_wire(cls, wire: object) -> SessionFormat:
        """Parse a GA format object (as sent back in ``session.updated``); AudioError(kind="format")."""
        if isinstance(wire, dict):
            kind = wire.get("type")
            if kind == "audio/pcmu":
                return cls.PCMU
            if kind == "audio/pcma":
                return cls.PCMA
            if kind == "audio/pcm" and wire.get("rate", 24000) == 24000:
                return cls.PCM16
        raise AudioError("format", f"unsupported session audio format: {wire!r}"[:200])


_CARRIER_ALIASES: Final[dict[str, CarrierFormat]] = {
    "audio/x-mulaw": CarrierFormat.ULAW,
    "audio/mulaw": CarrierFormat.ULAW,
    "audio/pcmu": CarrierFormat.ULAW,
    "pcmu": CarrierFormat.ULAW,
    "mulaw": CarrierFormat.ULAW,
    "ulaw": CarrierFormat.ULAW,
    "audio/x-alaw": CarrierFormat.ALAW,
    "audio/alaw": CarrierFormat.ALAW,
    "audio/pcma": CarrierFormat.ALAW,
    "pcma": CarrierFormat.ALAW,
    "alaw": CarrierFormat.ALAW,
}


def parse_carrier_encoding(encoding: str) -> CarrierFormat:
    """Map a carrier's encoding name to a :class:`CarrierFormat`.

    Case-insensitive; accepts ``audio/x-mulaw``, ``audio/x-alaw``, ``PCMU``, ``PCMA``,
    ``audio/pcmu``, ``audio/pcma`` and a few spellings more, with an optional ``;rate=8000``.
    Anything else (including another rate) raises ``AudioError(kind="format")``.
    """
    if isinstance(encoding, str):
        name, *params = (part.strip() for part in encoding.split(";"))
        fmt = _CARRIER_ALIASES.get(name.lower())
        rates = [p.replace(" ", "").lower() for p in params if p.lower().startswith("rate")]
        rate_ok = all(rate == "rate=8000" for rate in rates)
        if fmt is not None and rate_ok:
            return fmt
    raise AudioError("format", f"unsupported carrier audio encoding: {encoding!r}"[:200])


def decoded_len(payload_b64: str) -> int:
    """Bytes that ``payload_b64`` decodes to, from its length and padding alone (no decoding).

    Exact for valid base64; for other strings it is only an estimate, good enough for size limits.
    """
    n = len(payload_b64)
    full, rest = divmod(n, 4)
    if rest:  # unpadded tail: 2 chars → 1 byte, 3 chars → 2 bytes
        return full * 3 + max(rest - 1, 0)
    if n == 0:
        return 0
    pad = 2 if payload_b64.endswith("==") else 1 if payload_b64.endswith("=") else 0
    return full * 3 - pad


class Converter(Protocol):
    """Converts one call's audio both ways. Chosen once per call by :func:`make_converter`."""

    carrier: CarrierFormat
    session: SessionFormat
    passthrough: bool

    def to_session(self, payload_b64: str) -> str:
        """Caller → model: carrier base64 in, session base64 out. Raises AudioError on bad input."""
        ...

    def to_carrier(self, payload_b64: str) -> str:
        """Model → caller: session base64 in, carrier base64 out. May be "" (samples held back)."""
        ...

    def reset_to_carrier(self) -> None:
        """Forget the model → caller history (after a barge-in clear, the next response starts clean)."""
        ...


class _Checked:
    """Validation shared by all converters; nothing here touches converter state."""

    def __init__(self, carrier: CarrierFormat, session: SessionFormat, max_payload_bytes: int) -> None:
        self.carrier = carrier
        self.session = session
        self._max = max_payload_bytes

    def _check_size(self, payload_b64: str) -> None:
        if not isinstance(payload_b64, str):
            raise AudioError("base64", f"payload is {type(payload_b64).__name__}, not a base64 string")
        if not payload_b64:
            raise AudioError("empty", "empty audio payload")
        size = decoded_len(payload_b64)
        if size > self._max:
            raise AudioError("too_large", f"audio payload of {size} bytes exceeds {self._max}")

    def _decode(self, payload_b64: str, *, width: int) -> bytes:
        self._check_size(payload_b64)
        try:
            data = binascii.a2b_base64(payload_b64, strict_mode=True)
        except ValueError as exc:  # binascii.Error, or non-ASCII characters in a str
            raise AudioError("base64", f"invalid base64 audio payload: {exc}") from None
        if not data:
            raise AudioError("empty", "empty audio payload")
        if width == 2 and len(data) % 2:
            raise AudioError("odd_length", f"PCM16 payload of odd length {len(data)}")
        return data


def _b64(data: bytes | memoryview) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


class _Passthrough(_Checked):
    """Same format both sides: the payload string is forwarded as is, never decoded."""

    passthrough = True

    def to_session(self, payload_b64: str) -> str:
        self._check_size(payload_b64)
        return payload_b64

    def to_carrier(self, payload_b64: str) -> str:
        self._check_size(payload_b64)
        return payload_b64

    def reset_to_carrier(self) -> None:
        pass  # stateless


class _Transcode(_Checked):
    """μ-law ↔ A-law at 8 kHz: one ``bytes.translate`` per frame, stateless."""

    passthrough = False

    def __init__(self, carrier: CarrierFormat, session: SessionFormat, max_payload_bytes: int) -> None:
        super().__init__(carrier, session, max_payload_bytes)
        if carrier is CarrierFormat.ULAW:
            self._up, self._down = g711.ULAW_TO_ALAW, g711.ALAW_TO_ULAW
        else:
            self._up, self._down = g711.ALAW_TO_ULAW, g711.ULAW_TO_ALAW

    def to_session(self, payload_b64: str) -> str:
        return _b64(self._decode(payload_b64, width=1).translate(self._up))

    def to_carrier(self, payload_b64: str) -> str:
        return _b64(self._decode(payload_b64, width=1).translate(self._down))

    def reset_to_carrier(self) -> None:
        pass  # stateless


class _Resample(_Checked):
    """G.711 8 kHz ↔ PCM16 24 kHz: decode, streaming polyphase FIR (state per direction), encode."""

    passthrough = False

    def __init__(self, carrier: CarrierFormat, session: SessionFormat, max_payload_bytes: int) -> None:
        super().__init__(carrier, session, max_payload_bytes)
        if carrier is CarrierFormat.ULAW:
            self._table, self._encode = g711.ULAW_TO_FLOAT, g711.lin_to_ulaw
        else:
            self._table, self._encode = g711.ALAW_TO_FLOAT, g711.lin_to_alaw
        # Caller frames are 20 ms; model deltas can be much longer (larger ones are split).
        self._upsampler = Resampler(8000, 24000, capacity=800, out_dtype="<i2")  # wire PCM16 is little-endian
        self._downsampler = Resampler(24000, 8000, capacity=4800, out_dtype="=i2")  # audioop wants native

    def to_session(self, payload_b64: str) -> str:
        codes = np.frombuffer(self._decode(payload_b64, width=1), dtype=np.uint8)
        return _b64(self._upsampler.process_codes(codes, self._table).data)

    def to_carrier(self, payload_b64: str) -> str:
        samples = np.frombuffer(self._decode(payload_b64, width=2), dtype="<i2")
        out = self._downsampler.process(samples)
        if not len(out):
            return ""  # 1–2 samples: the decimator's phase holds them for the next delta
        return _b64(self._encode(out.data))

    def reset_to_carrier(self) -> None:
        self._downsampler.reset()


def make_converter(
    carrier: CarrierFormat, session: SessionFormat, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> Converter:
    """The converter for one call's format pair (each call needs its own: resamplers keep state)."""
    if not isinstance(carrier, CarrierFormat) or not isinstance(session, SessionFormat):
        raise AudioError("format", f"unsupported format pair {carrier!r}, {session!r}")
    if session is SessionFormat.PCM16:
        return _Resample(carrier, session, max_payload_bytes)
    same = (carrier is CarrierFormat.ULAW) == (session is SessionFormat.PCMU)
    if same:
        return _Passthrough(carrier, session, max_payload_bytes)
    return _Transcode(carrier, session, max_payload_bytes)
