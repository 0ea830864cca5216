"""Checks on base64 audio payloads, so that nothing invalid goes upstream.

Payloads are untrusted: a carrier's ``media`` frame or a model's audio delta. Before a payload is
forwarded or converted it must be

* a non-empty ``str``;
* no larger than a maximum, judged from its length before anything is decoded;
* canonical base64 (RFC 4648 §4: the standard alphabet, length a multiple of 4, at most two
  ``=`` and only at the end; no whitespace, no line breaks);
* a whole number of samples for its format (L16: an even number of bytes).

The Realtime API answers an ``input_audio_buffer.append`` whose audio is not valid base64 with an
``invalid_value`` error, and caps one client event at 15 MiB
(https://platform.openai.com/docs/api-reference/realtime-client-events/input_audio_buffer/append),
so both are checked here rather than discovered there.

Checking is not decoding: :meth:`PayloadCheck.forward` (used by the passthrough converters) looks
at the characters only, with ``str.isascii`` (O(1) in CPython: the string knows its widest
character), ``str.rstrip`` and one ``bytes.translate`` that deletes the alphabet; the result must
be empty. That was the cheapest correct candidate measured by ``bench/audio_bench.py`` (a strict
``binascii.a2b_base64`` that decodes and discards, and a compiled regular expression, were both
slower; figures in BENCHMARKS.md). :meth:`PayloadCheck.decode` (used by converters that need the
bytes anyway) decodes with ``binascii`` in strict mode, which accepts exactly the same strings once
its tolerance of surplus padding (``"AAAA===="``, ``"AAAA="``) is ruled out by the length.

Pure: no I/O, no clock, no trio.
"""

from __future__ import annotations

import binascii
from typing import Final

from bridge.audio.formats import AudioError, AudioFormat

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_APPEND_AUDIO_BYTES",
    "MAX_EVENT_BYTES",
    "PayloadCheck",
    "decoded_len",
    "is_base64",
]

#: The Realtime API's cap on one client event (``input_audio_buffer.append``): 15 MiB.
MAX_EVENT_BYTES: Final = 15 * 1024 * 1024
#: Room kept for the event's JSON around the audio (``{"type":"input_audio_buffer.append",
#: "audio":"…"}`` is 48 bytes; an ``event_id`` would add a few dozen).
_ENVELOPE_BYTES: Final = 4096
#: The most decoded audio one ``input_audio_buffer.append`` can carry under :data:`MAX_EVENT_BYTES`
#: (base64 makes 4 characters of every 3 bytes): 11,793,408 bytes.
MAX_APPEND_AUDIO_BYTES: Final = (MAX_EVENT_BYTES - _ENVELOPE_BYTES) // 4 * 3
#: Default cap on one payload, decoded: 10 s of the richest format (L16 at 24 kHz, 48 bytes/ms).
#: Carrier frames are 20–100 ms and model deltas about 100 ms, so real traffic is far below it; the
#: largest output it allows (μ-law → 24 kHz L16, ×6) is 2.9 MB, a quarter of the API's cap.
DEFAULT_MAX_PAYLOAD_BYTES: Final = 480_000

_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


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


def is_base64(text: str) -> bool:
    """Whether ``text`` is canonical padded base64 (the empty string is). Looks, never decodes."""
    n = len(text)
    if n & 3 or not text.isascii():
        return False
    body = text.rstrip("=")
    return n - len(body) <= 2 and not body.encode("ascii").translate(None, _ALPHABET)


class PayloadCheck:
    """The checks for payloads of one format, with one size limit. Holds no call state."""

    __slots__ = ("_max", "_quick", "_width", "fmt")

    def __init__(self, fmt: AudioFormat, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.fmt = fmt
        self._width = fmt.sample_width
        self._max = max_bytes
        # Strings up to this long cannot decode to more than max_bytes: one comparison in the
        # common case, decoded_len() only near the limit.
        self._quick = 4 * (max_bytes // 3)

    @property
    def max_bytes(self) -> int:
        return self._max

    def _check_size(self, payload: str) -> int:
        """Type, emptiness and size; returns the string's length."""
        if not isinstance(payload, str):
            raise AudioError("base64", f"payload is {type(payload).__name__}, not a base64 string")
        n = len(payload)
        if not n:
            raise AudioError("empty", "empty audio payload")
        if n > self._quick:
            size = decoded_len(payload)
            if size > self._max:
                raise AudioError("too_large", f"audio payload of {size} bytes exceeds {self._max}")
        return n

    def forward(self, payload: str) -> str:
        """Check ``payload`` without decoding it and return it unchanged (the passthrough)."""
        n = self._check_size(payload)
        if n & 3 or not payload.isascii():
            raise AudioError("base64", "invalid base64 audio payload")
        body = payload.rstrip("=")
        pad = n - len(body)
        if pad > 2 or body.encode("ascii").translate(None, _ALPHABET):
            raise AudioError("base64", "invalid base64 audio payload")
        if self._width == 2 and (3 * (n >> 2) - pad) & 1:
            raise AudioError("odd_length", f"L16 payload of odd length {3 * (n >> 2) - pad}")
        return payload

    def decode(self, payload: str) -> bytes:
        """Check ``payload`` and decode it (strict base64) for a converter that needs the bytes."""
        n = self._check_size(payload)
        if n & 3:
            raise AudioError("base64", "invalid base64 audio payload: length not a multiple of 4")
        try:
            data = binascii.a2b_base64(payload, strict_mode=True)
        except ValueError as exc:  # binascii.Error, or non-ASCII characters in a str
            raise AudioError("base64", f"invalid base64 audio payload: {exc}") from None
        # Strict mode lets surplus padding through ("AAAA===="): the length must match the padding.
        if len(data) != 3 * (n >> 2) - (payload[-1] == "=") - (payload[-2] == "="):
            raise AudioError("base64", "invalid base64 audio payload: surplus padding")
        if not data:
            raise AudioError("empty", "empty audio payload")
        if len(data) % self._width:
            raise AudioError("odd_length", f"L16 payload of odd length {len(data)}")
        return data
