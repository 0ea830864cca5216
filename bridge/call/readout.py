"""What a call looks like from outside: the live snapshot, the summary line and the call record.

The admin port's ``/sessions``, the ``call_summary`` log line and the durable record all describe
the same call; they are built here, from the core, so a field has one meaning and one spelling
everywhere. Pure: the clocks are passed in (``now``: the trio clock the core runs on; ``wall``:
epoch seconds for timestamps people read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.accounting.records import CallRecord
from bridge.call.core import CallCore
from bridge.vocabulary import EndReason


@dataclass(frozen=True, slots=True)
class CallMeta:
    """What the shell knows about a call that the core does not."""

    call_id: str
    started_wall: float
    worker: int | None = None


def _carrier_format(core: CallCore) -> str | None:
    return core.converter.carrier.id if core.converter else None


def _cost_usd(core: CallCore, now: float) -> float | None:
    if core.meter is None:
        return None
    total = core.meter.cost(now - core.started_at).total_usd
    return None if total is None else round(total, 6)


def snapshot(core: CallCore, meta: CallMeta, now: float) -> dict[str, Any]:
    """A live call for ``/sessions`` and the live page."""
    session = core.session
    return {
        "id": meta.call_id,
        "call_sid": core.call_sid,
        "stream_sid": core.stream_sid,
        "carrier": core.carrier.name,
        "state": core.state,
        "turn": core.turn(now),
        "profile": core.profile,
        "model": session.model if session else None,
        "carrier_format": _carrier_format(core),
        "session_format": session.audio_format if session else None,
        "started_at": meta.started_wall,
        "duration_s": round(now - core.started_at, 3),
        "frames_in": core.stats.frames_in,
        "frames_out": core.stats.frames_out,
        "barge_ins": core.stats.barge_ins,
        "turns": core.stats.turns,
        "tools_pending": core.tools_pending,
        "reconnects": core.stats.reconnects,
        "handovers": core.stats.handovers,
        "cost_usd": _cost_usd(core, now),
        "worker": meta.worker,
    }


def summary(core: CallCore, now: float) -> dict[str, Any]:
    """The fields of the one ``call_summary`` log line a finished call leaves."""
    stats = core.stats
    out: dict[str, Any] = {
        "reason": core.end_reason,
        "detail": core.end_detail,
        "state": core.state,
        "carrier": core.carrier.name,
        "profile": core.profile,
        "duration_s": round(now - core.started_at, 3),
        "frames_in": stats.frames_in,
        "frames_out": stats.frames_out,
        "turns": stats.turns,
        "barge_ins": stats.barge_ins,
        "barge_in_reaction_ms": [round(x * 1000, 2) for x in stats.barge_in_reactions],
        "dtmf": stats.dtmf,
        "tool_calls": stats.tool_calls,
        "reconnects": stats.reconnects,
        "handovers": stats.handovers,
        "audio_errors": stats.audio_errors,
        "protocol_errors": stats.protocol_errors,
        "model_errors": stats.model_errors,
        "response_latency_ms": [round(x * 1000) for x in stats.response_latencies],
    }
    if core.meter is not None:
        cost = core.meter.cost(now - core.started_at)
        out["cost_usd"] = None if cost.total_usd is None else round(cost.total_usd, 6)
        out["cost_per_minute_usd"] = None if cost.per_minute_usd is None else round(cost.per_minute_usd, 6)
    return out


def fill_record(
    record: CallRecord, core: CallCore, now: float, wall: float, *, final: bool, ended_wall: float | None = None
) -> CallRecord:
    """Bring ``record`` (the call's, kept between writes) up to date; ``final`` ends it."""
    params = core.parameters
    session = core.session
    record.call_sid = core.call_sid
    record.stream_sid = core.stream_sid
    record.from_number = params.get("from")
    record.to_number = params.get("to")
    record.profile = core.profile
    record.model = session.model if session else None
    record.carrier_format = _carrier_format(core)
    record.session_format = session.audio_format if session else None
    record.carrier = core.carrier.name
    record.turns = core.stats.turns
    record.barge_ins = core.stats.barge_ins
    record.transcript = list(core.transcript)
    record.parameters = dict(params)
    record.tool_calls = list(core.tool_log)
    record.mcp = list(core.mcp_log)
    record.reconnects = core.stats.reconnects
    record.handovers = core.stats.handovers
    record.session_events = list(core.session_events)
    for warning in core.warnings:
        if warning not in record.warnings:
            record.warnings.append(warning)
    duration = now - core.started_at
    if core.meter is not None:
        record.apply_cost(core.meter.cost(duration), core.meter.tokens())
    if final:
        record.end(core.end_reason or EndReason.BRIDGE_ERROR, ended_wall or wall, core.end_detail)
        record.duration_s = round(duration, 3)
    else:
        record.touch(wall)
    return record
