"""Durable call records.

``RecordStore`` is the interface the call runner and the supervisor use; ``SqliteRecordStore``
is the single-machine implementation (a shared database can implement the same interface when
the service runs on several machines).

Every method is blocking and short (one small transaction): the trio layer calls them through
``trio.to_thread.run_sync``. Several worker processes write the same file, hence WAL (readers
never block the writer), ``busy_timeout`` (writers wait for each other instead of failing) and
``synchronous=NORMAL`` (in WAL mode a commit survives a process crash; only an OS crash or power
loss can lose the last commits, which is the right price for a per-call write).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from .records import JSON_FIELDS, SCALAR_FIELDS, CallRecord, CallStatus, EndReason

__all__ = ["SCHEMA_VERSION", "OutboxEvent", "OutboxRow", "RecordStore", "SqliteRecordStore", "StoreError"]

SCHEMA_VERSION = 2
_WAL_RETRY_MS = 20

_JSON_FIELDS = JSON_FIELDS
_COLUMNS: tuple[str, ...] = SCALAR_FIELDS + _JSON_FIELDS

# Separate statements (not one script) so the schema runs inside our own BEGIN IMMEDIATE:
# executescript() would commit first. _MIGRATIONS[n] takes a database from version n to n + 1.
_SCHEMA_V1: tuple[str, ...] = ("""
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    call_sid TEXT,
    stream_sid TEXT,
    from_number TEXT,
    to_number TEXT,
    profile TEXT,
    model TEXT,
    carrier_format TEXT,
    session_format TEXT,
    worker INTEGER,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration_s REAL NOT NULL DEFAULT 0,
    end_reason TEXT,
    status TEXT NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    barge_ins INTEGER NOT NULL DEFAULT 0,
    cost_model_usd REAL,
    cost_transcription_usd REAL,
    cost_carrier_usd REAL,
    cost_total_usd REAL,
    cost_per_minute_usd REAL,
    updated_at REAL NOT NULL,
    tokens TEXT NOT NULL DEFAULT '{}',
    warnings TEXT NOT NULL DEFAULT '[]',
    transcript TEXT NOT NULL DEFAULT '[]'
)""",
    "CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at)",
    # mark_lost looks only at live calls; a partial index keeps that cheap however many ended.
    "CREATE INDEX IF NOT EXISTS calls_live ON calls (worker) WHERE status = 'live'",
)
_SCHEMA_V2: tuple[str, ...] = (
    "ALTER TABLE calls ADD COLUMN end_detail TEXT",
    "ALTER TABLE calls ADD COLUMN carrier TEXT",
    "ALTER TABLE calls ADD COLUMN reconnects INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE calls ADD COLUMN handovers INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE calls ADD COLUMN parameters TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE calls ADD COLUMN tool_calls TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE calls ADD COLUMN mcp TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE calls ADD COLUMN session_events TEXT NOT NULL DEFAULT '[]'",
    # Call webhooks waiting to be delivered (an outbox): written in the same transaction as the
    # record change that caused them, delivered at least once by a sender, kept afterwards.
    """
CREATE TABLE IF NOT EXISTS outbox (
    event_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    type TEXT NOT NULL,
    call_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    PRIMARY KEY (event_id, endpoint)
)""",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE status = 'pending'",
)
_MIGRATIONS: tuple[tuple[str, ...], ...] = (_SCHEMA_V1, _SCHEMA_V2)
assert len(_MIGRATIONS) == SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One call webhook event for one endpoint, ready to send (built by accounting.webhooks)."""

    event_id: str
    endpoint: str
    type: str
    call_id: str
    body: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An event in the outbox and how its delivery is going."""

    event_id: str
    endpoint: str
    type: str
    call_id: str
    body: bytes
    created_at: float
    status: str  # pending | delivered | failed
    attempts: int
    next_attempt_at: float
    last_error: str | None
    delivered_at: float | None


_OUTBOX_COLUMNS = (
    "event_id, endpoint, type, call_id, body, created_at, status, attempts, next_attempt_at, last_error, delivered_at"
)


class StoreError(Exception):
    """The store cannot be used (for example: written by a newer version of the bridge)."""


class RecordStore(Protocol):
    """Where call records live. Implementations must be safe to use from several processes."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def start(self, record: CallRecord, events: Sequence[OutboxEvent] = ()) -> None:
        """Write the record of a call that has just started (idempotent: a retry is harmless),
        and queue ``events`` (call webhooks) in the same transaction."""

    def update(self, record: CallRecord) -> bool:
        """Refresh a live call's record. Returns False, writing nothing, when the stored record
        has already ended (finished, or marked lost): a late update must not bring it back."""

    def finish(self, record: CallRecord, events: Sequence[OutboxEvent] = ()) -> None:
        """Write the final record (always wins, also over a ``worker_lost`` mark) and queue
        ``events`` in the same transaction."""

    def mark_lost(
        self,
        worker: int | None = None,
        *,
        before: float | None = None,
        events_for: Callable[[CallRecord], Sequence[OutboxEvent]] | None = None,
    ) -> int:
        """End every live record (of ``worker`` only, if given; last updated before ``before``
        only, if given) with reason ``worker_lost`` at its last ``updated_at``, queueing the events
        ``events_for`` gives for each ended record in the same transaction. Returns the count.

        Worker numbers are reused after a restart: pass ``before`` = the time the old worker was
        seen dead, so the replacement's fresh calls are not caught."""

    def due(self, now: float, limit: int = 50) -> list[OutboxRow]:
        """Pending webhook events whose next attempt is due, oldest first."""

    def delivered(self, event_id: str, endpoint: str, now: float) -> None: ...

    def retry_later(self, event_id: str, endpoint: str, next_attempt_at: float, error: str) -> None: ...

    def give_up(self, event_id: str, endpoint: str, error: str) -> None: ...

    def outbox(self, statuses: Sequence[str] = ("pending", "failed"), limit: int | None = None) -> list[OutboxRow]:
        """Webhook events in these states, oldest first (``bridge webhooks``)."""

    def outbox_counts(self) -> dict[str, int]:
        """Number of webhook events by state: pending, delivered, failed."""

    def get(self, call_id: str) -> CallRecord | None: ...

    def query(self, since: float | None = None, until: float | None = None, profile: str | None = None,
              end_reason: EndReason | str | None = None, limit: int | None = None) -> list[CallRecord]:
        """Records with ``since <= started_at < until``, oldest first. With ``limit``, the most
        recent ``limit`` of them (still oldest first)."""


class SqliteRecordStore:
    """RecordStore on one SQLite file, shared by the worker processes of one machine.

    One connection per store object, used from whichever thread trio hands the call to; a lock
    serialises use of it within the process (SQLite's own locking does so between processes).
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None:
            return
        # isolation_level=None: no implicit transactions; each write below opens its own
        # BEGIN IMMEDIATE, so it takes the write lock up front and waits in busy_timeout rather
        # than failing on a read-to-write lock upgrade.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = self._enable_wal(conn)
            if mode != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL (journal_mode is {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        # WAL is a property of the file: once set, the pragma is a no-op. Switching a new file
        # needs an exclusive lock, and SQLite answers "database is locked" at once instead of
        # using busy_timeout when several workers open a new file together; so retry here,
        # for about as long as busy_timeout would have waited.
        attempts = max(1, self.busy_timeout_ms // _WAL_RETRY_MS)
        for attempt in range(attempts):
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(_WAL_RETRY_MS / 1000)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} is newer than this bridge "
                             f"({SCHEMA_VERSION}); upgrade the bridge")
        # Several workers may open a new file at once: take the write lock, then look again.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- writes ----------------------------------------------------------------------------

    def start(self, record: CallRecord, events: Sequence[OutboxEvent] = ()) -> None:
        # Upsert so a retried start (or an update that got there first) is harmless; it never
        # reopens a record that already ended.
        self._write(record, only_live=True, events=events)

    def update(self, record: CallRecord) -> bool:
        return self._write(record, only_live=True)

    def finish(self, record: CallRecord, events: Sequence[OutboxEvent] = ()) -> None:
        if record.status is not CallStatus.ENDED or record.end_reason is None:
            # Losing the record would be worse than a wrong-looking one: store it as ended and
            # say so, rather than raise from the call's finaliser.
            record = dataclasses.replace(
                record, status=CallStatus.ENDED,
                end_reason=record.end_reason or EndReason.BRIDGE_ERROR,
                ended_at=record.ended_at if record.ended_at is not None else record.updated_at,
                warnings=[*record.warnings, "finished without an end reason or status"])
        self._write(record, only_live=False, events=events)

    def _write(self, record: CallRecord, *, only_live: bool, events: Sequence[OutboxEvent] = ()) -> bool:
        row = _to_row(record)
        names = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        sets = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "call_id")
        where = " WHERE calls.status = 'live'" if only_live else ""
        sql = (f"INSERT INTO calls ({names}) VALUES ({marks}) "
               f"ON CONFLICT (call_id) DO UPDATE SET {sets}{where}")
        with self._lock:
            conn = self._connection()
            if not events:
                return conn.execute(sql, row).rowcount > 0  # one statement: atomic by itself
            with _transaction(conn):
                changed = conn.execute(sql, row).rowcount > 0
                _queue(conn, events)
            return changed

    def mark_lost(
        self,
        worker: int | None = None,
        *,
        before: float | None = None,
        events_for: Callable[[CallRecord], Sequence[OutboxEvent]] | None = None,
    ) -> int:
        where = ["status = 'live'"]
        args: list[Any] = []
        if worker is not None:
            where.append("worker = ?")
            args.append(worker)
        if before is not None:
            where.append("updated_at < ?")
            args.append(before)
        condition = " AND ".join(where)
        note = json.dumps("worker lost: the call ended at its last update, or later")
        # json_insert appends the note to the stored warnings (JSON functions are built into
        # SQLite since 3.38).
        sql = ("UPDATE calls SET status = 'ended', end_reason = ?, ended_at = updated_at, "
               "duration_s = MAX(0, updated_at - started_at), "
               "warnings = json_insert(CASE WHEN json_valid(warnings) THEN warnings ELSE '[]' END, "
               "'$[#]', json(?)) "
               "WHERE call_id = ?")
        with self._lock:
            conn = self._connection()
            with _transaction(conn):
                lost = [r[0] for r in conn.execute(f"SELECT call_id FROM calls WHERE {condition}", args)]
                for call_id in lost:
                    conn.execute(sql, [EndReason.WORKER_LOST.value, note, call_id])
                    if events_for is not None:
                        found = conn.execute(
                            f"SELECT {', '.join(_COLUMNS)} FROM calls WHERE call_id = ?", (call_id,)
                        ).fetchone()
                        _queue(conn, events_for(_from_row(found)))
            return len(lost)

    # -- the webhook outbox --------------------------------------------------------------------

    def due(self, now: float, limit: int = 50) -> list[OutboxRow]:
        sql = (f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? "
               "ORDER BY next_attempt_at, created_at LIMIT ?")
        with self._lock:
            return [OutboxRow(*r) for r in self._connection().execute(sql, (now, limit))]

    def delivered(self, event_id: str, endpoint: str, now: float) -> None:
        self._outbox_update("status = 'delivered', attempts = attempts + 1, delivered_at = ?, last_error = NULL",
                            [now], event_id, endpoint)

    def retry_later(self, event_id: str, endpoint: str, next_attempt_at: float, error: str) -> None:
        self._outbox_update("attempts = attempts + 1, next_attempt_at = ?, last_error = ?",
                            [next_attempt_at, error[:500]], event_id, endpoint)

    def give_up(self, event_id: str, endpoint: str, error: str) -> None:
        self._outbox_update("status = 'failed', attempts = attempts + 1, last_error = ?",
                            [error[:500]], event_id, endpoint)

    def _outbox_update(self, sets: str, args: list[Any], event_id: str, endpoint: str) -> None:
        with self._lock:
            self._connection().execute(
                f"UPDATE outbox SET {sets} WHERE event_id = ? AND endpoint = ? AND status = 'pending'",
                [*args, event_id, endpoint])

    def outbox(self, statuses: Sequence[str] = ("pending", "failed"), limit: int | None = None) -> list[OutboxRow]:
        marks = ", ".join("?" for _ in statuses)
        sql = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status IN ({marks}) ORDER BY created_at, event_id"
        args: list[Any] = list(statuses)
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [OutboxRow(*r) for r in self._connection().execute(sql, args)]

    def outbox_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("pending", "delivered", "failed"), 0)
        with self._lock:
            for status, count in self._connection().execute("SELECT status, count(*) FROM outbox GROUP BY status"):
                counts[status] = count
        return counts

    # -- reads -----------------------------------------------------------------------------

    def get(self, call_id: str) -> CallRecord | None:
        with self._lock:
            row = self._connection().execute(
                f"SELECT {', '.join(_COLUMNS)} FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return None if row is None else _from_row(row)

    def query(self, since: float | None = None, until: float | None = None, profile: str | None = None,
              end_reason: EndReason | str | None = None, limit: int | None = None) -> list[CallRecord]:
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        if until is not None:
            where.append("started_at < ?")
            args.append(until)
        if profile is not None:
            where.append("profile = ?")
            args.append(profile)
        if end_reason is not None:
            where.append("end_reason = ?")
            args.append(EndReason(end_reason).value)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        # Newest first so LIMIT keeps the most recent calls; reversed below to read in order.
        sql += " ORDER BY started_at DESC, call_id DESC"
        if limit is not None:
            if limit < 0:
                raise ValueError("limit must not be negative")
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._connection().execute(sql, args).fetchall()
        return [_from_row(r) for r in reversed(rows)]

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the record store is not open")
        return self._conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _queue(conn: sqlite3.Connection, events: Iterable[OutboxEvent]) -> None:
    # OR IGNORE: an event id is queued once per endpoint, however often its write is retried.
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (event_id, endpoint, type, call_id, body, created_at, status, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
        [(e.event_id, e.endpoint, e.type, e.call_id, e.body, e.created_at, e.created_at) for e in events])


def _to_row(record: CallRecord) -> list[Any]:
    data = record.to_dict()
    # default=str: an odd value in a transcript entry is stored as text rather than costing
    # the call its record.
    return [json.dumps(data[c], separators=(",", ":"), default=str) if c in _JSON_FIELDS else _storable(data[c])
            for c in _COLUMNS]


def _storable(value: Any) -> Any:
    """Text SQLite can take. It stores text as UTF-8, and a lone surrogate has no UTF-8 form: JSON
    can still carry one (``"\\ud800"`` is valid JSON, https://www.rfc-editor.org/rfc/rfc8259#section-8.2),
    so a carrier's stream or call id could hold one and the write would raise UnicodeEncodeError,
    losing the record. Such a character is stored as U+FFFD. (The JSON columns are ASCII already.)"""
    if isinstance(value, str) and not value.isascii():
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    return value


def _from_row(row: tuple[Any, ...]) -> CallRecord:
    """Build a record from a row. A damaged row still reads (with a warning): one bad record
    must not hide all the others from ``bridge cdr``."""
    data = dict(zip(_COLUMNS, row, strict=True))
    problems: list[str] = []
    defaults: dict[str, Any] = {name: {} if name in ("tokens", "parameters") else [] for name in _JSON_FIELDS}
    for name in _JSON_FIELDS:
        try:
            value = json.loads(data[name]) if data[name] is not None else defaults[name]
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, type(defaults[name])):
            problems.append(f"stored {name} unreadable")
            value = defaults[name]
        data[name] = value
    try:
        data["end_reason"] = None if data["end_reason"] is None else EndReason(data["end_reason"])
    except ValueError:
        problems.append(f"unknown end reason {data['end_reason']!r}")
        data["end_reason"] = None
    try:
        data["status"] = CallStatus(data["status"])
    except ValueError:
        problems.append(f"unknown status {data['status']!r}")
        data["status"] = CallStatus.ENDED
    record = CallRecord.from_dict(data)
    record.warnings.extend(problems)
    return record
