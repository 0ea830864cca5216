"""What a simulated caller does: :class:`CallerOptions`, and the carrier's credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bridge.testing.callers.playback import RESPONSE_GAP_MS
from bridge.testing.callers.registry import CallRegistry
from bridge.testing.callers.script import AudioSpec, Step

MULAW = "audio/x-mulaw"
ALAW = "audio/x-alaw"


@dataclass(frozen=True)
class Credentials:
    """What the simulated carrier authenticates with, as the carrier holds it.

    ``secret`` is, by carrier: Twilio's auth token; Telnyx's Ed25519 *private* key (base64 of its
    32 raw bytes: the bridge holds the public one); Plivo's auth token; Vonage's signature
    secret; SignalWire's signing key; Exotel's API token. ``user`` is Exotel's API key (the Basic
    user name). Never printed: the repr hides the secret.
    """

    secret: str = field(repr=False)
    user: str | None = None


@dataclass
class CallerOptions:
    """What the simulated caller does. With ``script`` unset the call is:
    ``leading_silence_ms`` of silence, then ``turns`` times the recording separated by ``gap_ms``
    of silence, then ``trailing_silence_ms`` of silence, then (if set) a ``WaitForReply`` of
    ``wait_for_reply_ms``; then the carrier's end of stream (``stop``, or closing the socket).
    A ``script`` replaces all of that, for example ``[Say(), Pause(800), Say()]``.

    ``carrier`` picks the protocol (``twilio``, ``telnyx``, ``plivo``, ``vonage``,
    ``signalwire``, ``exotel``) and ``audio_format`` the audio on the wire (a format id of
    :mod:`bridge.audio.formats`: ``ulaw_8k``, ``alaw_8k``, ``l16_8k``, ``l16_16k``, ``l16_24k``;
    None: the carrier's default). ``encoding`` is the Twilio caller's older way to say the same
    (``MULAW`` or ``ALAW``). ``params`` are the custom parameters the carrier carries from the
    answer document to the stream, in the carrier's own terms (see :mod:`bridge.testing.callers`).
    """

    url: str
    audio: AudioSpec = None  # None: bundled recording, in the call's format
    encoding: str | None = None  # Twilio: start.mediaFormat.encoding, MULAW or ALAW
    params: dict[str, str] = field(default_factory=dict)  # the carrier's custom parameters
    call_sid: str | None = None  # generated in the carrier's style when None
    stream_sid: str | None = None
    account_sid: str | None = None
    realtime: bool = True  # pace frames in real time; False: as fast as the socket takes them
    speed: float = 1.0  # pacing factor when paced (2.0: twice as fast)
    leading_silence_ms: int = 0
    trailing_silence_ms: int = 0
    turns: int = 1
    gap_ms: int = 1000
    script: list[Step] | None = None
    hang_up_after_ms: int | None = None  # end the stream this long after it opened
    wait_for_reply_ms: int | None = None
    reply_settle_ms: int = RESPONSE_GAP_MS
    interrupt_after_assistant_ms: int | None = None  # barge in after this much of a response
    interrupt_audio: AudioSpec = None  # None: the call's recording
    max_interrupts: int = 1
    dtmf: list[tuple[int, str]] = field(default_factory=list)  # (ms since stream start, digit)
    extra_headers: dict[str, str] = field(default_factory=dict)
    max_message_size: int = 1 << 20
    connect_timeout_s: float = 10.0
    close_timeout_s: float = 5.0
    send_timeout_s: float = 10.0  # a single send blocked this long aborts the call
    record_audio: bool = True  # keep sent/played/cleared bytes (turn off for load tests)
    registry: CallRegistry | None = None  # where the call registers while live (None: LIVE_CALLS)
    carrier: str = "twilio"
    audio_format: str | None = None
    from_number: str | None = None  # the caller's number, where the carrier's start carries it
    to_number: str | None = None
    credentials: Credentials | None = None  # None: present no credentials
    bearer_token: str | None = field(default=None, repr=False)  # SignalWire: the answer's authBearerToken
    signed_url: str | None = None
    """The stream URL as the carrier requested (and signed) it; default: ``url`` with ``wss://``
    (a carrier connects over TLS; a loopback test connects the same path over plain ``ws://``)."""
    l16_byte_order: Literal["little", "big"] | None = None  # None: the carrier's (Telnyx: big)
