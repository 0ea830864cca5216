"""What a worker does around each call: Prometheus metrics and the durable call record.

Per-frame counters live in the call's own stats and are pushed to Prometheus in batches on the
ticker, so the hot path never touches a (multiprocess, mmap-backed) metric. Record writes run
on a thread: SQLite is fast, but a blocked disk must never stall the audio of other calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog
import trio

from bridge import metrics
from bridge.accounting import webhooks
from bridge.accounting.records import CallRecord
from bridge.accounting.store import OutboxEvent, RecordStore
from bridge.call import readout
from bridge.call.core import Note
from bridge.call.runner import CallRunner
from bridge.vocabulary import EndReason, NoteKind, TokenKind

log = structlog.get_logger("bridge.hooks")


@dataclass
class _Flushed:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    transcription_s: float = 0.0
    cost: dict[str, float] = field(default_factory=dict)  # part -> USD already counted


def outcome(end_reason: str | None) -> str:
    """The ``outcome`` label of an ended call: its end reason, or bridge_error for none (a bug)."""
    if end_reason is not None and end_reason in EndReason.__members__.values():
        return EndReason(end_reason).value
    return EndReason.BRIDGE_ERROR.value


class WorkerHooks:
    def __init__(self, store: RecordStore | None, worker_id: int | None = None) -> None:
        self.store = store
        self.worker_id = worker_id
        self._flushed: dict[str, _Flushed] = {}
        self._records: dict[str, CallRecord] = {}
        self._lock = trio.Lock()  # one SQLite connection, used from one thread at a time

    # --- CallHooks -----------------------------------------------------------------------
    def call_started(self, call: CallRunner) -> None:
        metrics.calls_active.inc()
        metrics.calls_started_total.inc()
        self._flushed[call.call_id] = _Flushed()

    def note(self, call: CallRunner, note: Note) -> None:
        f = note.fields
        kind = note.kind
        if kind is NoteKind.CARRIER_ERROR:
            # Every kind the core names, e.g. bad_json, media_before_start, message_too_big.
            metrics.protocol_errors_total.labels(source="carrier", kind=str(f.get("kind", "unknown"))[:64]).inc()
        elif kind is NoteKind.MODEL_PROTOCOL_ERROR:
            metrics.protocol_errors_total.labels(source="model", kind="malformed_event").inc()
        elif kind is NoteKind.AUDIO_ERROR:
            metrics.audio_errors_total.labels(kind=f.get("kind", "unknown")).inc()
        elif kind is NoteKind.MODEL_ERROR:
            # A harmless race (the core marks it) is not a model failure: counted apart, so the
            # dashboard's error panel shows only errors someone should look at.
            counter = metrics.model_races_total if f.get("benign") else metrics.model_errors_total
            counter.labels(code=str(f.get("code", "unknown"))[:64]).inc()
        elif kind is NoteKind.BARGE_IN:
            metrics.barge_ins_total.inc()
        elif kind is NoteKind.RESPONSE_LATENCY:
            metrics.response_latency_seconds.observe(f["seconds"])
        elif kind is NoteKind.DTMF:
            metrics.dtmf_total.inc()
        elif kind is NoteKind.TOOL_RESULT:
            metrics.tool_calls_total.labels(tool=f["tool"], outcome=f["outcome"]).inc()
            metrics.tool_duration_seconds.labels(tool=f["tool"]).observe(f["seconds"])
        elif kind is NoteKind.MCP:
            server = str(f.get("server_label") or "unknown")[:64]
            metrics.mcp_events_total.labels(server_label=server, kind=f["kind"], status=f["status"]).inc()
        elif kind is NoteKind.RECONNECT and f.get("phase") in ("restored", "failed"):
            result = "restored" if f["phase"] == "restored" else "failed"
            metrics.model_reconnects_total.labels(cause=str(f.get("cause", "unknown"))[:32], result=result).inc()
            if result == "restored":
                metrics.model_gap_seconds.observe(f.get("gap_ms", 0) / 1000)
        elif kind is NoteKind.HANDOVER and f.get("phase") == "done":
            metrics.model_handovers_total.labels(cause=str(f.get("cause", "age"))[:32]).inc()
        elif kind is NoteKind.RESPONSE_DONE and f.get("status") == "completed":
            metrics.turns_total.inc()
            self.flush(call)

    def barge_in_reaction(self, call: CallRunner, seconds: float) -> None:
        metrics.barge_in_reaction_seconds.observe(seconds)

    def upstream_connected(self, call: CallRunner, seconds: float) -> None:
        metrics.upstream_connect_seconds.observe(seconds)

    def call_ended(self, call: CallRunner) -> None:
        self.flush(call)
        core = call.core
        metrics.calls_active.dec()
        metrics.calls_ended_total.labels(outcome=outcome(core.end_reason)).inc()
        duration = trio.current_time() - core.started_at
        metrics.call_duration_seconds.observe(duration)
        if core.meter is not None:
            cost = core.meter.cost(duration)
            if cost.per_minute_usd is not None:
                metrics.call_cost_per_minute_usd.observe(cost.per_minute_usd)
        self._flushed.pop(call.call_id, None)
        self._records.pop(call.call_id, None)

    def flush(self, call: CallRunner) -> None:
        """Push what the call counted since the last flush to Prometheus."""
        last = self._flushed.get(call.call_id)
        if last is None:
            return
        s = call.core.stats
        if s.frames_in != last.frames_in:
            metrics.frames_total.labels(direction="to_model").inc(s.frames_in - last.frames_in)
            metrics.audio_bytes_total.labels(direction="to_model").inc(s.bytes_in - last.bytes_in)
        if s.frames_out != last.frames_out:
            metrics.frames_total.labels(direction="to_carrier").inc(s.frames_out - last.frames_out)
            metrics.audio_bytes_total.labels(direction="to_carrier").inc(s.bytes_out - last.bytes_out)
        last.frames_in, last.frames_out, last.bytes_in, last.bytes_out = (
            s.frames_in,
            s.frames_out,
            s.bytes_in,
            s.bytes_out,
        )
        meter = call.core.meter
        if meter is None:
            return
        model = meter.model
        for kind, value in meter.tokens().items():
            if kind == TokenKind.TRANSCRIPTION_AUDIO_MS:
                continue  # a duration, not tokens: counted in seconds below
            delta = value - last.tokens.get(kind, 0)
            if delta > 0:
                metrics.tokens_total.labels(model=model, kind=kind).inc(delta)
                last.tokens[kind] = value
        heard = meter.transcription_seconds - last.transcription_s
        if heard > 0:
            metrics.transcription_audio_seconds_total.labels(model=meter.transcription_model or "unknown").inc(heard)
            last.transcription_s = meter.transcription_seconds
        cost = meter.cost(trio.current_time() - call.core.started_at)
        parts: tuple[tuple[str, float | None], ...] = (
            ("model", cost.model_usd),
            ("transcription", cost.transcription_usd),
            ("carrier", cost.carrier_usd),
        )
        for part, usd in parts:
            if usd is None:
                continue
            gained = usd - last.cost.get(part, 0.0)
            if gained > 0:
                metrics.cost_usd_total.labels(model=model, part=part).inc(gained)
                last.cost[part] = usd

    # --- records ---------------------------------------------------------------------------
    def build_record(self, call: CallRunner, final: bool) -> CallRecord:
        core = call.core
        rec = self._records.get(call.call_id)
        if rec is None:
            rec = CallRecord(call_id=call.call_id, started_at=call.started_wall, worker=self.worker_id)
            self._records[call.call_id] = rec
        return readout.fill_record(rec, core, trio.current_time(), time.time(), final=final, ended_wall=call.ended_wall)

    async def save_record(self, call: CallRunner, final: bool) -> None:
        self.flush(call)  # the ticker's periodic call: metrics flow even without a record store
        if self.store is None:
            return
        first = call.call_id not in self._records
        rec = self.build_record(call, final)
        store = self.store
        events = self._webhook_events(call, rec, first=first, final=final)
        try:
            async with self._lock:
                if final:
                    await trio.to_thread.run_sync(store.finish, rec, events)
                elif first:
                    await trio.to_thread.run_sync(store.start, rec, events)
                else:
                    await trio.to_thread.run_sync(store.update, rec)
        except Exception as exc:
            log.error("record_write_failed", call_id=call.call_id, error=repr(exc))

    @staticmethod
    def _webhook_events(call: CallRunner, rec: CallRecord, *, first: bool, final: bool) -> list[OutboxEvent]:
        """call.started with the first write of a real call, call.ended with its last one."""
        endpoints = call.settings.webhooks.endpoints
        if not endpoints or rec.call_sid is None:
            return []  # no endpoints, or a connection that never became a call (no start)
        now = time.time()
        events: list[OutboxEvent] = []
        if first:
            events += webhooks.call_events(rec, "call.started", endpoints, now)
        if final:
            events += webhooks.call_events(rec, "call.ended", endpoints, now)
        return events
