"""The admin port's live page, loaded in headless Chromium while a call is up.

Chromium runs as a subprocess (``trio.run_process``) so the admin port, in this trio run, keeps
serving the page's polls of ``/sessions`` while the browser loads it. The screenshot is kept in
``test-artifacts/live-page.png`` at the repository root for people (and CI artifacts) to look at.
"""

from __future__ import annotations

import html
import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from bridge.testing.caller import CallerOptions, CallResult, Pause, Say, run_call
from bridge.testing.stack import Stack, open_stack
from tests.e2e.conftest import REPO

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    # Let the page's first polls of /sessions complete before the DOM is dumped.
    "--virtual-time-budget=3000",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium not installed (Debian: apt-get install chromium)")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


async def _live_session(stack: Stack) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            body = await trio.to_thread.run_sync(_get_json, stack.admin_url + "/sessions")
            sessions = body["sessions"]
            if len(sessions) == 1 and sessions[0]["state"] == "active" and sessions[0]["frames_in"] > 0:
                return dict(sessions[0])
            await trio.sleep(0.1)


async def _browser(chromium: str, profile: Path, *args: str) -> str:
    with trio.fail_after(30):
        done = await trio.run_process(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return str(done.stdout.decode(errors="replace"))


def test_live_page_in_chromium_shows_the_live_call(tmp_path: Path) -> None:
    chromium = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "live-page.png"
    shot.unlink(missing_ok=True)

    async def main() -> None:
        with trio.fail_after(60):
            async with open_stack() as stack, trio.open_nursery() as nursery:
                done = trio.Event()
                results: list[CallResult] = []

                async def caller() -> None:
                    opts = CallerOptions(
                        url=stack.media_url, realtime=True, script=[Say(), Pause(30_000)], hang_up_after_ms=30_000
                    )
                    try:
                        results.append(await run_call(opts))
                    finally:
                        done.set()

                nursery.start_soon(caller)
                s = await _live_session(stack)
                page = stack.admin_url + "/"

                dom = await _browser(chromium, tmp_path / "profile-dom", "--dump-dom", page)
                assert not done.is_set(), "the call must still be up while the page loads"
                assert 'id="sessions"' in dom
                row_start = dom.find(f'data-call-id="{html.escape(s["id"])}"')
                assert row_start != -1, dom[-3000:]
                row = dom[row_start : dom.find("</tr>", row_start)]
                assert s["call_sid"] in row and "active" in row and "gpt-realtime" in row
                assert 'id="sessions-empty" hidden' in dom  # the "No live calls" row is hidden
                assert "ulaw_8k → pcmu" in row
                assert dom.count("data-call-id=") == 1  # exactly this call, nothing stale
                assert '<b id="total-calls">1</b>' in dom

                size = "--window-size=1400,600"
                await _browser(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", size, page)
                assert not done.is_set()
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                assert shot.stat().st_size > 5_000  # a rendered page, not a blank one

                # End the call from the admin port; the page's data source then empties.
                req = urllib.request.Request(stack.admin_url + f"/sessions/{s['id']}", method="DELETE")
                await trio.to_thread.run_sync(lambda: urllib.request.urlopen(req, timeout=5).close())
                with trio.fail_after(5):
                    await done.wait()
                await stack.wait_idle()
                dom = await _browser(chromium, tmp_path / "profile-dom", "--dump-dom", page)
                assert "data-call-id=" not in dom
                assert '<tr id="sessions-empty"><td colspan="13">No live calls</td></tr>' in dom
                assert '<b id="total-calls">0</b>' in dom

    trio.run(main)
