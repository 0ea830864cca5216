"""The call record (CDR): one per call, written when the call starts, refreshed while it runs and
finalised when it ends, so a call whose worker dies still leaves a record (see store.mark_lost).

Pure data; times are epoch seconds passed in by the caller.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.vocabulary import EndReason

from .meter import CostBreakdown

__all__ = ["JSON_FIELDS", "SCALAR_FIELDS", "CallRecord", "CallStatus", "EndReason"]

# Prefix of the warnings that come from the cost breakdown; apply_cost replaces exactly these,
# so a refreshed cost does not pile up stale copies while other warnings are kept.
_COST_WARNING = "cost: "


class CallStatus(enum.StrEnum):
    LIVE = "live"
    ENDED = "ended"


@dataclass(kw_only=True, slots=True)
class CallRecord:
    """One call. Costs are None while unknown (no price for the model), never a made-up zero."""

    call_id: str
    started_at: float
    call_sid: str | None = None
    stream_sid: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    profile: str | None = None
    model: str | None = None
    carrier_format: str | None = None
    session_format: str | None = None
    worker: int | None = None
    ended_at: float | None = None
    duration_s: float = 0.0
    end_reason: EndReason | None = None
    end_detail: str | None = None  # the agent's reason to hang up, the transfer target, what failed
    status: CallStatus = CallStatus.LIVE
    carrier: str | None = None
    turns: int = 0
    barge_ins: int = 0
    reconnects: int = 0  # model sessions replaced after the socket was lost
    handovers: int = 0  # model sessions replaced before they aged out
    tokens: dict[str, int] = field(default_factory=dict)
    cost_model_usd: float | None = None
    cost_transcription_usd: float | None = None
    cost_carrier_usd: float | None = None
    cost_total_usd: float | None = None
    cost_per_minute_usd: float | None = None
    warnings: list[str] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)  # the stream's custom parameters
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # name, outcome, duration (+ arguments)
    mcp: list[dict[str, Any]] = field(default_factory=list)  # MCP listings and calls the API made
    session_events: list[dict[str, Any]] = field(default_factory=list)  # reconnects and handovers
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.updated_at:
            self.updated_at = self.started_at

    def touch(self, now: float) -> None:
        """Note that the call was seen alive at ``now`` (mark_lost ends a lost call here)."""
        self.updated_at = now
        if self.status is CallStatus.LIVE:
            self.duration_s = max(0.0, now - self.started_at)

    def end(self, reason: EndReason, ended_at: float, detail: str | None = None) -> None:
        self.end_reason = EndReason(reason)
        self.end_detail = detail or None
        self.status = CallStatus.ENDED
        self.ended_at = ended_at
        self.duration_s = max(0.0, ended_at - self.started_at)
        self.updated_at = ended_at

    def apply_cost(self, cost: CostBreakdown, tokens: Mapping[str, int]) -> None:
        """Copy a meter's read-outs into the record."""
        self.tokens = dict(tokens)
        self.cost_model_usd = cost.model_usd
        self.cost_transcription_usd = cost.transcription_usd
        self.cost_carrier_usd = cost.carrier_usd
        self.cost_total_usd = cost.total_usd
        self.cost_per_minute_usd = cost.per_minute_usd
        kept = [w for w in self.warnings if not w.startswith(_COST_WARNING)]
        self.warnings = kept + [_COST_WARNING + w for w in cost.warnings]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: enums become their string values."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["end_reason"] = None if self.end_reason is None else self.end_reason.value
        out["status"] = self.status.value
        for name in JSON_FIELDS:
            value = getattr(self, name)
            out[name] = dict(value) if isinstance(value, dict) else [_copy(v) for v in value]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallRecord:
        """Inverse of to_dict. Unknown keys are ignored (a newer writer may add fields)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if kwargs.get("end_reason") is not None:
            kwargs["end_reason"] = EndReason(kwargs["end_reason"])
        if "status" in kwargs:
            kwargs["status"] = CallStatus(kwargs["status"])
        return cls(**kwargs)


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


#: Fields holding a list or a dict (stored as JSON text).
JSON_FIELDS: tuple[str, ...] = (
    "tokens",
    "warnings",
    "transcript",
    "parameters",
    "tool_calls",
    "mcp",
    "session_events",
)
# Fields with one value each (no lists or dicts): the columns of the CSV export and of the store.
SCALAR_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CallRecord) if f.name not in JSON_FIELDS)
