"""Shared setup of the end-to-end tests.

Signature checking is on by default (``twilio.validate_signature = true``), and the in-process
stack (:mod:`bridge.testing.stack`) builds its settings from the defaults while its simulated
callers do not sign. The stack's callers are on loopback, where an unsigned call is allowed; until
the stack turns checking off in its own defaults, this turns it off for every stack a test opens,
unless the test passes its own ``twilio`` settings (the signature tests do).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.testing import stack


@pytest.fixture(autouse=True)
def _unsigned_loopback_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = stack.demo_settings

    def demo_settings(sim_port: int, overrides: dict[str, Any] | None = None, records: Path | None = None) -> Settings:
        return original(sim_port, {"twilio": {"validate_signature": False}, **(overrides or {})}, records)

    monkeypatch.setattr(stack, "demo_settings", demo_settings)
    yield
