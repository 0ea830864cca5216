"""Cost accounting: price tables, the per-call usage meter, call records and their store.

Everything here except ``store`` is pure (no trio, no clock reads); ``store`` does blocking
SQLite I/O meant to run on a worker thread.
"""

from .cdr import format_csv, format_jsonl, format_table, parse_time, totals
from .meter import TOKEN_KINDS, CostBreakdown, UsageMeter
from .pricing import ModelPrice, PricingConfig, TranscriptionPrice, resolve_model
from .records import CallRecord, CallStatus, EndReason
from .store import RecordStore, SqliteRecordStore, StoreError

__all__ = [
    "TOKEN_KINDS",
    "CallRecord",
    "CallStatus",
    "CostBreakdown",
    "EndReason",
    "ModelPrice",
    "PricingConfig",
    "RecordStore",
    "SqliteRecordStore",
    "StoreError",
    "TranscriptionPrice",
    "UsageMeter",
    "format_csv",
    "format_jsonl",
    "format_table",
    "parse_time",
    "resolve_model",
    "totals",
]
