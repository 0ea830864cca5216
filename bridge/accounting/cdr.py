"""Formatting for ``bridge cdr``: call records as a table, CSV or JSON lines, and their totals.

Pure: times are formatted in UTC from the records' epoch seconds; ``parse_time`` takes ``now``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .meter import TOKEN_KINDS
from .records import SCALAR_FIELDS, CallRecord, CallStatus

__all__ = ["CSV_COLUMNS", "format_csv", "format_jsonl", "format_table", "iso_utc", "parse_time", "totals"]

# The CSV has every scalar field, then one column per token kind, so a spreadsheet can see where
# the money goes without parsing JSON.
CSV_COLUMNS: tuple[str, ...] = SCALAR_FIELDS + tuple(f"tokens_{k}" for k in TOKEN_KINDS)


def totals(records: Sequence[CallRecord]) -> dict[str, Any]:
    """Sums over ``records``.

    ``cost_usd`` adds the calls whose cost is known; ``cost_per_minute_usd`` divides it by the
    minutes of those same calls (so a call without a price does not make the rest look cheaper)
    and is None when there are no such minutes. ``unknown_cost_calls`` counts the others.
    Live calls count with their duration and cost so far.
    """
    minutes = 0.0
    known_minutes = 0.0
    cost = 0.0
    parts = {"model_usd": 0.0, "transcription_usd": 0.0, "carrier_usd": 0.0}
    tokens = dict.fromkeys(TOKEN_KINDS, 0)
    unknown = 0
    live = 0
    for r in records:
        m = max(0.0, r.duration_s) / 60.0
        minutes += m
        if r.status is CallStatus.LIVE:
            live += 1
        if r.cost_total_usd is None:
            unknown += 1
        else:
            cost += r.cost_total_usd
            known_minutes += m
        for key, value in (("model_usd", r.cost_model_usd),
                           ("transcription_usd", r.cost_transcription_usd),
                           ("carrier_usd", r.cost_carrier_usd)):
            if value is not None:
                parts[key] += value
        for kind, n in r.tokens.items():
            tokens[kind] = tokens.get(kind, 0) + n
    return {
        "calls": len(records),
        "live_calls": live,
        "minutes": minutes,
        "cost_usd": cost,
        "cost_per_minute_usd": cost / known_minutes if known_minutes > 0 else None,
        "unknown_cost_calls": unknown,
        **parts,
        "tokens": tokens,
    }


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _usd(value: float | None) -> str:
    # "?" rather than "$0.0000": an unknown cost must not read as a free call.
    return "?" if value is None else f"${value:.4f}"


_TABLE_HEADER = ("started (UTC)", "call sid", "profile", "model", "duration", "end reason", "turns",
                 "barge-ins", "cost", "cost/min")
_RIGHT_ALIGNED = {4, 6, 7, 8, 9}


def format_table(records: Sequence[CallRecord]) -> str:
    """Aligned columns, one call a line, then a totals line."""
    rows: list[tuple[str, ...]] = [_TABLE_HEADER]
    for r in records:
        reason = "live" if r.status is CallStatus.LIVE else (r.end_reason.value if r.end_reason else "?")
        rows.append((_when(r.started_at), r.call_sid or "-", r.profile or "-", r.model or "-",
                     _duration(r.duration_s), reason, str(r.turns), str(r.barge_ins),
                     _usd(r.cost_total_usd), _usd(r.cost_per_minute_usd)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_HEADER))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i in _RIGHT_ALIGNED else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    t = totals(records)
    summary = (f"{t['calls']} calls, {t['minutes']:.2f} min, total {_usd(t['cost_usd'])}, "
               f"average {_usd(t['cost_per_minute_usd'])}/min")
    if t["unknown_cost_calls"]:
        summary += f" ({t['unknown_cost_calls']} calls with unknown cost not included)"
    if t["live_calls"]:
        summary += f" ({t['live_calls']} still live, counted so far)"
    lines.append(summary)
    return "\n".join(lines) + "\n"


# Columns written in a form a spreadsheet and a person both read right: times as ISO-8601 UTC
# with milliseconds, money to the micro-dollar (the per-token prices' precision), durations to
# the millisecond; never a float's noise such as 0.011491999999999999.
_TIME_COLUMNS = frozenset({"started_at", "ended_at", "updated_at"})
_MONEY_COLUMNS = frozenset(c for c in SCALAR_FIELDS if c.startswith("cost_"))


def iso_utc(ts: float) -> str:
    """``2026-11-18T11:06:40.000Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _csv_cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if column in _TIME_COLUMNS:
        return iso_utc(value)
    if column in _MONEY_COLUMNS:
        return f"{value:.6f}"
    if column == "duration_s":
        return f"{value:.3f}"
    return value


def format_csv(records: Sequence[CallRecord]) -> str:
    """A header row, then one row per call: every scalar field and the token counts. Unknown
    (None) values are empty cells."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        data = r.to_dict()
        row: list[Any] = [_csv_cell(c, data[c]) for c in SCALAR_FIELDS]
        row += [r.tokens.get(k, 0) for k in TOKEN_KINDS]
        writer.writerow(row)
    return buf.getvalue()


def format_jsonl(records: Sequence[CallRecord]) -> str:
    """One JSON object per line, the whole record (tokens, warnings, transcript included)."""
    return "".join(json.dumps(r.to_dict(), separators=(",", ":")) + "\n" for r in records)


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(s: str, now: float | None = None) -> float:
    """Epoch seconds from ``s``: an ISO date ("2026-11-21", midnight UTC), an ISO datetime
    ("2026-11-21T10:00:00Z", "2026-11-21 10:00", "...+02:00"; without an offset it is UTC), or a
    time ago ("45s", "30m", "2h", "7d", "1w"), which needs ``now``. Raises ValueError otherwise."""
    text = s.strip()
    match = _RELATIVE.match(text)
    if match:
        if now is None:
            raise ValueError(f"relative time {s!r} needs the current time")
        amount = float(match.group(1)) * _UNIT_S[match.group(2).lower()]
        return now - amount
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {s!r} (use 2026-11-21, 2026-11-21T10:00:00Z, or 2h, 30m, 7d)") \
            from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    result = parsed.timestamp()
    if not math.isfinite(result):
        raise ValueError(f"not a time: {s!r}")
    return result
