"""The README's examples work: the tool endpoint's signature check accepts what bridge signs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from bridge import signing

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "readme-example-secret-0123456789"


def tool_endpoint_example(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (example,) = [b for b in blocks if b.startswith("# tool_server.py")]
    monkeypatch.setenv("BRIDGE_TOOLS_SECRET", SECRET)
    namespace: dict[str, Any] = {"__name__": "readme_example"}  # not __main__: do not serve
    exec(compile(example, "README.md", "exec"), namespace)
    return namespace


def test_the_readme_tool_endpoint_accepts_bridge_signatures_and_refuses_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verified = tool_endpoint_example(monkeypatch)["verified"]
    body = b'{"tool":"order_status","arguments":{"order_id":"A1234"}}'
    now = int(time.time())
    headers = dict(signing.headers(SECRET, now, body))
    assert verified(headers, body)
    assert not verified(headers, body + b" ")  # tampered
    assert not verified(dict(signing.headers("another-secret", now, body)), body)  # forged
    assert not verified(dict(signing.headers(SECRET, now - 3600, body)), body)  # replayed
    assert not verified({}, body)  # unsigned
