"""``bridge sessions``: read the admin port's ``/sessions`` and print a table."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

from bridge.config import Secrets, Settings

COLUMNS = (
    ("id", 16),
    ("call_sid", 36),
    ("state", 10),
    ("turn", 18),
    ("profile", 12),
    ("model", 18),
    ("formats", 22),
    ("duration", 9),
    ("in/out", 13),
    ("barge", 5),
    ("cost", 9),
    ("worker", 6),
)


def fetch_sessions(url: str, token: str | None, timeout: float = 5.0) -> list[dict[str, Any]]:
    req = urllib.request.Request(url.rstrip("/") + "/sessions")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        data = json.loads(resp.read())
    sessions = data.get("sessions", [])
    return sessions if isinstance(sessions, list) else []


def _cell(s: dict[str, Any], name: str) -> str:
    if name == "formats":
        return f"{s.get('carrier_format') or '?'}→{s.get('session_format') or '?'}"
    if name == "duration":
        return f"{float(s.get('duration_s') or 0):.1f}s"
    if name == "in/out":
        return f"{s.get('frames_in', 0)}/{s.get('frames_out', 0)}"
    if name == "barge":
        return str(s.get("barge_ins", 0))
    if name == "cost":
        cost = s.get("cost_usd")
        return "?" if cost is None else f"${cost:.4f}"
    value = s.get(name)
    return "" if value is None else str(value)


def format_sessions(sessions: list[dict[str, Any]]) -> str:
    lines = ["  ".join(name.ljust(width) for name, width in COLUMNS)]
    for s in sessions:
        lines.append("  ".join(_cell(s, name)[:width].ljust(width) for name, width in COLUMNS))
    total = sum(float(s.get("cost_usd") or 0) for s in sessions)
    lines.append(f"{len(sessions)} live call(s), ${total:.4f} so far")
    return "\n".join(lines)


def print_sessions(settings: Settings, secrets: Secrets, *, url: str | None, as_json: bool) -> int:
    base = url or f"http://{settings.admin.host}:{settings.admin.port}"
    token = secrets.admin_token.get_secret_value() if secrets.admin_token else None
    try:
        sessions = fetch_sessions(base, token)
    except urllib.error.HTTPError as exc:
        print(f"bridge sessions: {base}/sessions answered {exc.code} {exc.reason}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"bridge sessions: cannot read {base}/sessions: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"sessions": sessions}, indent=2) if as_json else format_sessions(sessions))
    return 0
