"""Call webhook events: what the business's systems are told about every call. Pure.

Each event has one id, the same on every delivery attempt, so a receiver can deduplicate; the
body is built once, when the record change that caused it is written (in the same transaction,
see :mod:`bridge.accounting.store`), and sent byte for byte on every attempt::

    {"id": "evt_<call id>_ended", "type": "call.ended", "created_at": "2026-11-22T10:00:00Z",
     "data": {<the call record>}}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .records import CallRecord
from .store import OutboxEvent

if TYPE_CHECKING:  # config imports this package (pricing): types only, no import cycle
    from bridge.config import WebhookEndpoint, WebhookEvent

_TIME_FIELDS = ("started_at", "ended_at", "updated_at")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_data(record: CallRecord) -> dict[str, Any]:
    """The record as receivers get it: times in ISO-8601 UTC, everything else as stored."""
    data = record.to_dict()
    for name in _TIME_FIELDS:
        if data.get(name) is not None:
            data[name] = iso(data[name])
    return data


def event_id(call_id: str, kind: WebhookEvent) -> str:
    return f"evt_{call_id}_{kind.removeprefix('call.')}"


def call_events(
    record: CallRecord, kind: WebhookEvent, endpoints: Sequence[WebhookEndpoint], now: float
) -> list[OutboxEvent]:
    """The ``kind`` event of ``record`` for every endpoint that asked for it."""
    wanted = [e.url for e in endpoints if kind in e.events]
    if not wanted:
        return []
    ident = event_id(record.call_id, kind)
    payload = {"id": ident, "type": kind, "created_at": iso(now), "data": record_data(record)}
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return [OutboxEvent(ident, url, kind, record.call_id, body, now) for url in wanted]


def retry_delay(attempts: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff: the wait before the next attempt after ``attempts`` failed ones."""
    return float(min(max_s, initial_s * 2.0 ** max(0, attempts - 1)))
