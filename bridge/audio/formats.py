"""The table of audio formats: what carriers send, what a Realtime session takes, and their names.

Carrier formats (the audio on the phone side of a call), all mono:

==========  ==========================================  ===========  =================
id          encoding                                    sample rate  bytes per 20 ms
==========  ==========================================  ===========  =================
``ulaw_8k`` G.711 μ-law (one byte per sample)           8 kHz        160
``alaw_8k`` G.711 A-law (one byte per sample)           8 kHz        160
``l16_8k``  16-bit signed little-endian linear PCM      8 kHz        320
``l16_16k`` 16-bit signed little-endian linear PCM      16 kHz       640
``l16_24k`` 16-bit signed little-endian linear PCM      24 kHz       960
==========  ==========================================  ===========  =================

Session formats (the Realtime session's ``audio.input.format`` / ``audio.output.format``) are
three of these: ``pcmu`` is ``ulaw_8k``, ``pcma`` is ``alaw_8k`` and ``pcm16`` is ``l16_24k``
(https://platform.openai.com/docs/api-reference/realtime-client-events/session/update). A call
whose carrier format *is* its session's format needs no conversion at all.

"L16" here is little-endian, as Vonage (https://developer.vonage.com/en/voice/voice-api/concepts/websockets)
and Exotel (https://developer.exotel.com/docs/agentstream/websocket-protocol) document their linear
PCM. RTP's L16 (RFC 3551 §4.5.11) is big-endian: a dialect whose carrier sends network byte order
(Telnyx and Plivo do not say which they send) swaps the bytes before the converter sees them.

Every carrier dialect maps its own codec names to an :class:`AudioFormat` with
:func:`parse_encoding`, so the spellings live in one place.

Pure: no I/O, no clock, no trio.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ALAW_8K",
    "CARRIER_FORMATS",
    "L16_8K",
    "L16_16K",
    "L16_24K",
    "ULAW_8K",
    "AudioError",
    "AudioFormat",
    "Encoding",
    "SessionFormat",
    "parse_encoding",
]


class AudioError(ValueError):
    """A payload or format that cannot be converted. ``kind`` is a short label for metrics."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Encoding(enum.StrEnum):
    """How samples are coded."""

    ULAW = "ulaw"
    """ITU-T G.711 μ-law, one byte per sample."""
    ALAW = "alaw"
    """ITU-T G.711 A-law, one byte per sample."""
    L16 = "l16"
    """16-bit signed linear PCM, little-endian, two bytes per sample."""

    @property
    def sample_width(self) -> int:
        """Bytes per sample."""
        return 2 if self is Encoding.L16 else 1

    @property
    def is_g711(self) -> bool:
        return self is not Encoding.L16


#: The supported (encoding, sample rate) pairs: the table itself. G.711 is 8 kHz by definition.
_SUPPORTED: Final[frozenset[tuple[Encoding, int]]] = frozenset(
    {
        (Encoding.ULAW, 8000),
        (Encoding.ALAW, 8000),
        (Encoding.L16, 8000),
        (Encoding.L16, 16000),
        (Encoding.L16, 24000),
    }
)


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One row of the table: an encoding at a sample rate, mono. Immutable; compare with ``==``.

    Only the rows of the table can be built: any other pair raises ``AudioError(kind="format")``,
    so holding an ``AudioFormat`` means a converter exists for it.
    """

    encoding: Encoding
    sample_rate: int

    def __post_init__(self) -> None:
        try:
            encoding = Encoding(self.encoding)  # also accepts the plain value, e.g. "l16"
        except (ValueError, TypeError):
            encoding = None
        rate = self.sample_rate
        if encoding is None or type(rate) is not int or (encoding, rate) not in _SUPPORTED:
            raise AudioError("format", f"unsupported audio format {self.encoding!r} at {rate!r} Hz"[:200])
        object.__setattr__(self, "encoding", encoding)  # frozen: the one sanctioned write

    @property
    def sample_width(self) -> int:
        """Bytes per sample: 1 for G.711, 2 for L16."""
        return self.encoding.sample_width

    @property
    def bytes_per_ms(self) -> int:
        """Bytes of one millisecond of audio (8, 16, 32 or 48; always whole for the table's rates)."""
        return self.sample_width * self.sample_rate // 1000

    @property
    def id(self) -> str:
        """Stable short name for records, metrics and logs: ``ulaw_8k``, ``l16_16k``, ..."""
        return f"{self.encoding.value}_{self.sample_rate // 1000}k"

    def __str__(self) -> str:
        return self.id

    @classmethod
    def from_id(cls, text: str) -> AudioFormat:
        """The format whose :attr:`id` is ``text``; ``AudioError(kind="format")`` otherwise."""
        fmt = _BY_ID.get(text) if isinstance(text, str) else None
        if fmt is None:
            raise AudioError("format", f"unknown audio format id {text!r}"[:200])
        return fmt


ULAW_8K: Final = AudioFormat(Encoding.ULAW, 8000)
ALAW_8K: Final = AudioFormat(Encoding.ALAW, 8000)
L16_8K: Final = AudioFormat(Encoding.L16, 8000)
L16_16K: Final = AudioFormat(Encoding.L16, 16000)
L16_24K: Final = AudioFormat(Encoding.L16, 24000)

#: Every format a carrier may use, in table order.
CARRIER_FORMATS: Final[tuple[AudioFormat, ...]] = (ULAW_8K, ALAW_8K, L16_8K, L16_16K, L16_24K)
_BY_ID: Final[dict[str, AudioFormat]] = {fmt.id: fmt for fmt in CARRIER_FORMATS}


class SessionFormat(enum.Enum):
    """The Realtime session's audio format; the values are the config names (``realtime.audio_format``)."""

    PCMU = "pcmu"
    PCMA = "pcma"
    PCM16 = "pcm16"

    @property
    def audio(self) -> AudioFormat:
        """The samples this session format carries (``pcm16`` is ``l16_24k``)."""
        return _SESSION_AUDIO[self]

    @property
    def wire(self) -> dict[str, Any]:
        """The GA session-config object, e.g. ``{"type": "audio/pcm", "rate": 24000}`` (a fresh dict)."""
        return dict(_SESSION_WIRE[self])

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    @property
    def bytes_per_ms(self) -> int:
        return self.audio.bytes_per_ms

    @classmethod
    def from_config(cls, name: object) -> SessionFormat:
        """The format named ``name`` in the configuration; ``AudioError(kind="format")`` otherwise."""
        for fmt in cls:
            if fmt.value == name:
                return fmt
        raise AudioError("format", f"unknown session audio format {name!r}"[:200])

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


_SESSION_AUDIO: Final[dict[SessionFormat, AudioFormat]] = {
    SessionFormat.PCMU: ULAW_8K,
    SessionFormat.PCMA: ALAW_8K,
    SessionFormat.PCM16: L16_24K,
}
_SESSION_WIRE: Final[dict[SessionFormat, dict[str, Any]]] = {
    SessionFormat.PCMU: {"type": "audio/pcmu"},
    SessionFormat.PCMA: {"type": "audio/pcma"},
    SessionFormat.PCM16: {"type": "audio/pcm", "rate": 24000},
}


# --- carriers' names for their codecs ------------------------------------------------------------

#: Codec names as carriers spell them (lower-cased), each with the rate it implies, if any.
#: Sources: Twilio ``audio/x-mulaw`` (https://www.twilio.com/docs/voice/media-streams/websocket-messages),
#: Telnyx ``PCMU``/``PCMA``/``L16`` (https://developers.telnyx.com/docs/voice/programmable-voice/media-streaming),
#: Plivo ``audio/x-l16;rate=16000`` (https://docs.plivo.com/docs/voice/xml/audiostream),
#: Vonage ``audio/l16;rate=16000`` (https://developer.vonage.com/en/voice/voice-api/concepts/websockets),
#: SignalWire ``L16@16000h`` (https://signalwire.com/docs/compatibility-api/cxml/reference/voice/stream),
#: Exotel ``audio/x-raw`` and "raw/slin" (https://developer.exotel.com/docs/agentstream/websocket-protocol).
_NAMES: Final[dict[str, tuple[Encoding, int | None]]] = {
    **{
        name: (Encoding.ULAW, 8000)
        for name in ("audio/x-mulaw", "audio/mulaw", "audio/pcmu", "audio/ulaw", "pcmu", "mulaw", "ulaw", "g711_ulaw")
    },
    **{
        name: (Encoding.ALAW, 8000)
        for name in ("audio/x-alaw", "audio/alaw", "audio/pcma", "pcma", "alaw", "g711_alaw")
    },
    **{
        name: (Encoding.L16, None)
        for name in ("l16", "audio/l16", "audio/x-l16", "audio/x-raw", "raw", "audio/pcm", "pcm16", "linear16")
    },
    # Asterisk's names, which Exotel's "slin" follows: the rate is part of the name.
    "slin": (Encoding.L16, 8000),
    "audio/slin": (Encoding.L16, 8000),
    "slin16": (Encoding.L16, 16000),
    "slin24": (Encoding.L16, 24000),
}


def _parse_rate(text: str) -> int | None:
    """``"16000"`` or ``"16000h"`` (SignalWire) → 16000; anything else → None."""
    text = text.strip().lower().removesuffix("h")
    return int(text) if text.isdigit() and text.isascii() and len(text) <= 6 else None


def parse_encoding(name: str, rate: int | None = None) -> AudioFormat:
    """Map a carrier's codec name (and sample rate, if given apart) to an :class:`AudioFormat`.

    Case-insensitive. Accepts MIME-style names with parameters (``audio/x-mulaw``,
    ``audio/l16;rate=16000``, ``audio/x-l16; rate=8000``), bare codec names (``PCMU``, ``PCMA``,
    ``L16``, ``slin``), ``audio/x-raw`` and SignalWire's ``L16@16000h``. The rate comes from a
    ``rate=`` parameter, an ``@…h`` suffix or ``rate``; G.711 implies 8000. Everything else, a
    rate missing for L16, rates that disagree or a pair outside the table raises
    ``AudioError(kind="format")``.
    """
    if not isinstance(name, str) or len(name) > 200:
        raise AudioError("format", f"unsupported audio encoding {name!r}"[:200])
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int)):
        raise AudioError("format", f"sample rate {rate!r} is not an integer"[:200])
    codec, *params = (part.strip() for part in name.split(";"))
    codec, at, suffix = codec.partition("@")
    rate_texts = [suffix] if at else []
    for param in params:
        key, eq, value = param.partition("=")
        if eq and key.strip().lower() == "rate":
            rate_texts.append(value)
    known = _NAMES.get(codec.strip().lower())
    rates = [_parse_rate(text) for text in rate_texts]
    if known is None or None in rates:
        raise AudioError("format", f"unsupported audio encoding {name!r}"[:200])
    encoding, implied = known
    found = {r for r in (*rates, rate, implied) if r is not None}
    if not found:
        raise AudioError("format", f"no sample rate for {name!r}"[:200])
    if len(found) > 1:
        raise AudioError("format", f"conflicting sample rates for {name!r}: {sorted(found)}"[:200])
    return AudioFormat(encoding, found.pop())
