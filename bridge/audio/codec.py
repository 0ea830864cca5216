"""Sample bytes of any table encoding ↔ native-endian 16-bit linear samples.

What a consumer of linear audio needs (the local voice-activity detector, the same-rate
G.711 ↔ L16 converter): G.711 is expanded by audioop (see :mod:`bridge.audio.g711`), L16 is taken
as it is, byte-swapped only on a big-endian machine (wire L16 is little-endian).

Pure: no I/O, no clock, no trio.
"""

from __future__ import annotations

import sys
import warnings
from typing import Final

from bridge.audio import g711
from bridge.audio.formats import Encoding

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # see bridge.audio.g711
    import audioop

__all__ = ["from_linear", "to_linear"]

_BIG_ENDIAN: Final = sys.byteorder == "big"


def to_linear(data: bytes, encoding: Encoding) -> bytes:
    """Samples coded as ``encoding`` → 16-bit native-endian linear samples."""
    if encoding is Encoding.ULAW:
        return g711.ulaw_to_lin(data)
    if encoding is Encoding.ALAW:
        return g711.alaw_to_lin(data)
    return audioop.byteswap(data, 2) if _BIG_ENDIAN else data


def from_linear(samples: bytes, encoding: Encoding) -> bytes:
    """16-bit native-endian linear samples → samples coded as ``encoding``."""
    if encoding is Encoding.ULAW:
        return g711.lin_to_ulaw(samples)
    if encoding is Encoding.ALAW:
        return g711.lin_to_alaw(samples)
    return audioop.byteswap(samples, 2) if _BIG_ENDIAN else samples
