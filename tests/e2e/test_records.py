"""Call records: written by real calls, kept across a restart, listed by `bridge cdr`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import trio

from bridge.accounting.store import SqliteRecordStore
from bridge.testing.caller import CallerOptions, Pause, Say, WaitForReply, run_call
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.stack import open_stack


def _two_turn_call(tmp_path: Path, db: Path) -> list[str]:
    sids: list[str] = []

    async def main() -> None:
        overrides = {"profiles": {"support": {"model": "gpt-realtime-mini"}}}
        async with open_stack(records=db, overrides=overrides, simulator=SimulatorOptions(speed=16.0)) as stack:
            for profile in ("default", "support"):
                script = [Say(), WaitForReply(8_000, 300), Pause(300), Say(), WaitForReply(8_000, 300)]
                with trio.fail_after(60):
                    result = await run_call(
                        CallerOptions(url=stack.media_url, realtime=False, params={"profile": profile}, script=script)
                    )
                assert result.ok
                sids.append(result.call_sid)
            await stack.wait_idle()

    trio.run(main)
    return sids


def test_records_survive_restart_and_cdr_lists_them(tmp_path: Path) -> None:
    db = tmp_path / "calls.sqlite"
    sids = _two_turn_call(tmp_path, db)
    # A fresh store on the same file (as after a restart) sees both finished calls.
    with SqliteRecordStore(db) as store:
        records = {r.call_sid: r for r in store.query()}
    assert set(records) == set(sids)
    default, support = records[sids[0]], records[sids[1]]
    assert default.end_reason == "caller_hangup" and default.status == "ended"
    assert default.turns == 2
    assert support.profile == "support" and support.model == "gpt-realtime-mini"
    for rec in (default, support):
        assert rec.tokens["audio_out"] > 0 and rec.tokens["audio_in"] > 0
        # The second answer re-bills the first turn: cached input appears.
        assert rec.tokens["cached_audio_in"] + rec.tokens["cached_text_in"] > 0
        assert rec.cost_total_usd is not None
        assert rec.cost_model_usd is not None and rec.cost_carrier_usd is not None
        assert abs(rec.cost_total_usd - (rec.cost_model_usd + rec.cost_carrier_usd)) < 1e-9
        assert rec.cost_per_minute_usd is not None and rec.cost_per_minute_usd > 0
    # gpt-realtime-mini is cheaper per token than gpt-realtime for the same conversation.
    assert support.cost_model_usd is not None and default.cost_model_usd is not None
    assert support.cost_model_usd < default.cost_model_usd

    def cdr(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "bridge", "cdr", "--db", str(db), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    rows = list(csv.DictReader(io.StringIO(cdr("--format", "csv"))))
    assert {r["call_sid"] for r in rows} == set(sids)
    assert all(r["end_reason"] == "caller_hangup" for r in rows)
    lines = [json.loads(line) for line in cdr("--format", "jsonl").splitlines() if line.strip()]
    assert {d["call_sid"] for d in lines} == set(sids)
    only_support = [json.loads(line) for line in cdr("--format", "jsonl", "--profile", "support").splitlines()]
    assert [d["call_sid"] for d in only_support] == [sids[1]]
    table = cdr()
    assert sids[0][:12] in table and "support" in table
    total = sum(r.cost_total_usd or 0 for r in records.values())
    assert f"{total:.4f}" in table  # the totals line
    assert cdr("--since", "1h", "--format", "jsonl").count("\n") == 2
    none = cdr("--until", "2000-01-01", "--format", "jsonl")
    assert none.strip() == ""


def test_cdr_without_database_fails_clearly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "cdr", "--db", str(tmp_path / "none.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "no call records" in proc.stderr
