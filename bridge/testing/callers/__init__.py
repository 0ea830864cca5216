"""Simulated callers: each carrier's side of a media stream and of its voice webhook (``bridge call``).

One engine (:mod:`.engine`) plays a phone call: it streams a recording in real time (or as fast
as the socket takes it), presses keys, barges in, hangs up, plays what the bridge sends at real
time and answers its markers, and records everything in a :class:`CallResult`. One small module
per carrier speaks that carrier's wire (:class:`~.dialect.CallerDialect`) and its voice webhook:

==========  ========================================  ==========================================
carrier     stream                                    answer document (``/{carrier}/answer``)
==========  ========================================  ==========================================
twilio      ``connected``/``start``, μ-law JSON        TwiML ``<Connect><Stream>``, ``<Parameter>``
telnyx      snake_case, PCMU/PCMA/L16 (big-endian)    TeXML, ``bidirectionalMode="rtp"``
plivo       ``start`` + ``extra_headers``,             XML ``<Stream bidirectional>``,
            ``playedStream``/``clearedAudio``         ``extraHeaders`` pairs
vonage      ``websocket:connected``, binary L16,       NCCO ``connect`` → ``websocket``,
            ``websocket:notify``/``cleared``          ``headers``
signalwire  Twilio's messages, PCMU or L16            cXML, ``authBearerToken``
exotel      snake_case, base64 L16 every 100 ms        ``{"url": "wss://…?sample-rate=N&k=v"}``
==========  ========================================  ==========================================

``params`` are what the carrier carries from the answer document to the stream in its own terms:
``customParameters`` (Twilio, SignalWire), ``custom_parameters`` (Telnyx, Exotel), the
``extra_headers`` pairs (Plivo) or ``websocket:connected``'s extra fields (Vonage). The answer
step (:func:`answer_call`) fetches and parses the document; its
:meth:`StreamSetup.caller_options` start the call it describes. With :class:`Credentials` the
caller signs or authenticates as the carrier does; without, it presents nothing.
"""

from bridge.testing.callers.answer import AnswerReply, answer_call, answer_url, fetch_answer, stream_url
from bridge.testing.callers.carriers import CALLERS, CarrierSide
from bridge.testing.callers.cli import build_parser, main
from bridge.testing.callers.engine import run_call
from bridge.testing.callers.options import ALAW, MULAW, CallerOptions, Credentials
from bridge.testing.callers.playback import PlaybackBuffer
from bridge.testing.callers.registry import LIVE_CALLS, CallRegistry, CallUpdate, LiveCall
from bridge.testing.callers.result import (
    CallResult,
    ClearEvent,
    InterruptEvent,
    MarkEvent,
    Utterance,
    result_to_dict,
    summarise,
)
from bridge.testing.callers.script import Pause, Say, Step, WaitForReply
from bridge.testing.callers.webhook import AnswerError, StreamSetup, WebhookCall, WebhookRequest

__all__ = [
    "ALAW",
    "CALLERS",
    "LIVE_CALLS",
    "MULAW",
    "AnswerError",
    "AnswerReply",
    "CallRegistry",
    "CallResult",
    "CallUpdate",
    "CallerOptions",
    "CarrierSide",
    "ClearEvent",
    "Credentials",
    "InterruptEvent",
    "LiveCall",
    "MarkEvent",
    "Pause",
    "PlaybackBuffer",
    "Say",
    "Step",
    "StreamSetup",
    "Utterance",
    "WaitForReply",
    "WebhookCall",
    "WebhookRequest",
    "answer_call",
    "answer_url",
    "build_parser",
    "fetch_answer",
    "main",
    "result_to_dict",
    "run_call",
    "stream_url",
    "summarise",
]
