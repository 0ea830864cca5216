"""Audio for the bridge: G.711 codecs, streaming 8 ↔ 24 kHz resampling, format-pair converters.

Pure (no I/O, no clock, no trio). Most callers need only the converter API re-exported here.
"""

from bridge.audio.convert import (
    AudioError,
    CarrierFormat,
    Converter,
    SessionFormat,
    decoded_len,
    make_converter,
    parse_carrier_encoding,
)

__all__ = [
    "AudioError",
    "CarrierFormat",
    "Converter",
    "SessionFormat",
    "decoded_len",
    "make_converter",
    "parse_carrier_encoding",
]
