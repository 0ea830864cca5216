"""Audio for the bridge: the table of formats, payload checks, G.711, streaming resampling, converters.

Pure (no I/O, no clock, no trio). Most callers need only what is re-exported here.
"""

from bridge.audio.convert import Converter, make_converter, max_payload_limit
from bridge.audio.formats import (
    ALAW_8K,
    CARRIER_FORMATS,
    L16_8K,
    L16_16K,
    L16_24K,
    ULAW_8K,
    AudioError,
    AudioFormat,
    Encoding,
    SessionFormat,
    parse_encoding,
)
from bridge.audio.payload import DEFAULT_MAX_PAYLOAD_BYTES, decoded_len, is_base64

__all__ = [
    "ALAW_8K",
    "CARRIER_FORMATS",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "L16_8K",
    "L16_16K",
    "L16_24K",
    "ULAW_8K",
    "AudioError",
    "AudioFormat",
    "Converter",
    "Encoding",
    "SessionFormat",
    "decoded_len",
    "is_base64",
    "make_converter",
    "max_payload_limit",
    "parse_encoding",
]
