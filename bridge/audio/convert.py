"""Format-pair converters between the carrier's audio and the Realtime session's audio.

A call has one carrier format and one session format (:mod:`bridge.audio.formats`). The
converter for the pair is chosen once per call by :func:`make_converter`, from the two formats
alone:

=========================================  ===========  ==============================================
carrier vs. session (``session.audio``)    ``method``   per payload
=========================================  ===========  ==============================================
the same format (e.g. μ-law ↔ ``pcmu``,    passthrough  checked, never decoded: the base64 ``str``
L16 24 kHz ↔ ``pcm16``)                                 itself is returned
μ-law ↔ A-law (8 kHz)                      transcode    base64 decode, ``bytes.translate``, encode
G.711 ↔ L16 at the same rate (8 kHz)       codec        decode, G.711 expand or compress, encode
different rates                            resample     decode, polyphase FIR with state, encode
=========================================  ===========  ==============================================

Rate pairs that occur: 8 ↔ 24 kHz (G.711 or L16 8 kHz carrier, ``pcm16`` session; L16 24 kHz
carrier, G.711 session), 16 ↔ 24 kHz and 16 ↔ 8 kHz (L16 16 kHz carrier). Each direction has its
own resampler, whose state is carried from one payload to the next.

Payloads are untrusted and base64 in and out in every case (a dialect whose carrier frames are
binary encodes them first). Every converter, passthrough included, rejects a payload that is not
a string, is empty, is larger than ``max_payload_bytes`` decoded, is not canonical base64 or is
not a whole number of samples (:mod:`bridge.audio.payload`). Errors are :class:`AudioError` with a
short ``kind`` for metrics, raised before any state is touched, so the call goes on with the next
payload.

Pure: no I/O, no clock, no trio.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import Final, Protocol

import numpy as np

from bridge.audio import codec, g711
from bridge.audio.formats import AudioError, AudioFormat, Encoding, SessionFormat
from bridge.audio.payload import DEFAULT_MAX_PAYLOAD_BYTES, MAX_APPEND_AUDIO_BYTES, PayloadCheck
from bridge.audio.resample import Resampler

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "Converter",
    "make_converter",
    "max_payload_limit",
]

_DECODE_TABLE: Final = {Encoding.ULAW: g711.ULAW_TO_FLOAT, Encoding.ALAW: g711.ALAW_TO_FLOAT}
_ENCODE: Final = {Encoding.ULAW: g711.lin_to_ulaw, Encoding.ALAW: g711.lin_to_alaw}
_TRANSLATE: Final = {
    (Encoding.ULAW, Encoding.ALAW): g711.ULAW_TO_ALAW,
    (Encoding.ALAW, Encoding.ULAW): g711.ALAW_TO_ULAW,
}


class Converter(Protocol):
    """Converts one call's audio both ways. Chosen once per call by :func:`make_converter`."""

    carrier: AudioFormat
    session: SessionFormat
    passthrough: bool
    method: str
    """``passthrough``, ``transcode``, ``codec`` or ``resample`` (for logs and benchmarks)."""

    def to_session(self, payload_b64: str) -> str:
        """Caller → model: carrier base64 in, session base64 out. Raises AudioError on bad input.

        May be "" when the carrier's rate is above the session's and the payload is shorter than
        the ratio (the decimator holds the samples for the next payload); send nothing then.
        """
        ...

    def to_carrier(self, payload_b64: str) -> str:
        """Model → caller: session base64 in, carrier base64 out. May be "" (samples held back)."""
        ...

    def reset_to_carrier(self) -> None:
        """Forget the model → caller history (after a barge-in clear, the next response starts clean)."""
        ...


def _b64(data: bytes | memoryview) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _no_state() -> None:
    pass  # stateless direction


class _Transcode:
    """μ-law ↔ A-law: one ``bytes.translate`` per payload, stateless."""

    def __init__(self, src: AudioFormat, dst: AudioFormat, max_bytes: int) -> None:
        self._decode = PayloadCheck(src, max_bytes).decode
        self._table = _TRANSLATE[src.encoding, dst.encoding]

    def convert(self, payload_b64: str) -> str:
        return _b64(self._decode(payload_b64).translate(self._table))


class _Codec:
    """G.711 ↔ L16 at the same rate: audioop expands or compresses, stateless."""

    def __init__(self, src: AudioFormat, dst: AudioFormat, max_bytes: int) -> None:
        self._decode = PayloadCheck(src, max_bytes).decode
        self._src, self._dst = src.encoding, dst.encoding

    def convert(self, payload_b64: str) -> str:
        return _b64(codec.from_linear(codec.to_linear(self._decode(payload_b64), self._src), self._dst))


class _Resample:
    """Different rates: decode into the resampler's buffer, resample with carried state, encode."""

    def __init__(self, src: AudioFormat, dst: AudioFormat, max_bytes: int) -> None:
        self._decode = PayloadCheck(src, max_bytes).decode
        self._table = _DECODE_TABLE.get(src.encoding)  # None: L16 in
        self._encode = _ENCODE.get(dst.encoding)  # None: L16 out
        # Wire L16 is little-endian; audioop's G.711 encoders want native order.
        out_dtype = "<i2" if self._encode is None else "=i2"
        self._resampler = Resampler(src.sample_rate, dst.sample_rate, out_dtype=out_dtype)
        self.reset = self._resampler.reset

    def convert(self, payload_b64: str) -> str:
        data = self._decode(payload_b64)
        if self._table is not None:
            out = self._resampler.process_codes(np.frombuffer(data, dtype=np.uint8), self._table)
        else:
            out = self._resampler.process(np.frombuffer(data, dtype="<i2"))
        if not len(out):
            return ""  # a decimator's phase holds these samples for the next payload
        return _b64(out.data if self._encode is None else self._encode(out.data))


_Leg = tuple[str, Callable[[str], str], Callable[[], None]]  # method, convert, reset


def _leg(src: AudioFormat, dst: AudioFormat, max_bytes: int) -> _Leg:
    """The cheapest correct way from ``src`` to ``dst``, chosen from the two formats alone."""
    if src == dst:
        return "passthrough", PayloadCheck(src, max_bytes).forward, _no_state  # checked, never decoded
    if src.sample_rate != dst.sample_rate:
        resample = _Resample(src, dst, max_bytes)
        return "resample", resample.convert, resample.reset
    if src.encoding.is_g711 and dst.encoding.is_g711:
        return "transcode", _Transcode(src, dst, max_bytes).convert, _no_state
    return "codec", _Codec(src, dst, max_bytes).convert, _no_state


class _PairConverter:
    """A :class:`Converter` made of two legs, whose functions are bound directly (no extra call)."""

    def __init__(self, carrier: AudioFormat, session: SessionFormat, max_payload_bytes: int) -> None:
        self.carrier = carrier
        self.session = session
        self.method, self.to_session, _ = _leg(carrier, session.audio, max_payload_bytes)
        _, self.to_carrier, self.reset_to_carrier = _leg(session.audio, carrier, max_payload_bytes)
        self.passthrough = self.method == "passthrough"

    def __repr__(self) -> str:
        return f"<Converter {self.carrier.id} ↔ {self.session.value} ({self.method})>"


def max_payload_limit(carrier: AudioFormat, session: SessionFormat) -> int:
    """The largest ``max_payload_bytes`` for which every ``to_session`` output still fits one
    ``input_audio_buffer.append`` event under the Realtime API's 15 MiB cap
    (https://platform.openai.com/docs/api-reference/realtime-client-events/input_audio_buffer/append).

    The output of ``b`` input bytes is at most ``b × session bytes/ms ÷ carrier bytes/ms`` plus two
    samples (a resampler's phase), so the limit follows from :data:`MAX_APPEND_AUDIO_BYTES`.
    """
    room = MAX_APPEND_AUDIO_BYTES - 2 * session.audio.sample_width
    return room * carrier.bytes_per_ms // session.audio.bytes_per_ms


def make_converter(
    carrier: AudioFormat, session: SessionFormat, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> Converter:
    """The converter for one call's format pair (each call needs its own: resamplers keep state).

    ``max_payload_bytes`` caps one payload, decoded, in either direction. ``AudioError(kind="format")``
    for arguments that are not formats; ``ValueError`` for a cap that is not positive or would let
    an ``input_audio_buffer.append`` exceed the API's cap (see :func:`max_payload_limit`).
    """
    if not isinstance(carrier, AudioFormat) or not isinstance(session, SessionFormat):
        raise AudioError("format", f"unsupported format pair {carrier!r}, {session!r}"[:200])
    limit = max_payload_limit(carrier, session)
    if not 0 < max_payload_bytes <= limit:
        raise ValueError(
            f"max_payload_bytes must be 1..{limit} for {carrier.id} ↔ {session.value} "
            f"(the Realtime API caps one event at 15 MiB), got {max_payload_bytes}"
        )
    return _PairConverter(carrier, session, max_payload_bytes)
