from __future__ import annotations

import dataclasses
import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.accounting.meter import UsageMeter
from bridge.accounting.pricing import PricingConfig
from bridge.accounting.records import CallRecord, CallStatus, EndReason
from bridge.accounting.store import SCHEMA_VERSION, RecordStore, SqliteRecordStore, StoreError

T0 = 1_790_000_000.0


def make(call_id: str, started_at: float = T0, **kw: object) -> CallRecord:
    fields: dict[str, object] = {"call_sid": f"CA{call_id}", "profile": "default", "model": "gpt-realtime",
                                 "worker": 1, **kw}
    return CallRecord(call_id=call_id, started_at=started_at, **fields)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "calls.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteRecordStore]:
    with SqliteRecordStore(db) as s:
        yield s


def test_satisfies_protocol(store: SqliteRecordStore) -> None:
    as_protocol: RecordStore = store
    assert as_protocol is store


def test_pragmas_and_schema(store: SqliteRecordStore, db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(calls)")}
        assert "calls_started_at" in indexes
    finally:
        conn.close()


def test_start_update_finish_get(store: SqliteRecordStore) -> None:
    rec = make("a", from_number="+15550001", to_number="+15550002", carrier_format="audio/x-mulaw",
               session_format="audio/pcmu")
    store.start(rec)
    got = store.get("a")
    assert got == rec
    assert got is not None and got.status is CallStatus.LIVE

    meter = UsageMeter("gpt-realtime", PricingConfig())
    meter.add_response_usage({"input_token_details": {"audio_tokens": 1000},
                              "output_token_details": {"audio_tokens": 500}})
    rec.turns = 2
    rec.barge_ins = 1
    rec.touch(T0 + 30)
    rec.apply_cost(meter.cost(rec.duration_s), meter.tokens())
    rec.transcript.append({"role": "caller", "text": "hello"})
    assert store.update(rec) is True
    got = store.get("a")
    assert got is not None
    assert (got.turns, got.barge_ins, got.duration_s, got.updated_at) == (2, 1, 30.0, T0 + 30)
    assert got.tokens["audio_in"] == 1000
    assert got.transcript == [{"role": "caller", "text": "hello"}]
    # 1000×32 + 500×64 = 64000 per 1M = $0.064, plus one started carrier minute.
    assert got.cost_model_usd == pytest.approx(0.064)
    assert got.cost_total_usd == pytest.approx(0.064 + 0.0085)

    rec.end(EndReason.CALLER_HANGUP, T0 + 75)
    store.finish(rec)
    got = store.get("a")
    assert got is not None
    assert got.status is CallStatus.ENDED and got.end_reason is EndReason.CALLER_HANGUP
    assert (got.ended_at, got.duration_s) == (T0 + 75, 75.0)

    # A late update (e.g. a ticker that fired after the finish) must not reopen the call.
    late = make("a", turns=99)
    assert store.update(late) is False
    store.start(late)
    got = store.get("a")
    assert got is not None and got.turns == 2 and got.status is CallStatus.ENDED
    assert store.get("missing") is None


def test_update_without_start_still_records(store: SqliteRecordStore) -> None:
    assert store.update(make("x")) is True
    assert store.get("x") is not None


def test_odd_transcript_values_do_not_lose_the_record(store: SqliteRecordStore) -> None:
    rec = make("odd", transcript=[{"role": "caller", "at": Path("/x"), "raw": b"\x00"}])
    store.start(rec)
    got = store.get("odd")
    assert got is not None and got.transcript[0]["at"] == "/x"


def test_a_lone_surrogate_in_an_id_does_not_lose_the_record(store: SqliteRecordStore) -> None:
    # Found by bench/fuzz_bench.py: a stream id sent as the JSON string "\\ud800" made every write
    # of the call's record raise UnicodeEncodeError (SQLite stores UTF-8), so the call had none.
    rec = make("lone", stream_sid="\ud800", from_number="+1\udfff555", to_number="+1555\u00e9")
    store.start(rec)
    store.finish(dataclasses.replace(rec, status=CallStatus.ENDED, end_reason=EndReason.CALLER_HANGUP, ended_at=T0 + 1))
    got = store.get("lone")
    assert got is not None and got.status is CallStatus.ENDED
    assert got.stream_sid == "\ufffd" and got.from_number == "+1\ufffd555"
    assert got.to_number == "+1555\u00e9"  # other non-ASCII text is kept as it came


def test_finish_without_end_reason_is_kept(store: SqliteRecordStore) -> None:
    rec = make("b")
    store.finish(rec)  # a buggy caller: live record passed to finish
    got = store.get("b")
    assert got is not None
    assert got.status is CallStatus.ENDED and got.end_reason is EndReason.BRIDGE_ERROR
    assert got.warnings
    assert rec.status is CallStatus.LIVE  # the caller's object is not mutated


def test_query_filters(store: SqliteRecordStore) -> None:
    for i in range(6):
        rec = make(f"c{i}", started_at=T0 + i * 100, profile="sales" if i % 2 else "support")
        store.start(rec)
        if i < 4:
            rec.end(EndReason.CALLER_HANGUP if i != 2 else EndReason.TIMEOUT, T0 + i * 100 + 50)
            store.finish(rec)

    def ids(records: list[CallRecord]) -> list[str]:
        return [r.call_id for r in records]

    assert ids(store.query()) == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert ids(store.query(since=T0 + 200)) == ["c2", "c3", "c4", "c5"]  # since is inclusive
    assert ids(store.query(until=T0 + 200)) == ["c0", "c1"]  # until is exclusive
    assert ids(store.query(since=T0 + 100, until=T0 + 400, profile="sales")) == ["c1", "c3"]
    assert ids(store.query(end_reason=EndReason.TIMEOUT)) == ["c2"]
    assert ids(store.query(end_reason="caller_hangup")) == ["c0", "c1", "c3"]
    assert ids(store.query(limit=2)) == ["c4", "c5"]  # the most recent, in time order
    assert store.query(limit=0) == []
    with pytest.raises(ValueError):
        store.query(end_reason="exploded")


def test_mark_lost(store: SqliteRecordStore) -> None:
    a = make("a", worker=1)
    a.touch(T0 + 40)
    b = make("b", worker=2)
    b.touch(T0 + 10)
    c = make("c", worker=1)
    c.touch(T0 + 500)  # a fresh call of the restarted worker 1
    done = make("d", worker=1)
    done.end(EndReason.CALLER_HANGUP, T0 + 5)
    for r in (a, b, c):
        store.start(r)
    store.finish(done)

    assert store.mark_lost(1, before=T0 + 100) == 1
    got = store.get("a")
    assert got is not None
    assert got.status is CallStatus.ENDED and got.end_reason is EndReason.WORKER_LOST
    assert (got.ended_at, got.duration_s) == (T0 + 40, 40.0)
    assert any("worker lost" in w for w in got.warnings)
    c_got = store.get("c")
    assert c_got is not None and c_got.status is CallStatus.LIVE
    d_got = store.get("d")
    assert d_got is not None and d_got.end_reason is EndReason.CALLER_HANGUP

    assert store.mark_lost() == 2  # all remaining live: b and c
    assert store.mark_lost() == 0
    assert [r.call_id for r in store.query(end_reason=EndReason.WORKER_LOST)] == ["a", "b", "c"]

    # The worker was only presumed dead: its real finish still wins.
    a.end(EndReason.OPERATOR, T0 + 60)
    store.finish(a)
    got = store.get("a")
    assert got is not None and got.end_reason is EndReason.OPERATOR


def test_second_connection_sees_writes(db: Path) -> None:
    with SqliteRecordStore(db) as one, SqliteRecordStore(db) as two:
        one.start(make("shared"))
        seen = two.get("shared")
        assert seen is not None and seen.call_sid == "CAshared"
        seen.end(EndReason.DRAIN, T0 + 3)
        two.finish(seen)
        back = one.get("shared")
        assert back is not None and back.end_reason is EndReason.DRAIN


def test_reopen_keeps_records(db: Path) -> None:
    with SqliteRecordStore(db) as s:
        s.start(make("keep"))
    with SqliteRecordStore(db) as s:
        got = s.get("keep")
        assert got is not None and got.profile == "default"


def test_closed_store_raises(db: Path) -> None:
    s = SqliteRecordStore(db)
    with pytest.raises(StoreError):
        s.get("x")
    s.open()
    s.close()
    with pytest.raises(StoreError):
        s.start(make("x"))


def test_refuses_newer_schema(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteRecordStore(db).open()


def test_damaged_row_still_reads(store: SqliteRecordStore, db: Path) -> None:
    store.start(make("bad"))
    conn = sqlite3.connect(db)
    conn.execute("UPDATE calls SET tokens = 'not json', end_reason = 'gremlins' WHERE call_id = 'bad'")
    conn.commit()
    conn.close()
    got = store.get("bad")
    assert got is not None
    assert got.tokens == {} and got.end_reason is None
    assert any("tokens" in w for w in got.warnings) and any("gremlins" in w for w in got.warnings)


def _writer(path: str, worker: int, n: int, barrier: Any) -> None:
    barrier.wait(30)  # open the new file all at once: the schema and WAL switch race
    with SqliteRecordStore(path) as s:
        for i in range(n):
            rec = make(f"w{worker}-{i}", started_at=T0 + i, worker=worker)
            s.start(rec)
            rec.touch(T0 + i + 1)
            s.update(rec)
            rec.end(EndReason.CALLER_HANGUP, T0 + i + 2)
            s.finish(rec)


def test_several_processes_share_a_new_file(db: Path) -> None:
    # Workers race to create the schema and then write concurrently; none may fail or lose rows.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(6)
    procs = [ctx.Process(target=_writer, args=(str(db), w, 40, barrier)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    with SqliteRecordStore(db) as s:
        records = s.query()
    assert len(records) == 240
    assert all(r.status is CallStatus.ENDED for r in records)



class _LockedThenFine:
    """Stands in for a connection whose WAL switch meets another process's lock twice."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def execute(self, sql: str) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise sqlite3.OperationalError("database is locked")
        return self

    def fetchone(self) -> tuple[str]:
        return ("wal",)


def test_wal_switch_retries_when_locked(db: Path) -> None:
    # When several workers open a new file together, SQLite can report "locked" for the
    # journal_mode switch at once, without waiting busy_timeout (seen with 12 processes);
    # open() must retry instead of failing the worker.
    store = SqliteRecordStore(db, busy_timeout_ms=200)
    conn = _LockedThenFine(failures=2)
    assert store._enable_wal(conn) == "wal"  # type: ignore[arg-type]
    assert conn.calls == 3
    # It gives up after about busy_timeout.
    with pytest.raises(sqlite3.OperationalError):
        store._enable_wal(_LockedThenFine(failures=1000))  # type: ignore[arg-type]


def test_a_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """Records written by the first release survive the upgrade and gain the new fields."""
    from bridge.accounting.store import _SCHEMA_V1

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO calls (call_id, call_sid, started_at, status, updated_at, end_reason, duration_s) "
        "VALUES ('old1', 'CA1', 100.0, 'ended', 160.0, 'caller_hangup', 60.0)"
    )
    conn.commit()
    conn.close()
    with SqliteRecordStore(path) as store:
        (record,) = store.query()
        assert (record.call_id, record.end_reason, record.duration_s) == ("old1", "caller_hangup", 60.0)
        assert (record.reconnects, record.tool_calls, record.carrier) == (0, [], None)
        fresh = CallRecord(call_id="new1", started_at=200.0, carrier="telnyx", tool_calls=[{"tool": "x"}])
        fresh.end(EndReason.AGENT_HANGUP, 230.0, "caller said goodbye")
        store.finish(fresh)
        got = store.get("new1")
        assert got is not None
        assert (got.carrier, got.end_detail, got.tool_calls) == ("telnyx", "caller said goodbye", [{"tool": "x"}])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
