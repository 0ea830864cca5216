"""CallCore: everything one call decides, as a pure state machine.

Inputs are carrier events, model events and clock ticks, each with ``now`` (seconds, monotonic)
passed in; outputs are actions for the trio runner to carry out (send a frame, connect the
model, end the call) and notes to log and count. No sockets, no trio, no clock reads: the whole
call can be driven from a test.

States (the turn is a sub-state of ``active``)::

    connecting ──start──▶ starting ──session.updated──▶ active ──▶ closing ──▶ ended
         │                    │                            │                  └─▶ failed
         └────────────────────┴── stop / close / error ────┘

* connecting: carrier WebSocket open, waiting for ``start``.
* starting:   ``start`` received, model session opening; caller audio is buffered.
* active:     audio flows both ways. turn ∈ {listening, user_speaking, assistant_speaking}.
* closing:    the end was decided; the runner is closing both sockets.
* ended:      closed normally (caller hung up, operator, drain, ...); failed: closed by an error.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bridge.accounting.meter import UsageMeter
from bridge.audio import (
    AudioError,
    Converter,
    SessionFormat,
    decoded_len,
    make_converter,
    parse_encoding,
)
from bridge.call.playback import PlaybackTracker
from bridge.call.vad import EnergyVad
from bridge.carrier import base as tel
from bridge.carrier.twilio import TwilioWriter
from bridge.config import LocalVad, SessionSettings, Settings
from bridge.realtime import events as rt
from bridge.realtime.session import build_session_update, format_mismatch, greeting_response

# --- actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendCarrier:
    text: str
    barge_in_at: float | None = None  # set on a barge-in clear: when the trigger arrived


@dataclass(frozen=True, slots=True)
class SendModel:
    text: str


@dataclass(frozen=True, slots=True)
class ConnectModel:
    model: str


@dataclass(frozen=True, slots=True)
class EndCall:
    reason: str  # caller_hangup, model_error, operator, timeout, drain, protocol_error, bridge_error
    detail: str
    close_code: int = 1000


@dataclass(frozen=True, slots=True)
class Note:
    """Something to log (and count): ``name`` plus fields. Never affects the call."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)


Action = SendCarrier | SendModel | ConnectModel | EndCall | Note

CONNECTING, STARTING, ACTIVE, CLOSING, ENDED, FAILED = (
    "connecting",
    "starting",
    "active",
    "closing",
    "ended",
    "failed",
)
LISTENING, USER_SPEAKING, ASSISTANT_SPEAKING = "listening", "user_speaking", "assistant_speaking"

_SESSION_FORMATS = {"pcmu": SessionFormat.PCMU, "pcma": SessionFormat.PCMA, "pcm16": SessionFormat.PCM16}
# Errors the API sends in races the bridge cannot avoid; they change nothing (reference §8.7).
BENIGN_MODEL_ERRORS = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response", "input_audio_buffer_commit_empty"}
)
FATAL_MODEL_ERRORS = frozenset({"session_expired", "beta_api_shape_disabled", "invalid_api_key"})
# Caller audio kept while the model session opens (a few hundred ms normally).
MAX_BUFFERED_FRAMES = 250  # 5 s of 20 ms frames
NORMAL_END_REASONS = frozenset({"caller_hangup", "operator", "drain"})


@dataclass(slots=True)
class CallStats:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0  # carrier audio bytes received from the caller
    bytes_out: int = 0  # carrier audio bytes sent to the caller
    dropped_frames: int = 0
    audio_errors: int = 0
    protocol_errors: int = 0
    model_errors: int = 0
    barge_ins: int = 0
    barge_in_reactions: list[float] = field(default_factory=list)
    turns: int = 0  # responses that produced audio
    dtmf: int = 0
    response_latencies: list[float] = field(default_factory=list)


class CallCore:
    def __init__(self, settings: Settings, call_id: str, now: float) -> None:
        self.settings = settings
        self.call_id = call_id
        self.state = CONNECTING
        self.started_at = now
        self.last_carrier_at = now
        self.stats = CallStats()
        self.end_reason: str | None = None
        self.end_detail = ""
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.parameters: dict[str, str] = {}
        self.profile = "default"
        self.session: SessionSettings | None = None
        self.converter: Converter | None = None
        self.meter: UsageMeter | None = None
        self.warnings: list[str] = []
        self.transcript: list[dict[str, Any]] = []
        self._writer: TwilioWriter | None = None
        self._session_update: dict[str, Any] | None = None
        self._buffer: deque[str] = deque()
        self._pending_dtmf: list[str] = []
        self._tracker = PlaybackTracker()
        self._response_id: str | None = None  # response in progress
        self._muted_items: set[str] = set()
        self._muted_responses: set[str] = set()
        self._create_in_flight = False  # a response.create sent, its response.created not seen yet
        self._response_wanted = False  # another response is needed once the current one is done
        self._user_speaking = False
        self._speech_end_at: float | None = None
        self._awaiting_first_audio = False
        self._vad: EnergyVad | None = None
        self._vad_settings: LocalVad | None = None
        self._commit_pending = False  # the local detector ended a turn before the session was ready
        self._bytes_per_ms_session = 8.0

    # --- read-outs -------------------------------------------------------------------------
    @property
    def tracker(self) -> PlaybackTracker:
        return self._tracker

    def turn(self, now: float) -> str:
        if self._user_speaking:
            return USER_SPEAKING
        if self._tracker.is_playing(now) or self._response_id is not None:
            return ASSISTANT_SPEAKING
        return LISTENING

    @property
    def model_ready(self) -> bool:
        return self.state == ACTIVE

    # --- state -------------------------------------------------------------------------------
    def _to(self, state: str, out: list[Action], **fields: Any) -> None:
        if state != self.state:
            out.append(Note("state", {"from": self.state, "to": state, **fields}))
            self.state = state

    def end(self, reason: str, detail: str, out: list[Action], close_code: int = 1000) -> None:
        """Decide the end of the call once; later causes are ignored (the first one is the truth)."""
        if self.end_reason is not None:
            return
        self.end_reason, self.end_detail = reason, detail
        self._to(CLOSING, out, reason=reason)
        out.append(EndCall(reason, detail, close_code))

    def finish(self) -> list[Action]:
        out: list[Action] = []
        reason = self.end_reason or "caller_hangup"
        self._to(ENDED if reason in NORMAL_END_REASONS else FAILED, out, reason=reason)
        return out

    # --- carrier side ------------------------------------------------------------------------
    def on_carrier(self, ev: tel.CarrierEvent, now: float) -> list[Action]:
        self.last_carrier_at = now
        if type(ev) is tel.Media:
            return self._on_media(ev, now)
        out: list[Action] = []
        if isinstance(ev, tel.MarkEcho):
            self._tracker.on_echo(ev.name, now)
        elif isinstance(ev, tel.Start):
            self._on_start(ev, now, out)
        elif isinstance(ev, tel.Dtmf):
            self._on_dtmf(ev, out)
        elif isinstance(ev, tel.Stop):
            self.end("caller_hangup", "carrier sent stop", out)
        elif isinstance(ev, tel.CarrierError):
            self.stats.protocol_errors += 1
            out.append(Note("carrier_error", {"kind": ev.kind, "reason": ev.reason, "fatal": ev.fatal}))
            if ev.fatal:
                self.end("protocol_error", ev.reason, out, close_code=1008)
        # Connected carries nothing the call needs.
        return out

    def _on_start(self, ev: tel.Start, now: float, out: list[Action]) -> None:
        if self.state != CONNECTING:
            self.stats.protocol_errors += 1
            out.append(Note("carrier_error", {"kind": "duplicate_start", "reason": "second start ignored"}))
            return
        try:
            carrier_format = parse_encoding(ev.encoding, ev.sample_rate)
        except AudioError as exc:
            self.stats.protocol_errors += 1
            self.end("protocol_error", f"unsupported media format {ev.encoding!r}: {exc}", out, 1003)
            return
        if ev.channels != 1:
            self.end("protocol_error", f"unsupported {ev.sample_rate} Hz x{ev.channels}", out, 1003)
            return
        self.stream_sid, self.call_sid = ev.stream_sid, ev.call_sid
        self.parameters = dict(ev.custom_parameters)
        self.profile, self.session, warning = self.settings.session_for(self.parameters.get("profile"))
        if warning:
            self.warnings.append(warning)
            out.append(Note("profile_fallback", {"warning": warning}))
        session = self.session
        session_format = _SESSION_FORMATS[session.audio_format]
        self._bytes_per_ms_session = 48.0 if session_format is SessionFormat.PCM16 else 8.0
        self.converter = make_converter(carrier_format, session_format)
        self._writer = TwilioWriter(ev.stream_sid)
        transcription_model = session.transcription.model if session.transcription else None
        self.meter = UsageMeter(session.model, self.settings.pricing, transcription_model)
        self._session_update = build_session_update(session, self.parameters)
        if isinstance(session.turn_detection, LocalVad):
            self._vad_settings = session.turn_detection
            self._vad = EnergyVad(
                start_dbfs=session.turn_detection.start_dbfs,
                stop_dbfs=session.turn_detection.stop_dbfs,
                start_ms=session.turn_detection.start_ms,
                end_silence_ms=session.turn_detection.end_silence_ms,
            )
        self._to(
            STARTING,
            out,
            stream_sid=ev.stream_sid,
            call_sid=ev.call_sid,
            profile=self.profile,
            model=session.model,
            carrier_format=carrier_format.id,
            session_format=session.audio_format,
        )
        out.append(ConnectModel(session.model))

    def _on_media(self, ev: tel.Media, now: float) -> list[Action]:
        stats = self.stats
        if self.converter is None:
            stats.protocol_errors += 1
            return [Note("carrier_error", {"kind": "media_before_start", "reason": "media before start"})]
        stats.frames_in += 1
        try:
            payload = self.converter.to_session(ev.payload)
        except AudioError as exc:
            stats.audio_errors += 1
            return [Note("audio_error", {"kind": exc.kind, "direction": "to_model", "reason": str(exc)})]
        stats.bytes_in += decoded_len(ev.payload)
        out: list[Action] = []
        if self._vad is not None:
            self._local_vad(ev.payload, now, out)
        if not payload:
            return out  # a decimating converter held the samples back for the next frame
        if self.state == ACTIVE:
            out.append(SendModel(rt.append_audio(payload)))
        elif self.state == STARTING:
            if len(self._buffer) >= MAX_BUFFERED_FRAMES:
                self._buffer.popleft()
                stats.dropped_frames += 1
            self._buffer.append(payload)
        return out

    def _on_dtmf(self, ev: tel.Dtmf, out: list[Action]) -> None:
        self.stats.dtmf += 1
        out.append(Note("dtmf", {"digit": ev.digit}))
        if self.state == STARTING:
            self._pending_dtmf.append(ev.digit)  # given to the model once its session is ready
        elif self.state == ACTIVE:
            self._send_dtmf(ev.digit, out)

    def _send_dtmf(self, digit: str, out: list[Action], respond: bool = True) -> None:
        # The WebSocket API has no DTMF event (SIP only), so the digit becomes a user message.
        out.append(SendModel(rt.dumps(rt.user_text(f"[The caller pressed the keypad key {digit}]"))))
        if respond and self.session is not None and self.session.dtmf_response:
            self._request_response(out)

    def _request_response(self, out: list[Action]) -> None:
        # Only one response may run at a time (conversation_already_has_active_response), so a
        # request made while one runs, or while a create is on its way, waits for response.done.
        if self._response_id is None and not self._create_in_flight:
            out.append(SendModel(rt.dumps(rt.response_create())))
            self._create_in_flight = True
        else:
            self._response_wanted = True

    def _local_vad(self, payload_b64: str, now: float, out: list[Action]) -> None:
        assert self._vad is not None and self.converter is not None
        try:
            change = self._vad.feed(payload_b64, self.converter.carrier)
        except AudioError:
            return
        if change == "start":
            self._user_speaking = True
            out.append(Note("speech_started", {"source": "local_vad"}))
            if self.state == ACTIVE:
                self.barge_in(now, out)
        elif change == "stop":
            self._user_speaking = False
            self._speech_end_at = now
            self._awaiting_first_audio = True
            out.append(Note("speech_stopped", {"source": "local_vad"}))
            if self.state == ACTIVE:
                self._commit_turn(out)
            elif self.state == STARTING:
                self._commit_pending = True  # committed once the buffered audio has been sent

    def _commit_turn(self, out: list[Action]) -> None:
        out.append(SendModel(rt.dumps(rt.commit())))
        if self._vad_settings is not None and self._vad_settings.create_response:
            self._request_response(out)

    # --- model side --------------------------------------------------------------------------
    def on_model_connected(self, now: float) -> list[Action]:
        assert self._session_update is not None
        return [SendModel(rt.dumps(self._session_update))]

    def on_model(self, ev: rt.ModelEvent, now: float) -> list[Action]:
        if type(ev) is rt.AudioDelta:
            return self._on_delta(ev, now)
        out: list[Action] = []
        if isinstance(ev, rt.SpeechStarted):
            self._user_speaking = True
            self.barge_in(now, out)
        elif isinstance(ev, rt.SpeechStopped):
            self._user_speaking = False
            self._speech_end_at = now
            self._awaiting_first_audio = True
        elif isinstance(ev, rt.ResponseCreated):
            self._response_id = ev.response_id
            self._create_in_flight = False
        elif isinstance(ev, rt.ResponseDone):
            self._on_response_done(ev, out)
        elif isinstance(ev, rt.SessionUpdated):
            self._on_session_updated(ev, now, out)
        elif isinstance(ev, rt.ItemTruncated):
            out.append(Note("truncated", {"item_id": ev.item_id, "audio_end_ms": ev.audio_end_ms}))
        elif isinstance(ev, rt.InputTranscript):
            if self.meter is not None and ev.usage:
                self.meter.add_transcription_usage(ev.usage)
            self._transcript("caller", ev.transcript, out)
        elif isinstance(ev, rt.OutputTranscript):
            self._transcript("assistant", ev.transcript, out)
        elif isinstance(ev, rt.ModelError):
            self._on_model_error(ev, out)
        elif isinstance(ev, rt.Malformed):
            self.stats.protocol_errors += 1
            out.append(Note("model_protocol_error", {"event_type": ev.event_type, "reason": ev.reason}))
        return out

    def _on_session_updated(self, ev: rt.SessionUpdated, now: float, out: list[Action]) -> None:
        if self.state != STARTING:
            return
        assert self._session_update is not None
        mismatch = format_mismatch(self._session_update, ev.session)
        if mismatch:
            # Forwarding audio in the wrong format is static in the caller's ear (§8.4).
            self.end("model_error", f"audio format not applied: {mismatch}", out, 1011)
            return
        self._to(ACTIVE, out)
        for payload in self._buffer:
            out.append(SendModel(rt.append_audio(payload)))
        self._buffer.clear()
        # With a greeting, its response also answers whatever arrived while the session opened:
        # only one response runs at a time, and a second response.create would lose the greeting.
        greeting = self.session is not None and bool(self.session.greeting)
        if self._commit_pending:
            self._commit_pending = False
            if greeting:
                out.append(SendModel(rt.dumps(rt.commit())))
            else:
                self._commit_turn(out)
        for digit in self._pending_dtmf:
            self._send_dtmf(digit, out, respond=not greeting)
        self._pending_dtmf.clear()
        if self.session is not None and self.session.greeting:
            out.append(SendModel(rt.dumps(greeting_response(self.session, self.parameters))))
            self._create_in_flight = True

    def _on_delta(self, ev: rt.AudioDelta, now: float) -> list[Action]:
        if ev.item_id in self._muted_items or ev.response_id in self._muted_responses:
            return []  # audio of an interrupted answer: the caller must not hear it
        if self._writer is None or self.converter is None:
            return []
        try:
            model_ms = decoded_len(ev.delta) / self._bytes_per_ms_session
            payload = self.converter.to_carrier(ev.delta)
        except AudioError as exc:
            self.stats.audio_errors += 1
            return [Note("audio_error", {"kind": exc.kind, "direction": "to_carrier", "reason": str(exc)})]
        if not payload:
            self._tracker.on_received_only(ev.item_id, model_ms)
            return []
        carrier_bytes = decoded_len(payload)
        mark = self._tracker.on_sent(ev.item_id, carrier_bytes / self.converter.carrier.bytes_per_ms, model_ms, now)
        self.stats.frames_out += 1
        self.stats.bytes_out += carrier_bytes
        out: list[Action] = [SendCarrier(self._writer.media(payload)), SendCarrier(self._writer.mark(mark))]
        if self._awaiting_first_audio:
            self._awaiting_first_audio = False
            if self._speech_end_at is not None:
                latency = now - self._speech_end_at
                self.stats.response_latencies.append(latency)
                out.append(Note("response_latency", {"seconds": latency}))
        return out

    def _on_response_done(self, ev: rt.ResponseDone, out: list[Action]) -> None:
        if self._response_id == ev.response_id or self._response_id is None:
            self._response_id = None
        if self.meter is not None and ev.usage is not None:
            self.meter.add_response_usage(ev.usage)
        if ev.response_id not in self._muted_responses and ev.status == "completed":
            self.stats.turns += 1
        out.append(
            Note(
                "response_done",
                {"response_id": ev.response_id, "status": ev.status, "reason": ev.reason, "usage": ev.usage},
            )
        )
        if ev.status == "failed":
            out.append(Note("model_error", {"code": ev.error_code or "response_failed", "message": ev.reason}))
        if self._response_wanted and not self._create_in_flight:
            self._response_wanted = False
            self._request_response(out)

    def _on_model_error(self, ev: rt.ModelError, out: list[Action]) -> None:
        self.stats.model_errors += 1
        benign = ev.code in BENIGN_MODEL_ERRORS
        if ev.code == "conversation_already_has_active_response":
            # Our create lost a race with a response the server started itself (VAD): the
            # request still stands, so ask again once that response is done.
            self._create_in_flight = False
            self._response_wanted = True
        out.append(Note("model_error", {"code": ev.code, "message": ev.message, "param": ev.param, "benign": benign}))
        if ev.code in FATAL_MODEL_ERRORS:
            self.end("model_error", f"{ev.code}: {ev.message}", out, 1011)
        elif self.state == STARTING and (ev.param or "").startswith("session"):
            # The session kept its defaults (wrong formats, no instructions): unusable.
            self.end("model_error", f"session.update rejected: {ev.code}: {ev.message}", out, 1011)

    def _transcript(self, who: str, text: str, out: list[Action]) -> None:
        if not self.settings.log.transcripts:
            return
        self.transcript.append({"who": who, "text": text})
        out.append(Note("transcript", {"who": who, "text": text}))

    # --- barge-in ----------------------------------------------------------------------------
    def barge_in(self, now: float, out: list[Action]) -> bool:
        """The caller started talking. Silence the phone, stop the answer, tell the model what
        was heard. Called for the server's ``speech_started`` and for the local detector."""
        playing = self._tracker.is_playing(now)
        responding = self._response_id is not None
        if not playing and not responding:
            return False
        if self._writer is None:
            return False
        # The clear goes first: every millisecond before it is heard over the caller.
        out.append(SendCarrier(self._writer.clear(), barge_in_at=now))
        if self.converter is not None:
            self.converter.reset_to_carrier()
        if responding:
            assert self._response_id is not None
            out.append(SendModel(rt.dumps(rt.cancel(self._response_id))))
            self._muted_responses.add(self._response_id)
        cut = self._tracker.interrupt(now)
        if cut.item_id is not None and (responding or cut.audio_end_ms is not None):
            self._muted_items.add(cut.item_id)
        if cut.item_id is not None and cut.audio_end_ms is not None:
            out.append(SendModel(rt.dumps(rt.truncate(cut.item_id, cut.audio_end_ms))))
        self.stats.barge_ins += 1
        out.append(
            Note(
                "barge_in",
                {
                    "item_id": cut.item_id,
                    "audio_end_ms": cut.audio_end_ms,
                    "heard_ms": round(cut.heard_ms, 1),
                    "cancelled_response": responding,
                },
            )
        )
        return True

    def barge_in_cleared(self, reaction_s: float) -> None:
        self.stats.barge_in_reactions.append(reaction_s)

    # --- clock -------------------------------------------------------------------------------
    def on_tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self.state in (CLOSING, ENDED, FAILED):
            return out
        if now - self.started_at > self.settings.server.max_call_duration_s:
            self.end("timeout", "maximum call duration reached", out, 1000)
        elif now - self.last_carrier_at > self.settings.server.idle_timeout_s:
            self.end("timeout", "no message from the carrier", out, 1001)
        return out
