"""The trio shell around :class:`CallCore`: one nursery per call.

Tasks: carrier reader, model reader (started once the call's ``start`` names a profile), and a
pinger per socket; the clock comes from one task per worker (:func:`tick_calls`), which calls
every live call's :meth:`CallRunner.tick` four times a second. Each feeds what it sees to the
core (messages, closed sockets, unanswered pings, the clock) and carries out the actions it
returns; it decides nothing itself. A reader hands the core every message one read brought,
then sends what the core decided for each socket with one write
(:class:`~bridge.websocket.CallSocket`): a model delta's ``media`` and ``mark`` leave together,
and frames queued while the session opened leave at once. When the core ends the call, the
model socket is closed at once (an orphan session bills for up to an hour), the nursery is
cancelled, the carrier's socket is closed with the code and reason the core chose, and the call
is finalised: record, metrics, one summary log line. Nothing that happens in a call escapes
:meth:`CallRunner.run`, so no call can take down the server or another call.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import trio

from bridge.call import readout
from bridge.call.core import (
    Action,
    CallCore,
    CallTool,
    CloseModel,
    ConnectModel,
    EndCall,
    LookupSession,
    Note,
    SendCarrier,
    SendModel,
    Transfer,
    UseModel,
)
from bridge.call.readout import CallMeta
from bridge.carrier import base as tel
from bridge.carrier.base import Carrier
from bridge.carrier.configured import build_carriers
from bridge.config import Secrets, Settings
from bridge.httpmsg import Failure, HttpRequest, HttpResult
from bridge.outbound import Outbound
from bridge.realtime import events as rt
from bridge.realtime.client import UpstreamConnectError, connect
from bridge.vocabulary import CallState, EndReason, NoteKind, Side
from bridge.websocket import CallSocket, Closed

log = structlog.get_logger("bridge.call")

_WARNINGS = frozenset(
    {NoteKind.CARRIER_ERROR, NoteKind.AUDIO_ERROR, NoteKind.MODEL_PROTOCOL_ERROR, NoteKind.PROFILE_FALLBACK}
)

TICK_S = 0.25
MODEL_CLOSE_WAIT_S = 0.25


class CallHooks(Protocol):
    """What the worker does around calls: metrics, records. Every method must not raise."""

    def call_started(self, call: CallRunner) -> None: ...
    def note(self, call: CallRunner, note: Note) -> None: ...
    def barge_in_reaction(self, call: CallRunner, seconds: float) -> None: ...
    def upstream_connected(self, call: CallRunner, seconds: float) -> None: ...
    def call_ended(self, call: CallRunner) -> None: ...
    async def save_record(self, call: CallRunner, final: bool) -> None: ...


class NullHooks:
    def call_started(self, call: CallRunner) -> None:
        pass

    def note(self, call: CallRunner, note: Note) -> None:
        pass

    def barge_in_reaction(self, call: CallRunner, seconds: float) -> None:
        pass

    def upstream_connected(self, call: CallRunner, seconds: float) -> None:
        pass

    def call_ended(self, call: CallRunner) -> None:
        pass

    async def save_record(self, call: CallRunner, final: bool) -> None:
        pass


@dataclass
class WorkerContext:
    settings: Settings
    secrets: Secrets
    hooks: CallHooks = field(default_factory=NullHooks)
    worker_id: int | None = None
    calls: dict[str, CallRunner] = field(default_factory=dict)
    draining: bool = False
    outbound: Outbound | None = None  # the worker's HTTP client (tools, transfers), set by run_worker
    # The carriers this worker answers, by route name; built from the settings and secrets (a
    # reload swaps both). Raises ValueError when one cannot be built: serve checks that first.
    carriers: dict[str, Carrier] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.carriers:
            self.carriers = build_carriers(self.settings, self.secrets)

    def reconfigure(self, settings: Settings, secrets: Secrets) -> None:
        """New settings for calls that start from now on (live calls keep theirs)."""
        carriers = build_carriers(settings, secrets)
        self.settings, self.secrets, self.carriers = settings, secrets, carriers


class CallRunner:
    def __init__(self, ctx: WorkerContext, carrier: CallSocket, remote: str, dialect: Carrier) -> None:
        self.ctx = ctx
        self.carrier = carrier
        self.remote = remote
        self.call_id = uuid.uuid4().hex[:16]
        self.started_wall = time.time()  # wall clock only for the record's timestamps
        self.ended_wall: float | None = None
        # A call keeps the settings and secrets it started with; a reload (SIGHUP) swaps the
        # context's for new calls only.
        self.settings = ctx.settings
        self.secrets = ctx.secrets
        self.core = CallCore(self.settings, self.call_id, trio.current_time(), dialect, self.secrets)
        # Model sessions by number: the call's audio goes to _current_model (a handover briefly
        # has two open; a reconnect none).
        self._models: dict[int, CallSocket] = {}
        self._model_scopes: dict[int, trio.CancelScope] = {}
        self._closed_by_us: set[int] = set()
        self._model_busy: set[int] = set()  # sessions whose task is in _do right now
        self._current_model: int | None = None
        self._nursery: trio.Nursery | None = None
        self._connect_started: float | None = None
        self._closing = False
        # What the core decided to send and has not been written yet, per socket, in order.
        self._to_carrier: list[tel.Frame] = []
        self._to_model: dict[int, list[str]] = {}
        self._barge_in_at: float | None = None  # a clear among _to_carrier: when its trigger arrived
        self._ending: EndCall | None = None
        self._next_save = 0.0  # when the record is written next (set when the call runs)
        self._saving = False
        self.log = log.bind(call_id=self.call_id)

    # --- public ------------------------------------------------------------------------------
    def request_end(self, reason: EndReason, detail: str) -> bool:
        """End the call from outside (operator, drain). Safe from any task of this trio run."""
        if self._nursery is None or self._closing:
            return False
        self._nursery.start_soon(self._do, self.core.request_end(reason, detail))
        return True

    @property
    def meta(self) -> CallMeta:
        return CallMeta(self.call_id, self.started_wall, self.ctx.worker_id)

    def snapshot(self) -> dict[str, Any]:
        return readout.snapshot(self.core, self.meta, trio.current_time())

    async def run(self) -> None:
        ctx = self.ctx
        ctx.calls[self.call_id] = self
        structlog.contextvars.bind_contextvars(call_id=self.call_id)
        self._safe(ctx.hooks.call_started, self)
        self.log.info("call_connected", remote=self.remote)
        # A random phase spreads the record writes of calls that started together.
        interval = self.settings.records.update_interval_s
        self._next_save = trio.current_time() + interval * (0.5 + random.random())
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._carrier_reader)
                nursery.start_soon(self._pinger, self.carrier, Side.CARRIER)
        except Exception as exc:  # a bug in this call must stay in this call
            self.log.error("call_crashed", error=repr(exc), exc_info=exc)
            self.core.on_crash(type(exc).__name__)
        finally:
            with trio.CancelScope(shield=True):
                await self._finalise()
                ctx.calls.pop(self.call_id, None)

    # --- tasks -------------------------------------------------------------------------------
    async def _carrier_reader(self) -> None:
        parse = self.core.carrier.parse
        on_carrier = self.core.on_carrier
        apply = self._apply
        while True:
            try:
                messages = await self.carrier.receive()
            except Closed as exc:
                await self._do(self.core.on_carrier_closed(exc.code, trio.current_time()))
                return
            now = trio.current_time()
            for message in messages:
                apply(on_carrier(parse(message), now))
            await self._flush()

    async def _model_task(self, action: ConnectModel) -> None:
        """One model session: open it, feed its events to the core, report how it ended.

        A call can have two at once (a handover opens the next before closing the current), so
        every report names its session; the core ignores what no longer concerns it. The core
        may close this very session while this task carries out its actions (a loss is reported
        here and closes it): the cancel scope therefore never interrupts ``_do`` (see
        :meth:`_close_model`), and the final report runs outside the scope.
        """
        no = action.session
        scope = self._model_scopes[no] = trio.CancelScope()
        key = self.secrets.openai_api_key
        report: list[Action] = []
        with scope:
            if action.delay_s:
                await trio.sleep(action.delay_s)
            self._connect_started = trio.current_time()
            # The close's code and reason, not the exception: a local holding an exception whose
            # traceback holds this frame is a cycle, and it kept every ended call in memory until
            # a full garbage collection (rare in a worker, see gc.set_threshold).
            closed: tuple[int | None, str | None] | None = None
            engine = self.settings.server.websocket
            secret = key.get_secret_value() if key else None
            try:
                async with (
                    connect(self.settings.realtime, action.model, secret, engine) as ws,
                    trio.open_nursery() as pinging,
                ):
                    self._models[no] = ws
                    pinging.start_soon(self._pinger, ws, Side.MODEL, no)
                    try:
                        await self._model_do(no, self.core.on_model_connected(trio.current_time(), session=no))
                        on_model = self.core.on_model
                        parse = rt.parse
                        while no not in self._closed_by_us:
                            messages = await ws.receive()
                            now = trio.current_time()
                            self._model_busy.add(no)
                            try:
                                for message in messages:
                                    self._apply(on_model(parse(message), now, no))
                                await self._flush()
                            finally:
                                self._model_busy.discard(no)
                    except Closed as exc:  # caught here, not around the nursery (an ExceptionGroup there)
                        closed = (exc.code, exc.reason)
                    pinging.cancel_scope.cancel()
            except UpstreamConnectError as exc:
                report = self.core.on_model_connect_failed(str(exc), trio.current_time(), session=no)
            else:
                if closed is not None and no not in self._closed_by_us:
                    report = self.core.on_model_closed(*closed, trio.current_time(), session=no)
            finally:
                self._models.pop(no, None)
        self._model_scopes.pop(no, None)
        await self._do(report)

    async def _model_do(self, no: int, actions: list[Action]) -> None:
        self._model_busy.add(no)
        try:
            await self._do(actions)
        finally:
            self._model_busy.discard(no)

    async def _close_model(self, action: CloseModel) -> None:
        """The core is done with a session: close it promptly (an open session keeps billing)."""
        no = action.session
        self._closed_by_us.add(no)
        ws = self._models.get(no)
        if ws is not None:
            with trio.move_on_after(MODEL_CLOSE_WAIT_S) as scope:
                scope.shield = True
                try:
                    await ws.aclose(1000, action.reason[:120])
                except Exception as exc:
                    self.log.debug("model_close_failed", session=no, error=repr(exc))
        # Stop its task (a peer that does not answer the close keeps it waiting), unless the task is
        # carrying out actions right now: it stops by itself when they are done.
        cancel = self._model_scopes.get(no)
        if cancel is not None and no not in self._model_busy:
            cancel.cancel()

    def tick(self, now: float) -> None:
        """The worker's clock (:func:`tick_calls`): the core's timeouts, and the periodic record.

        Synchronous, so one task can tick every call: what the core decides is applied at once
        and, when there is something to write or an end to carry out, flushed by a task of this
        call's own (rarely: most ticks decide nothing)."""
        nursery = self._nursery
        if nursery is None or self._closing:
            return
        try:
            self._apply(self.core.on_tick(now))
        except Exception as exc:  # a bug in this call's clock handling ends this call only
            self.log.error("call_crashed", error=repr(exc), exc_info=exc)
            self._apply(self.core.on_crash(type(exc).__name__))
        if self._to_carrier or self._to_model or self._ending is not None:
            nursery.start_soon(self._flush)
        if now >= self._next_save and not self._saving and self.core.call_sid is not None:
            self._next_save = now + self.settings.records.update_interval_s
            self._saving = True
            nursery.start_soon(self._save_record)

    async def _save_record(self) -> None:
        try:
            await self.ctx.hooks.save_record(self, False)
        finally:
            self._saving = False

    async def _pinger(self, ws: CallSocket, side: Side, session: int | None = None) -> None:
        limits = self.settings.server if side is Side.CARRIER else self.settings.realtime
        while True:
            await trio.sleep(limits.ping_interval_s)
            with trio.move_on_after(limits.ping_timeout_s) as scope:
                try:
                    await ws.ping()
                except Closed:
                    return  # the reader task reports the close
            if scope.cancelled_caught:
                await self._do(self.core.on_ping_timeout(side, trio.current_time(), session))
                return

    # --- actions ---------------------------------------------------------------------------
    async def _do(self, actions: Iterable[Action]) -> None:
        """Carry out the core's actions in order (:meth:`_apply`, then :meth:`_flush`)."""
        self._apply(actions)
        await self._flush()

    def _apply(self, actions: Iterable[Action]) -> None:
        """Everything but the writes, at once; frames are queued per socket in the core's order
        and written by :meth:`_flush`, so a run of them (a delta's media and mark, the caller
        audio kept while the session opened) goes out as one write that nothing can come between."""
        for action in actions:
            if type(action) is SendModel:
                no = self._current_model if action.session is None else action.session
                if no is not None:  # else no session to send to (being replaced): the core replays what matters
                    queued = self._to_model.get(no)
                    if queued is None:
                        self._to_model[no] = [action.text]
                    else:
                        queued.append(action.text)
            elif type(action) is SendCarrier:
                self._to_carrier.append(action.frame)
                if action.barge_in_at is not None:
                    self._barge_in_at = action.barge_in_at
            elif isinstance(action, Note):
                self._on_note(action)
            elif isinstance(action, ConnectModel):
                assert self._nursery is not None
                self._nursery.start_soon(self._model_task, action)
                if action.session == 1:
                    self.log = self.log.bind(stream_sid=self.core.stream_sid, call_sid=self.core.call_sid)
                    structlog.contextvars.bind_contextvars(stream_sid=self.core.stream_sid)
                    # The record exists from the moment the call is known: a crash still leaves it.
                    self._nursery.start_soon(self.ctx.hooks.save_record, self, False)
            elif isinstance(action, UseModel):
                self._current_model = action.session
            elif isinstance(action, CloseModel):
                assert self._nursery is not None
                self._nursery.start_soon(self._close_model, action)
            elif isinstance(action, CallTool):
                assert self._nursery is not None
                self._nursery.start_soon(self._call_tool, action)
            elif isinstance(action, Transfer):
                assert self._nursery is not None
                self._nursery.start_soon(self._transfer, action)
            elif isinstance(action, LookupSession):
                assert self._nursery is not None
                self._nursery.start_soon(self._lookup, action)
            elif isinstance(action, EndCall) and self._ending is None:
                self._ending = action

    async def _flush(self) -> None:
        """Write what :meth:`_apply` queued: the carrier's frames first (a clear is the most
        urgent thing a call sends), then each model session's; then end the call if it ended."""
        if self._to_carrier:
            frames, self._to_carrier = self._to_carrier, []
            barge_in_at, self._barge_in_at = self._barge_in_at, None
            try:
                await self.carrier.send(frames)
            except Closed:
                pass  # the carrier reader reports the close
            else:
                if barge_in_at is not None:
                    reaction = trio.current_time() - barge_in_at
                    self.core.barge_in_cleared(reaction)
                    self._safe(self.ctx.hooks.barge_in_reaction, self, reaction)
        if self._to_model:
            queued, self._to_model = self._to_model, {}
            for no, texts in queued.items():
                ws = self._models.get(no)
                if ws is None:
                    continue  # the session is gone (replaced): the core replays what matters
                try:
                    await ws.send(texts)
                except Closed:
                    pass  # the model reader reports the close
        if self._ending is not None:
            ending, self._ending = self._ending, None
            await self._close(ending)

    async def _http(self, request: HttpRequest) -> HttpResult:
        outbound = self.ctx.outbound
        if outbound is None:  # only a context built by hand (tests) lacks one
            return HttpResult(0.0, failure=Failure.UNREACHABLE, detail="no HTTP client in this worker")
        return await outbound.send(request)

    async def _call_tool(self, action: CallTool) -> None:
        # Runs in the call's nursery: when the call ends, the request is cancelled with it.
        result = await self._http(action.request.http)
        await self._do(self.core.on_tool_result(action.request.call_id, result, trio.current_time()))

    async def _lookup(self, action: LookupSession) -> None:
        result = await self._http(action.request)
        await self._do(self.core.on_session_lookup(result, trio.current_time()))

    async def _transfer(self, action: Transfer) -> None:
        result = await self._http(action.request)
        await self._do(self.core.on_transfer_result(result, trio.current_time()))

    def _on_note(self, note: Note) -> None:
        kind = note.kind
        if kind is NoteKind.STATE:
            self.log.info("call_state", **note.fields)
            if note.fields.get("to") is CallState.ACTIVE and self._connect_started is not None:
                self._safe(self.ctx.hooks.upstream_connected, self, trio.current_time() - self._connect_started)
        elif kind in _WARNINGS:
            self.log.warning(kind, **note.fields)
        elif kind is NoteKind.MODEL_ERROR:
            level = "info" if note.fields.get("benign") else "warning"
            getattr(self.log, level)(kind, **note.fields)
        elif kind is NoteKind.RESPONSE_DONE:
            self.log.debug(kind, **{k: v for k, v in note.fields.items() if k != "usage"})
        else:
            self.log.info(kind, **note.fields)
        self._safe(self.ctx.hooks.note, self, note)

    async def _close(self, action: EndCall) -> None:
        if self._closing:
            return
        self._closing = True
        self.log.info("call_ending", reason=action.reason, detail=action.detail)
        # Close the model side first and promptly: it is what bills. The close frame leaves at
        # once; the wait for the peer's reply is short, then the TCP stream is closed anyway.
        for no in list(self._models):
            await self._close_model(CloseModel(no, action.reason))
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _finalise(self) -> None:
        core = self.core
        finished = core.finish()  # decides an end if nothing did (a bug), then the final state
        ending = core.ending
        assert ending is not None
        with trio.move_on_after(1.0):
            try:
                await self.carrier.aclose(ending.close_code, ending.close_reason)
            except Exception as exc:
                self.log.debug("carrier_close_failed", error=repr(exc))
        for no in list(self._models):
            await self._close_model(CloseModel(no, ending.reason))
        for note in finished:
            if isinstance(note, Note):
                self._on_note(note)
        self.ended_wall = time.time()
        try:
            await self.ctx.hooks.save_record(self, True)
        except Exception as exc:
            self.log.error("record_save_failed", error=repr(exc))
        self._safe(self.ctx.hooks.call_ended, self)
        self.log.info("call_summary", **self.summary())

    def summary(self) -> dict[str, Any]:
        return readout.summary(self.core, trio.current_time())

    def _safe(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.log.error("hook_failed", hook=getattr(fn, "__name__", "?"), error=repr(exc))


async def tick_calls(ctx: WorkerContext) -> None:
    """The one clock of a worker's calls: every :data:`TICK_S`, :meth:`CallRunner.tick` for each.

    One timer instead of a sleeping task per call: on this machine a ``trio.sleep`` wake-up costs
    about 0.3 ms of CPU (a cancel scope and its Cancelled exception each time), which at four
    ticks a second was more CPU per call than a whole second of its audio frames."""
    while True:
        await trio.sleep(TICK_S)
        now = trio.current_time()
        for call in list(ctx.calls.values()):
            call.tick(now)
