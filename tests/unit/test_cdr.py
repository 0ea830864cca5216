from __future__ import annotations

import csv
import io
import json

import pytest

from bridge.accounting.cdr import CSV_COLUMNS, format_csv, format_jsonl, format_table, parse_time, totals
from bridge.accounting.records import SCALAR_FIELDS, CallRecord, CallStatus, EndReason

T0 = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC


def records() -> list[CallRecord]:
    a = CallRecord(call_id="a", started_at=T0, call_sid="CA111", profile="sales", model="gpt-realtime",
                   turns=4, barge_ins=1, tokens={"audio_in": 600, "audio_out": 1200},
                   cost_model_usd=0.09, cost_transcription_usd=0.0, cost_carrier_usd=0.017,
                   cost_total_usd=0.107, cost_per_minute_usd=0.107 / 1.5)
    a.end(EndReason.CALLER_HANGUP, T0 + 90)
    b = CallRecord(call_id="b", started_at=T0 + 3600, call_sid="CA222", profile="support",
                   model="gpt-realtime-mini", turns=10, tokens={"audio_in": 100},
                   cost_model_usd=0.2, cost_transcription_usd=0.01, cost_carrier_usd=0.0255,
                   cost_total_usd=0.2355, cost_per_minute_usd=0.2355 / 2.5)
    b.end(EndReason.TIMEOUT, T0 + 3600 + 150)
    # Unknown model: its cost is unknown and must not count as free.
    c = CallRecord(call_id="c", started_at=T0 + 7200, call_sid="CA333", profile="sales", model="mystery",
                   cost_carrier_usd=0.0085, warnings=["cost: no price for model 'mystery'"])
    c.touch(T0 + 7200 + 60)  # still live, one minute so far
    return [a, b, c]


def test_totals() -> None:
    t = totals(records())
    assert t["calls"] == 3 and t["live_calls"] == 1 and t["unknown_cost_calls"] == 1
    assert t["minutes"] == pytest.approx(1.5 + 2.5 + 1.0)
    assert t["cost_usd"] == pytest.approx(0.107 + 0.2355)
    # Average over the minutes of calls with a known cost only: 0.3425 / 4.0.
    assert t["cost_per_minute_usd"] == pytest.approx(0.3425 / 4.0)
    assert t["carrier_usd"] == pytest.approx(0.017 + 0.0255 + 0.0085)
    assert t["model_usd"] == pytest.approx(0.29)
    assert t["tokens"]["audio_in"] == 700 and t["tokens"]["audio_out"] == 1200
    empty = totals([])
    assert empty["calls"] == 0 and empty["cost_per_minute_usd"] is None


def test_table() -> None:
    out = format_table(records())
    lines = out.splitlines()
    assert len(lines) == 5  # header, 3 calls, totals
    header = lines[0]
    for title in ("started (UTC)", "call sid", "profile", "model", "duration", "end reason", "turns",
                  "barge-ins", "cost", "cost/min"):
        assert title in header
    # Columns are aligned: every call sid starts where the header's column does.
    col = header.index("call sid")
    assert [line[col:col + 5] for line in lines[1:4]] == ["CA111", "CA222", "CA333"]
    assert lines[1].startswith("2026-11-18 11:06:40")
    assert "1:30" in lines[1] and "caller_hangup" in lines[1] and "$0.1070" in lines[1]
    assert "2:30" in lines[2] and "timeout" in lines[2]
    assert "live" in lines[3] and "?" in lines[3] and "$0.0000" not in lines[3]
    assert lines[4].startswith("3 calls, 5.00 min, total $0.3425, average $0.0856/min")
    assert "1 calls with unknown cost" in lines[4] and "1 still live" in lines[4]


def test_csv_round_trip() -> None:
    recs = records()
    rows = list(csv.DictReader(io.StringIO(format_csv(recs))))
    assert len(rows) == 3
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert set(SCALAR_FIELDS) <= set(CSV_COLUMNS)
    assert rows[0]["call_sid"] == "CA111" and rows[0]["end_reason"] == "caller_hangup"
    assert float(rows[0]["cost_total_usd"]) == recs[0].cost_total_usd
    assert float(rows[0]["duration_s"]) == 90.0
    assert rows[0]["started_at"] == "2026-11-18T11:06:40.000Z" and rows[0]["ended_at"] == "2026-11-18T11:08:10.000Z"
    assert rows[2]["ended_at"] == ""
    assert int(rows[0]["tokens_audio_out"]) == 1200 and rows[1]["tokens_audio_out"] == "0"
    assert rows[2]["status"] == "live" and rows[2]["cost_total_usd"] == "" and rows[2]["end_reason"] == ""
    total = sum(float(r["cost_total_usd"]) for r in rows if r["cost_total_usd"])
    assert total == pytest.approx(totals(recs)["cost_usd"])


def test_csv_times_are_iso_utc_and_money_has_no_float_noise() -> None:
    rec = CallRecord(call_id="n", started_at=T0 + 0.1234, cost_model_usd=0.011491999999999999,
                     cost_transcription_usd=1e-7, cost_carrier_usd=0.0085, cost_total_usd=0.1 + 0.2,
                     cost_per_minute_usd=2 / 3)
    rec.end(EndReason.AGENT_HANGUP, T0 + 61.98765)
    (row,) = csv.DictReader(io.StringIO(format_csv([rec])))
    assert row["started_at"] == "2026-11-18T11:06:40.123Z"
    assert row["ended_at"] == "2026-11-18T11:07:41.987Z"
    assert row["updated_at"] == row["ended_at"]
    assert row["cost_model_usd"] == "0.011492"
    assert row["cost_transcription_usd"] == "0.000000"
    assert row["cost_carrier_usd"] == "0.008500"
    assert row["cost_total_usd"] == "0.300000"
    assert row["cost_per_minute_usd"] == "0.666667"
    assert row["duration_s"] == "61.864"
    assert "999999" not in format_csv([rec])


def test_csv_quotes_awkward_values() -> None:
    rec = CallRecord(call_id="q", started_at=T0, profile='a,"b"\nc')
    rows = list(csv.DictReader(io.StringIO(format_csv([rec]))))
    assert rows[0]["profile"] == 'a,"b"\nc'


def test_jsonl() -> None:
    recs = records()
    lines = format_jsonl(recs).splitlines()
    assert len(lines) == 3
    back = [CallRecord.from_dict(json.loads(line)) for line in lines]
    assert back == recs
    assert back[2].status is CallStatus.LIVE
    assert format_jsonl([]) == ""


NOW = 1_795_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21", 1_795_219_200.0),
        ("2026-11-21T10:00:00Z", 1_795_219_200.0 + 36_000),
        ("2026-11-21T10:00:00", 1_795_219_200.0 + 36_000),  # no offset: UTC
        ("2026-11-21 12:00:00+02:00", 1_795_219_200.0 + 36_000),
        ("2h", NOW - 7200),
        ("30m", NOW - 1800),
        ("7d", NOW - 7 * 86400),
        (" 90s ", NOW - 90),
        ("1.5h", NOW - 5400),
        ("1w", NOW - 7 * 86400),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2h30", "-2h", "2026-13-01", "5y"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text, now=NOW)


def test_relative_time_needs_now() -> None:
    with pytest.raises(ValueError, match="current time"):
        parse_time("2h")
    assert parse_time("2026-11-21") == 1_795_219_200.0
