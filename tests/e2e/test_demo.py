"""The README's first command: ``bridge demo`` runs the whole path on this machine and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import REPO


def test_the_demo_runs_every_kind_of_call_and_says_what_each_cost() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "OPENAI_", "TWILIO_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "demo", "--fast"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.count("record: caller_hangup") == 4  # every call left a record ...
    assert out.count("per minute $") == 4  # ... with its cost
    assert "tool call: order_status → ok" in out
    assert "A-law caller, pcm16 session" in out and "model greets first" in out
