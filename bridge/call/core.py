"""CallCore: everything one call decides, as a pure state machine.

Inputs are carrier events, model events and clock ticks, each with ``now`` (seconds, monotonic)
passed in; outputs are actions for the trio runner to carry out (send a frame, connect the
model, end the call) and notes to log and count. No sockets, no trio, no clock reads: the whole
call can be driven from a test.

States (:class:`~bridge.vocabulary.CallState`; the turn is a sub-state of ``active``)::

    connecting ──start──▶ starting ──session.updated──▶ active ──▶ closing ──▶ ended
         │                    │                            │                  └─▶ failed
         └────────────────────┴── stop / close / error ────┘

* connecting: carrier WebSocket open, waiting for ``start``.
* starting:   ``start`` received, model session opening; caller audio is buffered.
* active:     audio flows both ways. turn ∈ {listening, user_speaking, assistant_speaking}.
* closing:    the end was decided; the runner is closing both sockets.
* ended:      closed normally (caller hung up, operator, drain, ...); failed: closed by an error.

Every end is decided here, once, whatever reports it: a ``stop``, a socket the peer closed
(:meth:`CallCore.on_carrier_closed`, :meth:`CallCore.on_model_closed`), a ping that got no answer
(:meth:`CallCore.on_ping_timeout`), a clock limit (:meth:`CallCore.on_tick`: the start timeout,
the idle timeout, the maximum duration) or a request from outside (:meth:`CallCore.request_end`:
an operator, a drain). The :class:`EndCall` it returns carries the close code and reason the
runner puts on the carrier's socket, so the wire always says what the core decided.
"""

from __future__ import annotations

import binascii
import json
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
from bridge.call.conversation import Conversation
from bridge.call.playback import PlaybackTracker
from bridge.call.tools import END_CALL, Checked, Refused, ToolBox, ToolRequest, outcome_of, output_text
from bridge.call.vad import EnergyVad
from bridge.carrier import base as tel
from bridge.config import LocalVad, Secrets, SessionSettings, Settings, parse_lookup_answer
from bridge.httpmsg import HttpRequest, HttpResult
from bridge.realtime import events as rt
from bridge.realtime.session import build_session_update, format_mismatch, greeting_response
from bridge.vocabulary import (
    NORMAL_END_REASONS,
    CallState,
    CloseCode,
    EndReason,
    NoteKind,
    Side,
    ToolOutcome,
    Turn,
)

# --- actions -------------------------------------------------------------------------------

McpItemInfo = tuple[str, str, str | None]  # kind, server_label, tool name


@dataclass(frozen=True, slots=True)
class SendCarrier:
    frame: tel.Frame  # str: a text frame; bytes: a binary frame
    barge_in_at: float | None = None  # set on a barge-in clear: when the trigger arrived


@dataclass(frozen=True, slots=True)
class SendModel:
    text: str
    session: int | None = None  # None: the session the call's audio goes to (see UseModel)


@dataclass(frozen=True, slots=True)
class ConnectModel:
    """Open model session number ``session`` (after ``delay_s``); report with on_model_connected."""

    model: str
    session: int = 1
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class UseModel:
    """From now on, SendModel without a session goes to session ``session`` (None: nowhere)."""

    session: int | None


@dataclass(frozen=True, slots=True)
class CloseModel:
    """Close model session ``session``: the bridge is done with it (replaced, or lost)."""

    session: int
    reason: str


@dataclass(frozen=True, slots=True)
class EndCall:
    """The call is over: close the model socket, then the carrier's with this code and reason."""

    reason: EndReason
    detail: str
    close_code: CloseCode

    @property
    def close_reason(self) -> str:
        # RFC 6455 allows 123 bytes of UTF-8 in a close reason. The detail can quote the caller
        # (a format name) and JSON can carry a lone surrogate, which UTF-8 cannot encode: "?".
        return f"{self.reason}: {self.detail}".encode("utf-8", "replace")[:123].decode("utf-8", "ignore")


@dataclass(frozen=True, slots=True)
class Note:
    """Something to log (and count): ``kind`` plus fields. Never affects the call."""

    kind: NoteKind
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallTool:
    """Make a webhook tool call; report it with :meth:`CallCore.on_tool_result`."""

    request: ToolRequest


@dataclass(frozen=True, slots=True)
class LookupSession:
    """Ask the business's system about this call; report with :meth:`CallCore.on_session_lookup`."""

    request: HttpRequest


@dataclass(frozen=True, slots=True)
class Transfer:
    """Ask the carrier to move the caller to ``target``; report with :meth:`CallCore.on_transfer_result`."""

    target: str
    request: HttpRequest


Action = (
    SendCarrier
    | SendModel
    | ConnectModel
    | UseModel
    | CloseModel
    | CallTool
    | LookupSession
    | Transfer
    | EndCall
    | Note
)


@dataclass(slots=True)
class _ToolCall:
    call_id: str
    name: str
    response_id: str
    started_at: float
    arguments: dict[str, Any] | None = None


@dataclass(slots=True)
class _Loss:
    """The model session was lost; a new one is being opened."""

    cause: str  # closed, ping_timeout, session_expired, ...
    detail: str
    at: float
    attempts: int = 0
    was_active: bool = True


@dataclass(slots=True)
class _Goodbye:
    """The model asked to hang up or transfer: wait until the caller has heard its last words."""

    kind: EndReason  # AGENT_HANGUP or TRANSFERRED
    detail: str  # the reason given, or the target's name
    call_id: str
    deadline: float
    target: str | None = None  # transfer: the configured destination
    requested: bool = False  # transfer: the carrier request was made


# The close code each end reason puts on the carrier's socket, unless the cause names its own
# (an unsupported format is 1003, an oversized message 1009).
CLOSE_CODES: dict[EndReason, CloseCode] = {
    EndReason.CALLER_HANGUP: CloseCode.NORMAL,
    EndReason.AGENT_HANGUP: CloseCode.NORMAL,
    EndReason.TRANSFERRED: CloseCode.NORMAL,
    EndReason.OPERATOR: CloseCode.NORMAL,
    EndReason.DRAIN: CloseCode.GOING_AWAY,
    EndReason.TIMEOUT: CloseCode.GOING_AWAY,
    EndReason.PROTOCOL_ERROR: CloseCode.POLICY_VIOLATION,
    EndReason.MODEL_ERROR: CloseCode.INTERNAL_ERROR,
    EndReason.BRIDGE_ERROR: CloseCode.INTERNAL_ERROR,
    EndReason.WORKER_LOST: CloseCode.INTERNAL_ERROR,
}

_SESSION_FORMATS = {"pcmu": SessionFormat.PCMU, "pcma": SessionFormat.PCMA, "pcm16": SessionFormat.PCM16}
# Errors the API sends in races the bridge cannot avoid; they change nothing (the API reference
# lists them: https://platform.openai.com/docs/guides/realtime-conversations#handling-errors).
BENIGN_MODEL_ERRORS = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response", "input_audio_buffer_commit_empty"}
)
# Errors no new session would fix: the call ends. (session_expired is not one: a new session is.)
FATAL_MODEL_ERRORS = frozenset({"beta_api_shape_disabled", "invalid_api_key"})
# A lost session is retried with this backoff (seconds), within realtime.reconnect_timeout_s.
RECONNECT_BACKOFF_S = (0.0, 0.1, 0.25, 0.5, 1.0)
# A handover waits for a quiet moment; this long after it is due it happens anyway (a session
# handed over at 3300 s is at most 3420 s old, safely under the API's 3600 s).
HANDOVER_LATEST_S = 120.0
# A handover whose new session could not be opened is tried again this much later.
HANDOVER_RETRY_S = 30.0
# Caller audio kept while the model session opens (a few hundred ms normally).
MAX_BUFFERED_FRAMES = 250  # 5 s of 20 ms frames
# A carrier that opens the socket but never sends its start message holds a worker slot.
START_TIMEOUT_S = 10.0


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
    tool_calls: int = 0
    reconnects: int = 0
    handovers: int = 0


class CallCore:
    def __init__(
        self, settings: Settings, call_id: str, now: float, carrier: tel.Carrier, secrets: Secrets | None = None
    ) -> None:
        self.settings = settings
        self.call_id = call_id
        self.carrier = carrier
        self.secrets = secrets or Secrets(None, None, None)
        self.state = CallState.CONNECTING
        self.started_at = now
        self.last_carrier_at = now
        self.stats = CallStats()
        self.ending: EndCall | None = None
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self._account_sid = ""
        self.parameters: dict[str, str] = {}
        self.profile = "default"
        self.session: SessionSettings | None = None
        self.converter: Converter | None = None
        self.meter: UsageMeter | None = None
        self.warnings: list[str] = []
        self.transcript: list[dict[str, Any]] = []
        self.tool_log: list[dict[str, Any]] = []  # one entry per tool call: name, outcome, duration
        self.mcp_log: list[dict[str, Any]] = []  # MCP listings and calls the API made
        self.tools: ToolBox | None = None
        self._writer: tel.Writer | None = None
        self._framed = False  # the writer splits audio into frames of the carrier's size
        self._session_update: dict[str, Any] | None = None
        self._buffer: deque[str] = deque()
        # Caller audio held for the next append (realtime.append_interval_ms), and how much.
        self._up: list[str] = []
        self._up_ms = 0.0
        self._append_interval_ms = settings.realtime.append_interval_ms
        self._mark_interval_ms = settings.server.mark_interval_ms
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
        self._tool_calls: dict[str, _ToolCall] = {}  # call_id -> a call whose output is not sent yet
        self._answered_calls: set[str] = set()  # call_ids handled (the API may report a call twice)
        self._follow_ups: set[str] = set()  # responses whose tool outputs need a response.create
        self._done_responses: set[str] = set()
        self._mcp_items: dict[str, McpItemInfo] = {}
        self._goodbye: _Goodbye | None = None
        # Model sessions: numbered from 1; the call's audio goes to _session_no (0: none).
        self.history = Conversation()
        self.session_events: list[dict[str, Any]] = []  # reconnects and handovers, for the record
        self._session_no = 0
        self._next_no = 1
        self._pending_no: int | None = None  # being opened
        self._ready_no: int | None = None  # handover: opened and updated, waiting for a quiet moment
        self._session_started_at: float | None = None
        self._ever_active = False
        self._lost: _Loss | None = None
        self._handover_not_before = 0.0

    # --- read-outs -------------------------------------------------------------------------
    @property
    def tracker(self) -> PlaybackTracker:
        return self._tracker

    @property
    def end_reason(self) -> EndReason | None:
        return None if self.ending is None else self.ending.reason

    @property
    def end_detail(self) -> str:
        return "" if self.ending is None else self.ending.detail

    def turn(self, now: float) -> Turn:
        if self._user_speaking:
            return Turn.USER_SPEAKING
        if self._tracker.is_playing(now) or self._response_id is not None:
            return Turn.ASSISTANT_SPEAKING
        return Turn.LISTENING

    @property
    def model_ready(self) -> bool:
        return self.state is CallState.ACTIVE

    @property
    def tools_pending(self) -> list[str]:
        """Names of the webhook tools this call is waiting on."""
        return [c.name for c in self._tool_calls.values() if c.arguments is not None]

    # --- state -------------------------------------------------------------------------------
    def _to(self, state: CallState, out: list[Action], **fields: Any) -> None:
        if state is not self.state:
            out.append(Note(NoteKind.STATE, {"from": self.state, "to": state, **fields}))
            self.state = state

    def end(self, reason: EndReason, detail: str, out: list[Action], close_code: CloseCode | None = None) -> None:
        """Decide the end of the call once; later causes are ignored (the first one is the truth)."""
        if self.ending is not None:
            return
        if self.state is CallState.ACTIVE:
            self._send_up(out)  # what the caller said last still reaches the model (and its record)
        self.ending = EndCall(reason, detail, close_code or CLOSE_CODES[reason])
        self._to(CallState.CLOSING, out, reason=reason)
        out.append(self.ending)

    def finish(self) -> list[Action]:
        """The runner has closed both sockets: settle the final state (deciding an end if none was)."""
        out: list[Action] = []
        if self.ending is None:
            self.end(EndReason.BRIDGE_ERROR, "call task ended without a reason", out)
            out = [a for a in out if not isinstance(a, EndCall)]
        reason = self.ending.reason if self.ending else EndReason.BRIDGE_ERROR
        self._to(CallState.ENDED if reason in NORMAL_END_REASONS else CallState.FAILED, out, reason=reason)
        return out

    # --- ends reported from outside ------------------------------------------------------------
    def request_end(self, reason: EndReason, detail: str) -> list[Action]:
        """An operator or a drain ends the call."""
        out: list[Action] = []
        self.end(reason, detail, out)
        return out

    def on_carrier_closed(self, code: int | None, now: float) -> list[Action]:
        """The carrier's socket closed (by the carrier, or by the library on a protocol breach)."""
        out: list[Action] = []
        if code == CloseCode.MESSAGE_TOO_BIG:
            # trio-websocket closes with 1009 when a message exceeds the configured cap: that was
            # the carrier's fault, not a hang-up.
            self.stats.protocol_errors += 1
            limit = self.settings.server.max_message_bytes
            why = f"carrier message over {limit} bytes"
            out.append(Note(NoteKind.CARRIER_ERROR, {"kind": "message_too_big", "reason": why}))
            self.end(EndReason.PROTOCOL_ERROR, why, out, CloseCode.MESSAGE_TOO_BIG)
        else:
            self.end(EndReason.CALLER_HANGUP, f"carrier closed the socket ({code})", out)
        return out

    def on_model_closed(
        self, code: int | None, reason: str | None, now: float, session: int | None = None
    ) -> list[Action]:
        """A model socket closed without the bridge asking: a new session takes over the call."""
        out: list[Action] = []
        detail = f"model closed the session ({code}: {reason})" if code is not None else "model closed the session"
        self._session_failed(self._which(session), "closed", detail, now, out)
        return out

    def on_model_connect_failed(self, detail: str, now: float, session: int | None = None) -> list[Action]:
        out: list[Action] = []
        no = self._pending_no if session is None else session
        if no is not None and no == self._pending_no:
            self._pending_failed(no, detail, now, out)
        return out

    def on_ping_timeout(self, side: Side, now: float, session: int | None = None) -> list[Action]:
        out: list[Action] = []
        if side is Side.CARRIER:
            self.end(EndReason.TIMEOUT, "carrier did not answer a ping", out)
        else:
            self._session_failed(self._which(session), "ping_timeout", "model did not answer a ping", now, out)
        return out

    def _which(self, session: int | None) -> int:
        if session is not None:
            return session
        return self._session_no or (self._pending_no or 0)

    def _session_failed(self, no: int, cause: str, detail: str, now: float, out: list[Action]) -> None:
        if no and no == self._pending_no:
            self._pending_failed(no, detail, now, out)
        elif no and no == self._session_no:
            self._lose(cause, detail, now, out)
        elif no and no == self._ready_no:
            self._ready_no = None  # a handover's new session died before the switch: try later
            self._handover_not_before = now + HANDOVER_RETRY_S
            out.append(Note(NoteKind.HANDOVER, {"phase": "failed", "detail": detail}))
        # else: a session the bridge already closed

    def on_crash(self, error: str) -> list[Action]:
        """A bug in the bridge broke this call's tasks."""
        out: list[Action] = []
        self.end(EndReason.BRIDGE_ERROR, f"internal error: {error}", out)
        return out

    # --- carrier side ------------------------------------------------------------------------
    def on_carrier(self, ev: tel.CarrierEvent, now: float) -> list[Action]:
        self.last_carrier_at = now
        if type(ev) is tel.Media:
            return self._on_media(ev, now)
        out: list[Action] = []
        if isinstance(ev, tel.MarkEcho):
            self._tracker.on_echo(ev.name, now)
            if self._goodbye is not None:
                self._check_goodbye(now, out)
        elif isinstance(ev, tel.Start):
            self._on_start(ev, now, out)
        elif isinstance(ev, tel.Dtmf):
            self._on_dtmf(ev, out)
        elif isinstance(ev, tel.Stop):
            goodbye = self._goodbye
            if goodbye is not None and goodbye.kind is EndReason.TRANSFERRED and goodbye.requested:
                self.end(EndReason.TRANSFERRED, goodbye.detail, out)  # the carrier took the call away
            else:
                self.end(EndReason.CALLER_HANGUP, "carrier sent stop", out)
        elif isinstance(ev, tel.CarrierError):
            self.stats.protocol_errors += 1
            out.append(Note(NoteKind.CARRIER_ERROR, {"kind": ev.kind, "reason": ev.reason, "fatal": ev.fatal}))
            if ev.fatal:
                self.end(EndReason.PROTOCOL_ERROR, ev.reason, out)
        # Connected and Cleared carry nothing the call needs.
        return out

    def _on_start(self, ev: tel.Start, now: float, out: list[Action]) -> None:
        if self.state is not CallState.CONNECTING:
            self.stats.protocol_errors += 1
            out.append(Note(NoteKind.CARRIER_ERROR, {"kind": "duplicate_start", "reason": "second start ignored"}))
            return
        try:
            carrier_format = parse_encoding(ev.encoding, ev.sample_rate)
        except AudioError as exc:
            self.stats.protocol_errors += 1
            reason = f"unsupported media format {ev.encoding!r}: {exc}"
            self.end(EndReason.PROTOCOL_ERROR, reason, out, CloseCode.UNSUPPORTED_DATA)
            return
        if ev.channels != 1:
            reason = f"unsupported {ev.sample_rate} Hz x{ev.channels}"
            self.end(EndReason.PROTOCOL_ERROR, reason, out, CloseCode.UNSUPPORTED_DATA)
            return
        self.stream_sid, self.call_sid, self._account_sid = ev.stream_sid, ev.call_sid, ev.account_sid
        self.parameters = dict(ev.custom_parameters)
        for key, value in (("from", ev.from_number), ("to", ev.to_number)):
            if value and key not in self.parameters:
                self.parameters[key] = value
        self.profile, self.session, warning = self.settings.session_for(self.parameters.get("profile"))
        if warning:
            self.warnings.append(warning)
            out.append(Note(NoteKind.PROFILE_FALLBACK, {"warning": warning}))
        session = self.session
        session_format = _SESSION_FORMATS[session.audio_format]
        self._bytes_per_ms_session = 48.0 if session_format is SessionFormat.PCM16 else 8.0
        self.converter = make_converter(carrier_format, session_format)
        self._writer = self.carrier.writer(ev)
        self._framed = hasattr(self._writer, "media_frames")
        if isinstance(session.turn_detection, LocalVad):
            self._vad_settings = session.turn_detection
            self._vad = EnergyVad(
                start_dbfs=session.turn_detection.start_dbfs,
                stop_dbfs=session.turn_detection.stop_dbfs,
                start_ms=session.turn_detection.start_ms,
                end_silence_ms=session.turn_detection.end_silence_ms,
            )
        self._to(
            CallState.STARTING,
            out,
            stream_sid=ev.stream_sid,
            call_sid=ev.call_sid,
            profile=self.profile,
            model=session.model,
            carrier_format=carrier_format.id,
            session_format=session.audio_format,
        )
        lookup = self.settings.session_webhook
        if lookup.url:
            # The business's system may personalise the call first; caller audio is kept meanwhile.
            body = json.dumps({"call": self.call_details()}, separators=(",", ":")).encode()
            headers = (("Content-Type", "application/json"),)
            out.append(LookupSession(HttpRequest("POST", lookup.url, headers, body, lookup.timeout_s, sign=True)))
            return
        self._open_session(out)

    def on_session_lookup(self, result: HttpResult, now: float) -> list[Action]:
        """The per-call session lookup answered (or failed): apply it, then open the model session."""
        out: list[Action] = []
        if self.ending is not None or self.session is None or self._session_update is not None:
            return out
        try:
            answer = parse_lookup_answer(result)
        except ValueError as exc:
            warning = f"session lookup failed ({exc}); profile {self.profile} used as configured"
            self.warnings.append(warning)
            out.append(Note(NoteKind.PROFILE_FALLBACK, {"warning": warning}))
        else:
            changes = answer.model_dump(exclude_none=True, exclude={"parameters", "tools"})
            if answer.tools is not None:
                changes["tools"] = answer.tools
            self.session = self.session.model_copy(update=changes)
            self.parameters.update(answer.parameters or {})
            applied = sorted([*changes, *(["parameters"] if answer.parameters else [])])
            out.append(Note(NoteKind.SESSION_LOOKUP, {"applied": applied, "seconds": result.duration_s}))
        self._open_session(out)
        return out

    def _open_session(self, out: list[Action]) -> None:
        """The session settings are final: build the meter, the tools, the session.update; connect."""
        session = self.session
        assert session is not None
        transcription_model = session.transcription.model if session.transcription else None
        self.meter = UsageMeter(session.model, self.settings.pricing, transcription_model)
        self.tools = ToolBox(session, self.secrets)
        if self.tools.transfer_targets and not self.carrier.can_transfer:
            warning = f"transfer_call is not offered: carrier {self.carrier.name} cannot transfer calls"
            self.warnings.append(warning)
            self.tools.transfer_targets.clear()
        self._session_update = build_session_update(session, self.parameters, self.tools.session_fields())
        self._connect(out)

    def _connect(self, out: list[Action], delay_s: float = 0.0) -> None:
        assert self.session is not None
        no = self._next_no
        self._next_no += 1
        self._pending_no = no
        out.append(ConnectModel(self.session.model, no, delay_s))

    def _on_media(self, ev: tel.Media, now: float) -> list[Action]:
        stats = self.stats
        if self.converter is None:
            stats.protocol_errors += 1
            return [Note(NoteKind.CARRIER_ERROR, {"kind": "media_before_start", "reason": "media before start"})]
        stats.frames_in += 1
        try:
            payload = self.converter.to_session(ev.payload)
        except AudioError as exc:
            stats.audio_errors += 1
            return [Note(NoteKind.AUDIO_ERROR, {"kind": exc.kind, "direction": "to_model", "reason": str(exc)})]
        stats.bytes_in += decoded_len(ev.payload)
        out: list[Action] = []
        if self._vad is not None:
            self._local_vad(ev.payload, now, out)
        if not payload:
            return out  # a decimating converter held the samples back for the next frame
        if self.state is CallState.ACTIVE:
            if not self._append_interval_ms:
                out.append(SendModel(rt.append_audio(payload)))
            else:
                self._up.append(payload)
                self._up_ms += decoded_len(payload) / self._bytes_per_ms_session
                if self._up_ms >= self._append_interval_ms - 0.5:
                    self._send_up(out)
        elif self.state is CallState.STARTING or self.state is CallState.RECONNECTING:
            if len(self._buffer) >= MAX_BUFFERED_FRAMES:
                self._buffer.popleft()
                stats.dropped_frames += 1
            self._buffer.append(payload)
        return out

    def _send_up(self, out: list[Action]) -> None:
        """The caller audio held for the next append goes up now, as one append."""
        up = self._up
        if not up:
            return
        if len(up) == 1:
            out.append(SendModel(rt.append_audio(up[0])))
        else:
            # Each payload is whole base64 (padded): joined as bytes, encoded once.
            joined = b"".join([binascii.a2b_base64(p) for p in up])
            out.append(SendModel(rt.append_audio(binascii.b2a_base64(joined, newline=False).decode("ascii"))))
        self._up = []
        self._up_ms = 0.0

    def _on_dtmf(self, ev: tel.Dtmf, out: list[Action]) -> None:
        self.stats.dtmf += 1
        out.append(Note(NoteKind.DTMF, {"digit": ev.digit}))
        if self.state is CallState.STARTING:
            self._pending_dtmf.append(ev.digit)  # given to the model once its session is ready
        elif self.state is CallState.ACTIVE:
            self._send_dtmf(ev.digit, out)

    def _send_dtmf(self, digit: str, out: list[Action], respond: bool = True) -> None:
        # The WebSocket API has no DTMF event (SIP only), so the digit becomes a user message.
        self._send_up(out)  # after the audio that came before the key
        text = f"[The caller pressed the keypad key {digit}]"
        self.history.user(text)
        out.append(SendModel(rt.dumps(rt.user_text(text))))
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
            out.append(Note(NoteKind.SPEECH_STARTED, {"source": "local_vad"}))
            if self.state is CallState.ACTIVE:
                self.barge_in(now, out)
        elif change == "stop":
            self._user_speaking = False
            self._speech_end_at = now
            self._awaiting_first_audio = True
            out.append(Note(NoteKind.SPEECH_STOPPED, {"source": "local_vad"}))
            if self.state is CallState.ACTIVE:
                self._commit_turn(out)
            elif self.state is CallState.STARTING:
                self._commit_pending = True  # committed once the buffered audio has been sent

    def _commit_turn(self, out: list[Action]) -> None:
        self._send_up(out)  # the turn ends after its last audio
        out.append(SendModel(rt.dumps(rt.commit())))
        if self._vad_settings is not None and self._vad_settings.create_response:
            self._request_response(out)

    # --- model side --------------------------------------------------------------------------
    def on_model_connected(self, now: float, session: int | None = None) -> list[Action]:
        """A model socket opened: configure its session (the same session.update every time)."""
        no = self._pending_no if session is None else session
        if no is None or no != self._pending_no or self.ending is not None:
            return []
        assert self._session_update is not None
        return [SendModel(rt.dumps(self._session_update), session=no)]

    def on_model(self, ev: rt.ModelEvent, now: float, session: int | None = None) -> list[Action]:
        if session is None or session == self._session_no:
            if type(ev) is rt.AudioDelta:
                return self._on_delta(ev, now)
            return self._on_current(ev, now)
        return self._on_other(ev, now, session)

    def _on_other(self, ev: rt.ModelEvent, now: float, no: int) -> list[Action]:
        """An event of a session the call's audio does not go to: the one being opened, or an old one."""
        out: list[Action] = []
        if no == self._pending_no:
            if isinstance(ev, rt.SessionUpdated):
                self._on_session_updated(ev, now, out)
            elif isinstance(ev, rt.ModelError):
                self.stats.model_errors += 1
                fields = {"code": ev.code, "message": ev.message, "param": ev.param, "benign": False}
                out.append(Note(NoteKind.MODEL_ERROR, fields))
                if ev.code in FATAL_MODEL_ERRORS:
                    self.end(EndReason.MODEL_ERROR, f"{ev.code}: {ev.message}", out)
                elif (ev.param or "").startswith("session"):
                    self._pending_failed(no, f"session.update rejected: {ev.code}: {ev.message}", now, out)
            return out
        # An old session finishing up: what it used is still billed; what the caller said still counts.
        if isinstance(ev, rt.ResponseDone) and self.meter is not None and ev.usage is not None:
            self.meter.add_response_usage(ev.usage)
        elif isinstance(ev, rt.InputTranscript):
            if self.meter is not None and ev.usage:
                self.meter.add_transcription_usage(ev.usage)
            self.history.user(ev.transcript)
            self._transcript("caller", ev.transcript, out)
        return out

    def _on_current(self, ev: rt.ModelEvent, now: float) -> list[Action]:
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
        elif isinstance(ev, rt.AudioDone):
            self._on_audio_done(ev, now, out)
        elif isinstance(ev, rt.ResponseDone):
            self._on_response_done(ev, now, out)
        elif isinstance(ev, rt.SessionUpdated):
            self._on_session_updated(ev, now, out)
        elif isinstance(ev, rt.ItemTruncated):
            out.append(Note(NoteKind.TRUNCATED, {"item_id": ev.item_id, "audio_end_ms": ev.audio_end_ms}))
        elif isinstance(ev, rt.InputTranscript):
            if self.meter is not None and ev.usage:
                self.meter.add_transcription_usage(ev.usage)
            self.history.user(ev.transcript)
            self._transcript("caller", ev.transcript, out)
        elif isinstance(ev, rt.OutputTranscript):
            self.history.assistant(ev.transcript)
            self._transcript("assistant", ev.transcript, out)
        elif isinstance(ev, rt.FunctionCallDone):
            self._on_function_call(ev, now, out)
        elif isinstance(ev, rt.McpItem):
            self._mcp_items[ev.item_id] = (ev.kind, ev.server_label, ev.name)
            if ev.error:
                self._mcp_note(ev.item_id, "call" if ev.kind == "mcp_call" else "list_tools", "failed", ev.error, out)
        elif isinstance(ev, rt.McpProgress):
            if ev.status != "in_progress":
                self._mcp_note(ev.item_id, ev.kind, ev.status, None, out)
        elif isinstance(ev, rt.ModelError):
            self._on_model_error(ev, now, out)
        elif isinstance(ev, rt.Malformed):
            self.stats.protocol_errors += 1
            out.append(Note(NoteKind.MODEL_PROTOCOL_ERROR, {"event_type": ev.event_type, "reason": ev.reason}))
        return out

    def _on_session_updated(self, ev: rt.SessionUpdated, now: float, out: list[Action]) -> None:
        no = self._pending_no
        if no is None:
            return  # a repeated session.updated (the bridge sends one update per session)
        if self.ending is not None:
            # The end was decided while this session opened (an operator, a drain, a hang-up): it
            # must not turn the closing call active again, nor start a greeting on a session
            # that is being closed.
            return
        assert self._session_update is not None
        mismatch = format_mismatch(self._session_update, ev.session)
        if mismatch:
            # Forwarding audio in the wrong format is static in the caller's ear.
            self.end(EndReason.MODEL_ERROR, f"audio format not applied: {mismatch}", out)
            return
        self._pending_no = None
        if self._lost is not None or not self._ever_active:
            self._switch(no, now, out)
        else:
            self._ready_no = no  # a handover: switch at a quiet moment
            self._try_handover(now, out)

    def _switch(self, no: int, now: float, out: list[Action]) -> None:
        """Make session ``no`` the call's: the first one, or the replacement of a lost one."""
        first = not self._ever_active
        out.append(UseModel(no))
        self._session_no, self._session_started_at = no, now
        self._ever_active = True
        if not first:
            self._seed(out)
        self._to(CallState.ACTIVE, out)
        for payload in self._buffer:
            out.append(SendModel(rt.append_audio(payload)))
        self._buffer.clear()
        lost = self._lost
        if lost is not None:
            self._lost = None
            gap_ms = round((now - lost.at) * 1000)
            self.stats.reconnects += 1
            event = {"kind": "reconnect", "cause": lost.cause, "gap_ms": gap_ms, "attempts": lost.attempts + 1}
            self.session_events.append(event)
            out.append(Note(NoteKind.RECONNECT, {"phase": "restored", **event, "session": no}))
            if first:
                self._start_conversation(out)  # the first session died before it was ready
            elif self._response_wanted or self._follow_ups:
                self._follow_ups.clear()
                self._response_wanted = False
                self._request_response(out)  # tool outputs came in during the gap
            return
        self._start_conversation(out)

    def _start_conversation(self, out: list[Action]) -> None:
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

    def _seed(self, out: list[Action]) -> None:
        """Replay the conversation so far into the new session."""
        for event in self.history.seed_events():
            out.append(SendModel(rt.dumps(event)))
        if self.session is not None and self.session.transcription is None and "replay" not in " ".join(self.warnings):
            self.warnings.append(
                "replay: the caller's words could not be replayed to the new model session "
                "(input transcription is off); only the assistant's side and tool calls were"
            )

    def _lose(self, cause: str, detail: str, now: float, out: list[Action]) -> None:
        """The call's model session is gone: keep the caller on and open a new one."""
        if self.ending is not None or self._lost is not None:
            return
        old = self._session_no
        self._buffer.extend(self._up)  # held caller audio waits for the new session with the rest
        self._up, self._up_ms = [], 0.0
        self._lost = _Loss(cause, detail, now)
        out.append(Note(NoteKind.RECONNECT, {"phase": "lost", "cause": cause, "detail": detail, "session": old}))
        out.append(UseModel(None))
        if old:
            out.append(CloseModel(old, "replaced after " + cause))
        self._session_no = 0
        if self.state is CallState.ACTIVE:
            self._cut_playback(now, out)
            self._to(CallState.RECONNECTING, out, cause=cause)
        self._response_id = None
        self._create_in_flight = False
        self._user_speaking = False
        if self._ready_no is not None:  # a handover's new session is ready: it takes over at once
            ready, self._ready_no = self._ready_no, None
            self._switch(ready, now, out)
        elif self._pending_no is None:
            self._connect(out)

    def _cut_playback(self, now: float, out: list[Action]) -> None:
        """The model's answer stops mid-way (its session is gone): clear it as a barge-in would."""
        if self._writer is None or not (self._tracker.is_playing(now) or self._response_id is not None):
            return
        out.append(SendCarrier(self._writer.clear()))
        if self.converter is not None:
            self.converter.reset_to_carrier()
        if self._response_id is not None:
            self._muted_responses.add(self._response_id)
        self._tracker.interrupt(now)

    def _pending_failed(self, no: int, detail: str, now: float, out: list[Action]) -> None:
        """Session ``no`` could not be opened (refused, closed, rejected)."""
        if no != self._pending_no:
            return
        self._pending_no = None
        lost = self._lost
        if lost is not None:
            lost.attempts += 1
            delay = RECONNECT_BACKOFF_S[min(lost.attempts, len(RECONNECT_BACKOFF_S) - 1)]
            budget = self.settings.realtime.reconnect_timeout_s
            if now + delay - lost.at >= budget:
                self._reconnect_failed(f"{lost.attempts} attempts in {budget:g} s: {detail}", now, out)
            else:
                self._connect(out, delay)
        elif not self._ever_active:
            self.end(EndReason.MODEL_ERROR, detail, out)  # the call's first session could not be opened
        else:  # a handover's new session: the current one carries on, try again later
            self._handover_not_before = now + HANDOVER_RETRY_S
            out.append(Note(NoteKind.HANDOVER, {"phase": "failed", "detail": detail}))

    def _reconnect_failed(self, detail: str, now: float, out: list[Action]) -> None:
        lost = self._lost
        assert lost is not None
        gap_ms = round((now - lost.at) * 1000)
        event = {"kind": "reconnect", "cause": lost.cause, "gap_ms": gap_ms, "attempts": lost.attempts, "failed": True}
        self.session_events.append(event)
        out.append(Note(NoteKind.RECONNECT, {"phase": "failed", **event, "detail": detail}))
        why = f"model session lost ({lost.cause}: {lost.detail}); reconnect failed: {detail}"
        self.end(EndReason.MODEL_ERROR, why, out)

    def _quiet(self, now: float) -> bool:
        """Nothing is being said or done: a session can be replaced without anyone noticing."""
        return (
            self._response_id is None
            and not self._create_in_flight
            and not self._user_speaking
            and not self._tracker.is_playing(now)
            and not self._tool_calls
            and self._goodbye is None
        )

    def _try_handover(self, now: float, out: list[Action]) -> None:
        new = self._ready_no
        if new is None or self._session_started_at is None:
            return
        late = now >= self._session_started_at + self.settings.realtime.session_handover_s + HANDOVER_LATEST_S
        quiet = self._quiet(now)
        if not quiet and not late:
            return
        old = self._session_no
        self._ready_no = None
        if not quiet:
            self._cut_playback(now, out)
            self._response_id = None
            self._create_in_flight = False
        self._send_up(out)  # held caller audio belongs to the session it was said in
        out.append(UseModel(new))
        self._session_no, self._session_started_at = new, now
        self._seed(out)
        out.append(CloseModel(old, "handed over"))
        self.stats.handovers += 1
        event = {"kind": "handover", "cause": "age" if quiet else "age_forced", "gap_ms": 0}
        self.session_events.append(event)
        out.append(Note(NoteKind.HANDOVER, {"phase": "done", **event, "from": old, "to": new}))

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
            return [Note(NoteKind.AUDIO_ERROR, {"kind": exc.kind, "direction": "to_carrier", "reason": str(exc)})]
        if not payload:
            self._tracker.on_received_only(ev.item_id, model_ms)
            return []
        carrier_bytes = decoded_len(payload)
        carrier_ms = carrier_bytes / self.converter.carrier.bytes_per_ms
        tracker = self._tracker
        every = self._mark_interval_ms
        marked = not every or tracker.unmarked_ms + carrier_ms >= every - 0.5
        mark = tracker.on_sent(ev.item_id, carrier_ms, model_ms, now, mark=marked)
        self.stats.frames_out += 1
        self.stats.bytes_out += carrier_bytes
        if self._framed:
            # The carrier takes audio only in frames of a fixed size (Vonage, Exotel).
            out: list[Action] = [SendCarrier(frame) for frame in tel.media_frames(self._writer, payload)]
        else:
            out = [SendCarrier(self._writer.media(payload))]
        if mark is not None:
            out.append(SendCarrier(self._writer.mark(mark)))
        if self._awaiting_first_audio:
            self._awaiting_first_audio = False
            if self._speech_end_at is not None:
                latency = now - self._speech_end_at
                self.stats.response_latencies.append(latency)
                out.append(Note(NoteKind.RESPONSE_LATENCY, {"seconds": latency}))
        return out

    def _on_audio_done(self, ev: rt.AudioDone, now: float, out: list[Action]) -> None:
        """An answer's audio is complete: a framing writer's held-back tail goes out now (padded to
        a whole frame), so the caller hears the answer's last words before the next answer (or
        before an ``end_call`` hangs up); and the end of the answer gets a mark, once, if the last
        chunks went unmarked (``server.mark_interval_ms``) or the tail was flushed: its echo is what
        tells when the caller has heard all of it."""
        if self._writer is None:
            return
        if ev.item_id in self._muted_items or ev.response_id in self._muted_responses:
            return
        if self._framed:
            frames, padding_ms = tel.flush_frames(self._writer)
            if frames:
                out.extend(SendCarrier(frame) for frame in frames)
                self._tracker.on_sent(ev.item_id, padding_ms, 0.0, now, mark=False)
        name = self._tracker.mark()
        if name is not None:
            out.append(SendCarrier(self._writer.mark(name)))

    def _on_response_done(self, ev: rt.ResponseDone, now: float, out: list[Action]) -> None:
        if self._response_id == ev.response_id or self._response_id is None:
            self._response_id = None
        if self.meter is not None and ev.usage is not None:
            self.meter.add_response_usage(ev.usage)
        if ev.response_id not in self._muted_responses and ev.status == "completed":
            self.stats.turns += 1
        out.append(
            Note(
                NoteKind.RESPONSE_DONE,
                {"response_id": ev.response_id, "status": ev.status, "reason": ev.reason, "usage": ev.usage},
            )
        )
        if ev.status == "failed":
            code = ev.error_code or "response_failed"
            out.append(Note(NoteKind.MODEL_ERROR, {"code": code, "message": ev.reason, "benign": False}))
        self._done_responses.add(ev.response_id)
        self._follow_up(ev.response_id, out)
        if self._response_wanted and not self._create_in_flight:
            self._response_wanted = False
            self._request_response(out)
        if self._goodbye is not None:
            self._check_goodbye(now, out)

    def _on_model_error(self, ev: rt.ModelError, now: float, out: list[Action]) -> None:
        self.stats.model_errors += 1
        benign = ev.code in BENIGN_MODEL_ERRORS
        if ev.code == "conversation_already_has_active_response":
            # Our create lost a race with a response the server started itself (VAD): the
            # request still stands, so ask again once that response is done.
            self._create_in_flight = False
            self._response_wanted = True
        fields = {"code": ev.code, "message": ev.message, "param": ev.param, "benign": benign}
        out.append(Note(NoteKind.MODEL_ERROR, fields))
        if ev.code in FATAL_MODEL_ERRORS:
            self.end(EndReason.MODEL_ERROR, f"{ev.code}: {ev.message}", out)
        elif ev.code == "session_expired":
            # The API ends a session after 60 minutes without warning; the call goes on in a new one.
            self._lose("session_expired", ev.message, now, out)

    def _transcript(self, who: str, text: str, out: list[Action]) -> None:
        if not self.settings.log.transcripts:
            return
        self.transcript.append({"who": who, "text": text})
        out.append(Note(NoteKind.TRANSCRIPT, {"who": who, "text": text}))

    # --- tools -------------------------------------------------------------------------------
    def call_details(self) -> dict[str, Any]:
        """The ``call`` object tools and webhooks receive."""
        return {
            "id": self.call_id,
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "profile": self.profile,
            "from": self.parameters.get("from"),
            "to": self.parameters.get("to"),
            "parameters": dict(self.parameters),
        }

    def _on_function_call(self, ev: rt.FunctionCallDone, now: float, out: list[Action]) -> None:
        if ev.call_id in self._answered_calls or self.tools is None:
            return  # reported twice (arguments.done and output_item.done): handled once
        self._answered_calls.add(ev.call_id)
        self.stats.tool_calls += 1
        call = _ToolCall(ev.call_id, ev.name, ev.response_id, now)
        if ev.response_id in self._muted_responses:
            # The caller talked over the answer that made this call: it is stale.
            self._tool_output(call, ToolOutcome.CANCELLED, "The call was not made: the caller interrupted.", now, out)
            return
        checked = self.tools.check(ev.name, ev.arguments)
        if isinstance(checked, Refused):
            self._tool_output(call, checked.outcome, checked.message, now, out)
            return
        call.arguments = checked.arguments
        self._tool_calls[ev.call_id] = call
        self.history.tool_call(ev.call_id, ev.name, ev.arguments)
        out.append(Note(NoteKind.TOOL_CALL, {"tool": ev.name, "call_id": ev.call_id, **self._arguments(checked)}))
        if checked.kind == "webhook":
            out.append(CallTool(self.tools.request(checked, ev.call_id, self.call_details())))
        else:
            self._start_goodbye(call, checked, now, out)

    def _arguments(self, checked: Checked) -> dict[str, Any]:
        # The caller's words can be in the arguments: kept only where transcripts are.
        return {"arguments": checked.arguments} if self.settings.log.transcripts else {}

    def on_tool_result(self, call_id: str, result: HttpResult, now: float) -> list[Action]:
        """A webhook tool call finished (answered, failed or timed out)."""
        out: list[Action] = []
        call = self._tool_calls.get(call_id)
        if call is None or self.tools is None or self.ending is not None:
            return out
        text = output_text(call.name, result, self.settings.tools.max_output_bytes)
        self._tool_output(call, outcome_of(result), text, now, out, status=result.status, detail=result.detail)
        return out

    def _tool_output(
        self,
        call: _ToolCall,
        outcome: ToolOutcome,
        text: str,
        now: float,
        out: list[Action],
        *,
        status: int | None = None,
        detail: str = "",
        follow_up: bool = True,
    ) -> None:
        """Give the model a call's output; once every call of that response has one, ask it to go on."""
        self._tool_calls.pop(call.call_id, None)
        if call.arguments is None:  # refused at once: its call was never recorded
            self.history.tool_call(call.call_id, call.name, "{}")
        self.history.tool_output(call.call_id, text)
        out.append(SendModel(rt.dumps(rt.function_call_output(call.call_id, text))))
        duration = max(0.0, now - call.started_at)
        entry: dict[str, Any] = {
            "tool": call.name,
            "call_id": call.call_id,
            "outcome": outcome,
            "duration_ms": round(duration * 1000, 1),
        }
        if status is not None:
            entry["status"] = status
        if detail:
            entry["detail"] = detail
        if call.arguments is not None and self.settings.log.transcripts:
            entry["arguments"] = call.arguments
        self.tool_log.append(entry)
        out.append(Note(NoteKind.TOOL_RESULT, {**entry, "seconds": duration}))
        if follow_up and outcome is not ToolOutcome.CANCELLED:
            self._follow_ups.add(call.response_id)
        self._follow_up(call.response_id, out)

    def _follow_up(self, response_id: str, out: list[Action]) -> None:
        # One response.create per response that made tool calls, once it is done and every call
        # it made has its output (a success or a failure alike).
        if response_id not in self._follow_ups:
            return
        if response_id not in self._done_responses and self._lost is None:
            return
        if any(c.response_id == response_id for c in self._tool_calls.values()):
            return
        self._follow_ups.discard(response_id)
        if self._goodbye is None:
            if self._lost is not None:
                self._response_wanted = True  # asked of the new session once it is there
            else:
                self._request_response(out)

    def _start_goodbye(self, call: _ToolCall, checked: Checked, now: float, out: list[Action]) -> None:
        if self._goodbye is not None:
            self._tool_output(call, ToolOutcome.OK, "Already ending the call.", now, out, follow_up=False)
            return
        deadline = now + self.settings.tools.goodbye_timeout_s
        if checked.kind == END_CALL:
            reason = str(checked.arguments.get("reason") or "the conversation is over")
            self._goodbye = _Goodbye(EndReason.AGENT_HANGUP, reason, call.call_id, deadline)
            # Answered at once; no new response: what the model already said is its goodbye.
            text = "The call will end as soon as the caller has heard you. Do not say anything more."
            self._tool_output(call, ToolOutcome.OK, text, now, out, follow_up=False)
        else:
            assert self.tools is not None
            name = str(checked.arguments["target"])
            target = self.tools.transfer_targets[name]
            self._goodbye = _Goodbye(EndReason.TRANSFERRED, name, call.call_id, deadline, target)
            # Its output waits for the carrier's answer: a failed transfer is told to the model.
        self._check_goodbye(now, out)

    def _check_goodbye(self, now: float, out: list[Action]) -> None:
        goodbye = self._goodbye
        if goodbye is None or goodbye.requested or self.ending is not None:
            return
        responding = self._response_id is not None or self._create_in_flight
        heard = not responding and self._tracker.pending_marks == 0 and not self._tracker.is_playing(now)
        if not heard and now < goodbye.deadline:
            return
        if goodbye.kind is EndReason.AGENT_HANGUP:
            self.end(EndReason.AGENT_HANGUP, goodbye.detail, out)
            return
        assert goodbye.target is not None
        request = self.carrier.transfer(self._carrier_call(), goodbye.target)
        goodbye.requested = True
        out.append(Transfer(goodbye.detail, request))

    def _carrier_call(self) -> tel.CallIds:
        return tel.CallIds(self.call_sid or "", self.stream_sid or "", self._account_sid)

    def on_transfer_result(self, result: HttpResult, now: float) -> list[Action]:
        """The carrier answered the transfer request: the call moves (a stop follows) or goes on."""
        out: list[Action] = []
        goodbye = self._goodbye
        if goodbye is None or goodbye.kind is not EndReason.TRANSFERRED or self.ending is not None:
            return out
        call = self._tool_calls.get(goodbye.call_id)
        if result.ok:
            if call is not None:
                self._tool_output(call, ToolOutcome.OK, f"Transferred to {goodbye.detail}.", now, out, follow_up=False)
            # The carrier stops the stream itself; if it does not, the call still ends in time.
            goodbye.deadline = now + self.settings.tools.goodbye_timeout_s
            return out
        self._goodbye = None
        why = f"HTTP status {result.status}" if result.status is not None else (result.detail or "no answer")
        if call is not None:
            text = f"The transfer to {goodbye.detail} failed ({why}). Tell the caller and carry on helping them."
            self._tool_output(
                call,
                ToolOutcome.HTTP_ERROR if result.status else ToolOutcome.UNREACHABLE,
                text,
                now,
                out,
                status=result.status,
                detail=result.detail,
            )
        return out

    def _mcp_note(self, item_id: str, kind: str, status: str, error: str | None, out: list[Action]) -> None:
        _, server, name = self._mcp_items.get(item_id, (kind, None, None))
        entry: dict[str, Any] = {"kind": kind, "status": status, "server_label": server, "item_id": item_id}
        if name:
            entry["tool"] = name
        if error:
            entry["error"] = error
        if entry in self.mcp_log:
            return  # the failure was already reported by the item
        self.mcp_log.append(entry)
        out.append(Note(NoteKind.MCP, entry))

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
                NoteKind.BARGE_IN,
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
        if self.ending is not None:
            return out
        server = self.settings.server
        if self.state is CallState.CONNECTING and now - self.started_at > START_TIMEOUT_S:
            self.end(EndReason.PROTOCOL_ERROR, "no start message from the carrier", out)
        elif now - self.started_at > server.max_call_duration_s:
            self.end(EndReason.TIMEOUT, "maximum call duration reached", out, CloseCode.NORMAL)
        elif now - self.last_carrier_at > server.idle_timeout_s:
            self.end(EndReason.TIMEOUT, "no message from the carrier", out)
        elif self._goodbye is not None:
            goodbye = self._goodbye
            if goodbye.requested and now >= goodbye.deadline:
                self.end(goodbye.kind, goodbye.detail, out)  # transferred, but the carrier kept the stream
            else:
                self._check_goodbye(now, out)
        if self.ending is not None:
            return out
        if self._up and self.state is CallState.ACTIVE:
            self._send_up(out)  # the carrier paused its frames: what is held goes up anyway
        realtime = self.settings.realtime
        if self._lost is not None:
            # A connect attempt can hang for connect_timeout_s: the budget is the budget.
            if now - self._lost.at > realtime.reconnect_timeout_s + 1.0:
                self._reconnect_failed(f"no new session within {realtime.reconnect_timeout_s:g} s", now, out)
        elif self._ready_no is not None:
            self._try_handover(now, out)
        elif (
            self.state is CallState.ACTIVE
            and self._pending_no is None
            and self._session_started_at is not None
            and now >= max(self._session_started_at + realtime.session_handover_s, self._handover_not_before)
        ):
            late = now >= self._session_started_at + realtime.session_handover_s + HANDOVER_LATEST_S
            if self._quiet(now) or late:
                age = round(now - self._session_started_at)
                out.append(Note(NoteKind.HANDOVER, {"phase": "started", "age_s": age}))
                self._connect(out)
        return out
