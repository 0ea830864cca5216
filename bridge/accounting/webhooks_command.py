"""``bridge webhooks``: the call webhooks still pending and the ones that failed (the outbox)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bridge.accounting.store import OutboxRow, SqliteRecordStore
from bridge.accounting.webhooks import iso
from bridge.config import Settings


def _row(row: OutboxRow) -> dict[str, object]:
    return {
        "event_id": row.event_id,
        "type": row.type,
        "call_id": row.call_id,
        "endpoint": row.endpoint,
        "status": row.status,
        "attempts": row.attempts,
        "created_at": iso(row.created_at),
        "next_attempt_at": iso(row.next_attempt_at) if row.status == "pending" else None,
        "last_error": row.last_error,
    }


def run_webhooks(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.db) if args.db else settings.records.path
    if not path.exists():
        print(f"bridge webhooks: no call records at {path}", file=sys.stderr)
        return 1
    statuses = ("pending", "failed") if args.status == "all" else (args.status,)
    with SqliteRecordStore(path) as store:
        rows = store.outbox(statuses, limit=args.limit)
        counts = store.outbox_counts()
    if args.json:
        print(json.dumps({"counts": counts, "events": [_row(r) for r in rows]}, indent=2))
        return 0
    print(f"pending {counts['pending']}, failed {counts['failed']}, delivered {counts['delivered']}")
    if not rows:
        return 0
    header = f"{'status':<8} {'attempts':>8}  {'created (UTC)':<24} {'type':<13} {'event id':<38} endpoint / last error"
    print(header)
    for r in rows:
        print(
            f"{r.status:<8} {r.attempts:>8}  {iso(r.created_at):<24} {r.type:<13} {r.event_id:<38} {r.endpoint}"
            + (f"\n{'':>95}{r.last_error}" if r.last_error else "")
        )
    return 0
