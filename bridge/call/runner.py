"""The trio shell around :class:`CallCore`: one nursery per call.

Tasks: carrier reader, model reader (started once the call's ``start`` names a profile),
a ticker, and a pinger per socket. Each task feeds events to the core and carries out the
actions it returns. When any side ends, the end is decided once in the core, the model socket
is closed at once (an orphan session bills for up to an hour), the nursery is cancelled and the
call is finalised: record, metrics, one summary log line. Nothing that happens in a call
escapes :meth:`CallRunner.run`, so no call can take down the server or another call.
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
from trio_websocket import ConnectionClosed, WebSocketConnection

from bridge.call.core import (
    ACTIVE,
    Action,
    CallCore,
    ConnectModel,
    EndCall,
    Note,
    SendCarrier,
    SendModel,
)
from bridge.carrier import twilio
from bridge.config import Secrets, Settings
from bridge.realtime import events as rt
from bridge.realtime.client import UpstreamConnectError, connect

log = structlog.get_logger("bridge.call")

TICK_S = 0.25
MODEL_CLOSE_WAIT_S = 0.25
START_TIMEOUT_S = 10.0


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


class CallRunner:
    def __init__(self, ctx: WorkerContext, carrier: WebSocketConnection, remote: str = "") -> None:
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
        self.core = CallCore(self.settings, self.call_id, trio.current_time())
        self.model_ws: WebSocketConnection | None = None
        self._nursery: trio.Nursery | None = None
        self._connect_started: float | None = None
        self._closing = False
        self._model_lock = trio.StrictFIFOLock()
        self._carrier_lock = trio.StrictFIFOLock()
        self.log = log.bind(call_id=self.call_id)

    # --- public ------------------------------------------------------------------------------
    def request_end(self, reason: str, detail: str, close_code: int = 1000) -> bool:
        """End the call from outside (operator, drain). Safe from any task of this trio run."""
        if self._nursery is None or self._closing:
            return False
        out: list[Action] = []
        self.core.end(reason, detail, out, close_code)
        self._nursery.start_soon(self._do, out)
        return True

    def snapshot(self) -> dict[str, Any]:
        now = trio.current_time()
        core = self.core
        cost: float | None = None
        if core.meter is not None:
            duration = now - core.started_at
            breakdown = core.meter.cost(duration)
            cost = breakdown.total_usd
        carrier_format = core.converter.carrier.id if core.converter else None
        return {
            "id": self.call_id,
            "call_sid": core.call_sid,
            "stream_sid": core.stream_sid,
            "state": core.state,
            "turn": core.turn(now),
            "profile": core.profile,
            "model": core.session.model if core.session else None,
            "carrier_format": carrier_format,
            "session_format": core.session.audio_format if core.session else None,
            "started_at": self.started_wall,
            "duration_s": round(now - core.started_at, 3),
            "frames_in": core.stats.frames_in,
            "frames_out": core.stats.frames_out,
            "barge_ins": core.stats.barge_ins,
            "turns": core.stats.turns,
            "cost_usd": None if cost is None else round(cost, 6),
            "worker": self.ctx.worker_id,
        }

    async def run(self) -> None:
        ctx = self.ctx
        ctx.calls[self.call_id] = self
        structlog.contextvars.bind_contextvars(call_id=self.call_id)
        self._safe(ctx.hooks.call_started, self)
        self.log.info("call_connected", remote=self.remote)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._carrier_reader)
                nursery.start_soon(self._ticker)
                nursery.start_soon(self._pinger, self.carrier, "carrier")
        except Exception as exc:  # a bug in this call must stay in this call
            self.log.error("call_crashed", error=repr(exc), exc_info=exc)
            out: list[Action] = []
            self.core.end("bridge_error", f"internal error: {type(exc).__name__}", out, 1011)
        finally:
            with trio.CancelScope(shield=True):
                await self._finalise()
                ctx.calls.pop(self.call_id, None)

    # --- tasks -------------------------------------------------------------------------------
    async def _carrier_reader(self) -> None:
        while True:
            try:
                message = await self.carrier.get_message()
            except ConnectionClosed as exc:
                out: list[Action] = []
                code = exc.reason.code if exc.reason else None
                self.core.end("caller_hangup", f"carrier closed the socket ({code})", out)
                await self._do(out)
                return
            await self._do(self.core.on_carrier(twilio.parse(message), trio.current_time()))

    async def _model_task(self, model: str) -> None:
        settings = self.settings
        key = self.secrets.openai_api_key
        self._connect_started = trio.current_time()
        try:
            async with connect(settings.realtime, model, key.get_secret_value() if key else None) as ws:
                self.model_ws = ws
                assert self._nursery is not None
                self._nursery.start_soon(self._pinger, ws, "model")
                await self._do(self.core.on_model_connected(trio.current_time()))
                while True:
                    message = await ws.get_message()
                    await self._do(self.core.on_model(rt.parse(message), trio.current_time()))
        except UpstreamConnectError as exc:
            out: list[Action] = []
            self.core.end("model_error", str(exc), out, 1011)
            await self._do(out)
        except ConnectionClosed as exc:
            out = []
            reason = exc.reason
            detail = f"model closed the session ({reason.code}: {reason.reason})" if reason else "model closed"
            self.core.end("model_error", detail, out, 1011)
            await self._do(out)

    async def _ticker(self) -> None:
        interval = self.settings.records.update_interval_s
        # A random phase spreads the record writes of calls that started together.
        next_save = trio.current_time() + interval * (0.5 + random.random())
        while True:
            await trio.sleep(TICK_S)
            now = trio.current_time()
            out = self.core.on_tick(now)
            if self.core.state == "connecting" and now - self.core.started_at > START_TIMEOUT_S:
                self.core.end("protocol_error", "no start message from the carrier", out, 1008)
            await self._do(out)
            if now >= next_save and self.core.call_sid is not None:
                next_save = now + interval
                await self.ctx.hooks.save_record(self, False)

    async def _pinger(self, ws: WebSocketConnection, side: str) -> None:
        settings = self.settings.server
        while True:
            await trio.sleep(settings.ping_interval_s)
            with trio.move_on_after(settings.ping_timeout_s) as scope:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return  # the reader task reports the close
            if scope.cancelled_caught:
                out: list[Action] = []
                reason = "timeout" if side == "carrier" else "model_error"
                self.core.end(reason, f"{side} did not answer a ping", out, 1001)
                await self._do(out)
                return

    # --- actions ---------------------------------------------------------------------------
    async def _do(self, actions: Iterable[Action]) -> None:
        """Carry out the core's actions in order.

        Each socket has a FIFO lock, held across a run of consecutive sends to it, so the wire
        order is the order the core decided: the caller audio buffered while the session opened
        cannot be overtaken by a frame that arrives during the flush. The uncontended case takes
        the lock without a checkpoint.
        """
        held: trio.StrictFIFOLock | None = None
        try:
            for action in actions:
                kind = type(action)
                if kind is SendModel or kind is SendCarrier:
                    lock = self._model_lock if kind is SendModel else self._carrier_lock
                    if held is not lock:
                        if held is not None:
                            held.release()
                            held = None
                        if lock.locked():
                            await lock.acquire()
                        else:
                            lock.acquire_nowait()
                        held = lock
                    if kind is SendModel:
                        await self._send_model(action)  # type: ignore[arg-type]
                    else:
                        await self._send_carrier(action)  # type: ignore[arg-type]
                    continue
                if held is not None:
                    held.release()
                    held = None
                if isinstance(action, Note):
                    self._on_note(action)
                elif isinstance(action, ConnectModel):
                    assert self._nursery is not None
                    self.log = self.log.bind(stream_sid=self.core.stream_sid, call_sid=self.core.call_sid)
                    structlog.contextvars.bind_contextvars(stream_sid=self.core.stream_sid)
                    self._nursery.start_soon(self._model_task, action.model)
                    # The record exists from the moment the call is known, so a crash still leaves it.
                    self._nursery.start_soon(self.ctx.hooks.save_record, self, False)
                elif isinstance(action, EndCall):
                    await self._close(action)
        finally:
            if held is not None:
                held.release()

    async def _send_model(self, action: SendModel) -> None:
        if self.model_ws is None:
            return
        try:
            await self.model_ws.send_message(action.text)
        except ConnectionClosed:
            pass  # the model reader reports the close

    async def _send_carrier(self, action: SendCarrier) -> None:
        try:
            await self.carrier.send_message(action.text)
        except ConnectionClosed:
            return  # the carrier reader reports the close
        if action.barge_in_at is not None:
            reaction = trio.current_time() - action.barge_in_at
            self.core.barge_in_cleared(reaction)
            self._safe(self.ctx.hooks.barge_in_reaction, self, reaction)

    def _on_note(self, note: Note) -> None:
        if note.name == "state":
            self.log.info("call_state", **note.fields)
            if note.fields.get("to") == ACTIVE and self._connect_started is not None:
                self._safe(self.ctx.hooks.upstream_connected, self, trio.current_time() - self._connect_started)
        elif note.name in ("carrier_error", "audio_error", "model_protocol_error", "profile_fallback"):
            self.log.warning(note.name, **note.fields)
        elif note.name == "model_error":
            level = "info" if note.fields.get("benign") else "warning"
            getattr(self.log, level)("model_error", **note.fields)
        elif note.name == "response_done":
            self.log.debug("response_done", **{k: v for k, v in note.fields.items() if k != "usage"})
        else:
            self.log.info(note.name, **note.fields)
        self._safe(self.ctx.hooks.note, self, note)

    async def _close(self, action: EndCall) -> None:
        if self._closing:
            return
        self._closing = True
        self.log.info("call_ending", reason=action.reason, detail=action.detail)
        # Close the model side first and promptly: it is what bills. The close frame leaves at
        # once; the wait for the peer's reply is short, then the TCP stream is closed anyway.
        if self.model_ws is not None:
            with trio.move_on_after(MODEL_CLOSE_WAIT_S) as scope:
                scope.shield = True
                try:
                    await self.model_ws.aclose(1000, action.reason)
                except Exception as exc:
                    self.log.debug("model_close_failed", error=repr(exc))
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _finalise(self) -> None:
        core = self.core
        if core.end_reason is None:
            out: list[Action] = []
            core.end("bridge_error", "call task ended without a reason", out, 1011)
        code = 1000
        reason = core.end_reason or "bridge_error"
        code = {
            "caller_hangup": 1000,
            "operator": 1000,
            "drain": 1001,
            "timeout": 1001,
            "protocol_error": 1008,
        }.get(reason, 1011)
        with trio.move_on_after(1.0):
            try:
                await self.carrier.aclose(code, f"{reason}: {core.end_detail}"[:120])
            except Exception as exc:
                self.log.debug("carrier_close_failed", error=repr(exc))
        if self.model_ws is not None and not self.model_ws.closed:
            with trio.move_on_after(0.5):
                try:
                    await self.model_ws.aclose(1000, reason)
                except Exception:
                    pass
        for note in core.finish():
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
        core = self.core
        stats = core.stats
        now = trio.current_time()
        lat = stats.response_latencies
        out: dict[str, Any] = {
            "reason": core.end_reason,
            "detail": core.end_detail,
            "state": core.state,
            "profile": core.profile,
            "duration_s": round(now - core.started_at, 3),
            "frames_in": stats.frames_in,
            "frames_out": stats.frames_out,
            "turns": stats.turns,
            "barge_ins": stats.barge_ins,
            "barge_in_reaction_ms": [round(x * 1000, 2) for x in stats.barge_in_reactions],
            "dtmf": stats.dtmf,
            "audio_errors": stats.audio_errors,
            "protocol_errors": stats.protocol_errors,
            "model_errors": stats.model_errors,
            "response_latency_ms": [round(x * 1000) for x in lat],
        }
        if core.meter is not None:
            cost = core.meter.cost(now - core.started_at)
            out["cost_usd"] = None if cost.total_usd is None else round(cost.total_usd, 6)
            out["cost_per_minute_usd"] = None if cost.per_minute_usd is None else round(cost.per_minute_usd, 6)
        return out

    def _safe(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.log.error("hook_failed", hook=getattr(fn, "__name__", "?"), error=repr(exc))
