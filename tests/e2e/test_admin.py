"""The admin port over loopback, with real calls through the Realtime simulator.

Every test runs a simulator, one bridge worker and its admin port in one trio run
(:func:`bridge.testing.stack.open_stack`); HTTP requests go over real sockets with urllib on a worker
thread, so the trio loop keeps serving while a request waits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from pydantic import SecretStr

from bridge.config import Secrets, Settings, check_startup
from bridge.server.admin_client import print_sessions
from bridge.testing.caller import CallerOptions, CallResult, Pause, Say, run_call
from bridge.testing.stack import Stack, open_stack
from tests.e2e.conftest import REPO, run

TOKEN = "admin-token-for-tests-4f1c9e"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _request(url: str, method: str, headers: dict[str, str]) -> Response:
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


async def http(stack: Stack, path: str, method: str = "GET", token: str | None = None) -> Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await trio.to_thread.run_sync(_request, stack.admin_url + path, method, headers)


@dataclass
class LiveCall:
    """A simulated caller running in the background of the test's trio run."""

    done: trio.Event = field(default_factory=trio.Event)
    result: CallResult | None = None


async def start_call(nursery: trio.Nursery, stack: Stack, **kw: Any) -> LiveCall:
    live = LiveCall()
    opts = CallerOptions(url=stack.media_url, **kw)

    async def runner() -> None:
        try:
            live.result = await run_call(opts)
        finally:
            live.done.set()

    nursery.start_soon(runner)
    return live


def long_call(stack: Stack, nursery: trio.Nursery) -> Awaitable[LiveCall]:
    """A paced caller that talks, then stays on the line (silence) for up to 20 s."""
    return start_call(nursery, stack, realtime=True, script=[Say(), Pause(20_000)], hang_up_after_ms=20_000)


async def wait_listed_active(stack: Stack, token: str | None = None, timeout: float = 10) -> dict[str, Any]:
    """Poll GET /sessions until exactly one call is listed active with frames received."""
    with trio.fail_after(timeout):
        while True:
            resp = await http(stack, "/sessions", token=token)
            assert resp.status == 200, resp
            sessions = resp.json()["sessions"]
            if len(sessions) == 1 and sessions[0]["state"] == "active" and sessions[0]["frames_in"] > 0:
                return dict(sessions[0])
            await trio.sleep(0.1)


# --------------------------------------------------------------------------------------------
# /sessions: list, get, end


def test_sessions_lists_a_live_call_and_delete_ends_it_as_operator(tmp_path: Path) -> None:
    async def main() -> None:
        with trio.fail_after(30):
            async with open_stack(records=tmp_path / "calls.sqlite") as stack, trio.open_nursery() as nursery:
                live = await long_call(stack, nursery)
                s = await wait_listed_active(stack)
                call_id = s["id"]
                runner = stack.ctx.calls[call_id]
                assert re.fullmatch(r"[0-9a-f]{16}", call_id)
                assert s["call_sid"] == runner.core.call_sid and s["call_sid"].startswith("CA")
                assert s["stream_sid"] == runner.core.stream_sid and s["stream_sid"].startswith("MZ")
                assert s["turn"] in ("listening", "user_speaking", "assistant_speaking")
                assert s["profile"] == "default"
                assert s["model"] == "gpt-realtime"
                assert s["carrier_format"] == "ulaw_8k"
                assert s["session_format"] == "pcmu"
                assert abs(s["started_at"] - runner.started_wall) < 1e-3
                assert 0 < s["duration_s"] < 20
                assert s["frames_in"] > 0 and s["frames_out"] >= 0 and s["barge_ins"] == 0
                assert s["cost_usd"] is None or s["cost_usd"] >= 0
                assert s["worker"] == 0

                # One call, found by its id, its call sid and its stream sid.
                for key in (call_id, s["call_sid"], s["stream_sid"]):
                    one = await http(stack, f"/sessions/{key}")
                    assert one.status == 200 and one.headers["content-type"] == "application/json"
                    assert one.json()["id"] == call_id
                    assert one.json()["frames_in"] >= s["frames_in"]  # live figures, not a copy

                # Wrong methods, unknown ids.
                post = await http(stack, f"/sessions/{call_id}", method="POST")
                assert post.status == 405 and post.headers["allow"] == "GET, DELETE"
                put = await http(stack, "/sessions", method="PUT")
                assert put.status == 405 and put.headers["allow"] == "GET"
                assert (await http(stack, "/sessions/CAnosuchcall", method="DELETE")).status == 404
                missing = await http(stack, "/sessions/CAnosuchcall")
                assert missing.status == 404 and missing.json()["id"] == "CAnosuchcall"
                assert (await http(stack, "/nope")).status == 404
                assert not live.done.is_set()  # none of that touched the call

                # The operator ends the call.
                ended = await http(stack, f"/sessions/{call_id}", method="DELETE")
                assert ended.status == 200
                assert ended.json()["id"] == call_id and ended.json()["state"] == "closing"
                with trio.fail_after(5):
                    await live.done.wait()
                result = live.result
                assert result is not None and result.connected
                assert result.closed_by == "server"
                assert result.close_code == 1000
                assert result.close_reason is not None and result.close_reason.startswith("operator")
                assert not result.hung_up_early and result.failure is None

                await stack.wait_idle()
                (finished,) = stack.hooks.finished
                assert finished.call_id == call_id
                assert finished.core.end_reason == "operator"
                assert stack.store is not None
                (record,) = stack.store.query()
                assert record.call_id == call_id and record.call_sid == s["call_sid"]
                assert record.end_reason == "operator"
                # Gone from the admin port once it ended.
                assert (await http(stack, "/sessions")).json() == {"sessions": []}
                assert (await http(stack, f"/sessions/{call_id}")).status == 404
                assert (await http(stack, f"/sessions/{call_id}", method="DELETE")).status == 404

    run(main)


def test_bridge_sessions_command_shows_the_live_call(capsys: pytest.CaptureFixture[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")

    async def main() -> None:
        with trio.fail_after(40):
            async with open_stack() as stack, trio.open_nursery() as nursery:
                live = await long_call(stack, nursery)
                s = await wait_listed_active(stack)
                cmd = [sys.executable, "-m", "bridge", "sessions", "--url", stack.admin_url]
                as_json = await trio.run_process([*cmd, "--json"], capture_stdout=True, env=env, cwd=REPO)
                (listed,) = json.loads(as_json.stdout)["sessions"]
                assert listed["id"] == s["id"] and listed["call_sid"] == s["call_sid"]
                assert listed["state"] == "active" and listed["frames_in"] >= s["frames_in"]
                table = await trio.run_process(cmd, capture_stdout=True, env=env, cwd=REPO)
                lines = table.stdout.decode().splitlines()
                assert lines[0].split()[:3] == ["id", "call_sid", "state"]
                (row,) = [line for line in lines[1:] if line.startswith(s["id"])]
                assert s["call_sid"] in row and "active" in row and "ulaw_8k→pcmu" in row
                assert lines[-1].startswith("1 live call(s)")

                # The same command in this process, with an admin token that the port does not need.
                secrets = Secrets(None, None, None)
                code = await trio.to_thread.run_sync(
                    lambda: print_sessions(Settings(), secrets, url=stack.admin_url, as_json=True)
                )
                assert code == 0
                out = capsys.readouterr().out  # the call's log lines may be in there too
                printed, _ = json.JSONDecoder().raw_decode(out[out.index('{\n  "sessions"') :])
                assert printed["sessions"][0]["id"] == s["id"]

                assert (await http(stack, f"/sessions/{s['id']}", method="DELETE")).status == 200
                with trio.fail_after(5):
                    await live.done.wait()

    run(main)


# --------------------------------------------------------------------------------------------
# Auth, health, readiness


ENDPOINTS = [
    ("GET", "/"),
    ("GET", "/sessions"),
    ("GET", "/sessions/CAnosuchcall"),
    ("DELETE", "/sessions/CAnosuchcall"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]


def test_admin_token_is_required_on_every_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        with trio.fail_after(30):
            async with open_stack(admin_token=TOKEN) as stack, trio.open_nursery() as nursery:
                live = await long_call(stack, nursery)
                s = await wait_listed_active(stack, token=TOKEN)
                for method, path in [*ENDPOINTS, ("GET", f"/sessions/{s['id']}")]:
                    bare = await http(stack, path, method=method)
                    assert bare.status == 401, (method, path)
                    assert bare.headers["www-authenticate"].startswith("Bearer")
                    assert s["call_sid"].encode() not in bare.body
                    wrong = await http(stack, path, method=method, token=TOKEN + "x")
                    assert wrong.status == 401, (method, path)
                    assert (await http(stack, path, method=method, token="")).status == 401
                for method, path in ENDPOINTS:
                    right = await http(stack, path, method=method, token=TOKEN)
                    expected = 404 if "CAnosuchcall" in path else 200
                    assert right.status == expected, (method, path, right)
                # Basic auth with the token as password is not a bearer token.
                basic = await trio.to_thread.run_sync(
                    _request, stack.admin_url + "/sessions", "GET", {"Authorization": f"Basic {TOKEN}"}
                )
                assert basic.status == 401
                # The call was not ended by any unauthorised DELETE.
                assert not live.done.is_set() and s["id"] in stack.ctx.calls
                got = await http(stack, f"/sessions/{s['call_sid']}", token=TOKEN)
                assert got.status == 200 and got.json()["id"] == s["id"]

                # `bridge sessions` sends the token it is given, and says why when it has none.
                with_token = Secrets(None, None, SecretStr(TOKEN))
                code = await trio.to_thread.run_sync(
                    lambda: print_sessions(Settings(), with_token, url=stack.admin_url, as_json=False)
                )
                out = capsys.readouterr()
                assert code == 0 and "1 live call(s)" in out.out
                assert any(line.startswith(s["id"]) and s["call_sid"] in line for line in out.out.splitlines())
                no_token = Secrets(None, None, None)
                code = await trio.to_thread.run_sync(
                    lambda: print_sessions(Settings(), no_token, url=stack.admin_url, as_json=False)
                )
                out = capsys.readouterr()
                assert code == 1 and "answered 401" in out.err and "live call(s)" not in out.out

                ended = await http(stack, f"/sessions/{s['id']}", method="DELETE", token=TOKEN)
                assert ended.status == 200
                with trio.fail_after(5):
                    await live.done.wait()
                assert live.result is not None and live.result.close_code == 1000

    run(main)


def test_healthz_and_readyz_follow_draining() -> None:
    async def main() -> None:
        with trio.fail_after(10):
            async with open_stack() as stack:
                health = await http(stack, "/healthz")
                assert health.status == 200 and health.json() == {"status": "ok"}
                ready = await http(stack, "/readyz")
                assert ready.status == 200 and ready.json() == {"ready": True}
                stack.ctx.draining = True
                ready = await http(stack, "/readyz")
                assert ready.status == 503 and ready.json() == {"ready": False}
                assert (await http(stack, "/healthz")).status == 200  # alive while draining
                page = await http(stack, "/")
                assert page.status == 200 and page.headers["content-type"].startswith("text/html")
                assert b'id="sessions"' in page.body
                assert "default-src 'self'" in page.headers["content-security-policy"]
                stack.ctx.draining = False
                assert (await http(stack, "/readyz")).status == 200

    run(main)


def test_check_startup_refuses_a_public_admin_port_without_token() -> None:
    unsigned = {"validate_signature": False}
    public = Settings(admin={"host": "0.0.0.0", "port": 9100}, twilio=unsigned)  # type: ignore[arg-type]
    key = SecretStr("sk-test-0000000000")
    problems = check_startup(public, Secrets(key, None, None)).problems
    assert len(problems) == 1 and problems[0].startswith("admin.host") and "0.0.0.0" in problems[0]
    assert check_startup(public, Secrets(key, None, SecretStr(TOKEN))).ok
    loopback = Settings(admin={"host": "127.0.0.1", "port": 9100}, twilio=unsigned)  # type: ignore[arg-type]
    assert check_startup(loopback, Secrets(key, None, None)).ok


# --------------------------------------------------------------------------------------------
# /metrics


def _samples(text: str, name: str) -> dict[str, float]:
    """``{label block: value}`` of one metric's samples in an exposition body."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


async def scrape(stack: Stack) -> str:
    resp = await http(stack, "/metrics")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return resp.body.decode()


def test_metrics_scraped_during_a_call_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    to_model = '{direction="to_model"}'
    hangup = '{outcome="caller_hangup"}'

    async def main() -> None:
        with trio.fail_after(30):
            # Records on (as in production): the ticker pushes the call's counters every second.
            async with open_stack(records=tmp_path / "calls.sqlite") as stack, trio.open_nursery() as nursery:
                before = await scrape(stack)
                frames0 = _samples(before, "bridge_frames_total")[to_model]
                active0 = _samples(before, "bridge_calls_active")[""]
                ended0 = _samples(before, "bridge_calls_ended_total")[hangup]
                live = await start_call(
                    nursery, stack, realtime=True, script=[Say(), Pause(10_000)], hang_up_after_ms=4_500
                )
                await wait_listed_active(stack)
                with trio.fail_after(4):
                    while True:
                        during = await scrape(stack)
                        if _samples(during, "bridge_frames_total")[to_model] > frames0:
                            break
                        await trio.sleep(0.2)
                assert not live.done.is_set(), "the scrape must be taken while the call is up"
                assert _samples(during, "bridge_calls_active")[""] == active0 + 1
                checked = await trio.run_process(
                    [promtool, "check", "metrics"],
                    stdin=during.encode(),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                report = (checked.stdout + checked.stderr).decode()
                assert checked.returncode == 0 and report == "", report

                with trio.fail_after(10):
                    await live.done.wait()
                assert live.result is not None and live.result.hung_up_early
                await stack.wait_idle()
                after = await scrape(stack)
                assert _samples(after, "bridge_calls_ended_total")[hangup] == ended0 + 1
                assert _samples(after, "bridge_calls_active")[""] == active0
                cost = _samples(after, "bridge_cost_usd_total")
                assert cost and all(v >= 0 for v in cost.values()) and sum(cost.values()) > 0
                assert all('model="gpt-realtime"' in labels for labels in cost)
                assert _samples(after, "bridge_frames_total")[to_model] >= frames0 + live.result.frames_sent - 1

    run(main)
