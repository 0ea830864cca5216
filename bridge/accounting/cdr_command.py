"""``bridge cdr``: read call records from the store and print them (the I/O half of cdr.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bridge.accounting.cdr import format_csv, format_jsonl, format_table, parse_time
from bridge.accounting.store import SqliteRecordStore
from bridge.config import Settings


def run_cdr(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.db) if args.db else settings.records.path
    if not path.exists():
        print(f"bridge cdr: no call records at {path}", file=sys.stderr)
        return 1
    now = time.time()
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        print(f"bridge cdr: {exc}", file=sys.stderr)
        return 2
    with SqliteRecordStore(path) as store:
        records = store.query(
            since=since, until=until, profile=args.profile, end_reason=args.end_reason, limit=args.limit
        )
    fmt = {"table": format_table, "csv": format_csv, "jsonl": format_jsonl}[args.format]
    text = fmt(records)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
