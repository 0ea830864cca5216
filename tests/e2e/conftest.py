"""Helpers shared by the end-to-end tests: run a trio test, place a simulated call, find a free
port, talk HTTP to a port, wait for a condition, and run ``bridge serve`` as a real process.

They live here rather than in ``bridge.testing`` because only this suite uses them; the tools that
ship (simulator, simulated callers, the in-process stack) are in ``bridge.testing``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bridge.accounting.store import SqliteRecordStore
from bridge.audio.wavfile import CALLER_ULAW, Wav, bundled
from bridge.call.runner import CallRunner
from bridge.testing.caller import CallerOptions, CallResult, Pause, Say, WaitForReply, run_call
from bridge.testing.simulator_server import SimulatorServer
from bridge.testing.stack import Stack

REPO = Path(__file__).resolve().parents[2]
# The first 1.6 s of the bundled recording: speech, then the caller's silence ends the turn.
SPEECH = bundled(CALLER_ULAW).data[: 8 * 1600]
# The first 2.5 s of the caller's recording, for tests whose caller talks over an answer: the
# whole 8.4 s, said and then said again over the answer, only makes them longer.
SHORT_SPEECH = Wav(bundled(CALLER_ULAW).encoding, 8000, bundled(CALLER_ULAW).data[: 8000 * 5 // 2])
API_KEY = "sk-test-not-a-real-key-0000"


def run(fn: Any, *args: Any) -> Any:
    """Run one async test body under trio."""
    return trio.run(fn, *args)


async def call(stack: Stack, *, timeout_s: float = 60.0, **options: Any) -> CallResult:
    """One simulated Twilio call against ``stack``'s media URL, bounded by ``timeout_s``."""
    with trio.fail_after(timeout_s):
        return await run_call(CallerOptions(url=stack.media_url, **options))


async def runner_for(stack: Stack, result: CallResult, timeout_s: float = 5.0) -> CallRunner:
    """The bridge's runner of a finished simulated call (waits until the bridge has finalised it)."""
    with trio.fail_after(timeout_s):
        while True:
            for runner in stack.hooks.finished:
                if runner.core.call_sid == result.call_sid:
                    return runner
            await trio.sleep(0.02)


def free_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# `bridge serve` as a process: supervisor, workers, admin port


def speaking_call(url: str, sid: str, wait_ms: int = 8000) -> CallerOptions:
    """Say ~1.6 s, then stay on the line until a reply of up to ``wait_ms`` has fully played."""
    return CallerOptions(url=url, audio=SPEECH, script=[Say(), WaitForReply(wait_ms)], call_sid=sid, record_audio=False)


def silent_call(url: str, sid: str, seconds: float) -> CallerOptions:
    return CallerOptions(url=url, script=[Pause(int(seconds * 1000))], call_sid=sid, record_audio=False)


def new_sid(tag: str) -> str:
    return "CA" + (tag + os.urandom(16).hex())[:32]


async def http(port: int, method: str, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """One HTTP/1.1 request on loopback; (status, body). Status 0 when the port does not answer."""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return 0, b""
        async with stream:
            await stream.send_all(f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            data = b""
            try:
                while chunk := await stream.receive_some(65536):
                    data += chunk
            except trio.BrokenResourceError:
                pass
        head, _, body = data.partition(b"\r\n\r\n")
        try:
            return int(head.split(b" ", 2)[1]), body
        except (IndexError, ValueError):
            return 0, data
    return 0, b""


@dataclass
class Service:
    proc: trio.Process
    port: int
    admin_port: int
    records: Path
    config: Path
    log: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    def workers(self) -> dict[int, int]:
        """worker id -> pid of the supervisor's live worker processes."""
        found: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) != self.proc.pid or fields[0] == "Z" or b"--worker-id" not in cmdline:
                continue
            found[int(cmdline[cmdline.index(b"--worker-id") + 1])] = int(entry)
        return found

    async def sessions(self) -> list[dict[str, Any]]:
        status, body = await http(self.admin_port, "GET", "/sessions")
        assert status == 200, body
        sessions: list[dict[str, Any]] = json.loads(body)["sessions"]
        return sessions

    async def ready(self) -> int:
        return (await http(self.admin_port, "GET", "/readyz"))[0]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def records_by_sid(self) -> dict[str, Any]:
        with SqliteRecordStore(self.records) as store:
            return {r.call_sid: r for r in store.query()}


def write_config(
    path: Path,
    sim_port: int,
    port: int,
    admin_port: int,
    records: Path,
    drain: float,
    realtime: str = "",
    server: str = "",
    extra: str = "",
) -> None:
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
drain_timeout_s = {drain}
{server}
[admin]
host = "127.0.0.1"
port = {admin_port}
[realtime]
url = "ws://127.0.0.1:{sim_port}/v1/realtime"
connect_timeout_s = 5
{realtime}
[records]
path = "{records}"
update_interval_s = 0.5
[twilio]
validate_signature = false   # loopback only; the simulated callers do not sign
[log]
level = "info"
format = "json"
{extra}
"""
    )


@asynccontextmanager
async def service(
    tmp_path: Path,
    sim: SimulatorServer,
    *,
    workers: int = 2,
    drain: float = 30.0,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    realtime: str = "",
    server: str = "",
    extra: str = "",
) -> AsyncIterator[Service]:
    port, admin_port = free_port(), free_port()
    records = tmp_path / "calls.sqlite"
    config = tmp_path / "bridge.toml"
    write_config(config, sim.port, port, admin_port, records, drain, realtime=realtime, server=server, extra=extra)
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "NOTIFY_", "WATCHDOG_", "PROMETHEUS_", "RUNTIME_DIRECTORY"))
    }
    environ.update({"OPENAI_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1", **(env or {})})
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "bridge", "--config", str(config), "serve", "--workers", str(workers)],
            stdout=out,
            stderr=out,
            env=environ,
            cwd=REPO,
        )
    svc = Service(proc, port, admin_port, records, config, log)
    try:
        if wait_ready:
            with trio.fail_after(20):
                while await svc.ready() != 200:
                    assert proc.poll() is None, svc.log_text()[-3000:]
                    await trio.sleep(0.05)
        yield svc
    finally:
        if proc.returncode is None:
            # Workers live in their own sessions: kill them explicitly, or they would drain on.
            for pid in svc.workers().values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.kill()
        with trio.move_on_after(10):
            await proc.wait()


async def wait_until(what: str, predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll the async ``predicate`` until it returns something true (returned); fail after ``timeout``."""
    with trio.move_on_after(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await trio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


async def http_post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    """POST a form body on loopback; (status, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, reply = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), reply


def as_async(fn: Any) -> Any:
    """A plain predicate as the async predicate ``wait_until`` takes."""

    async def check() -> bool:
        return bool(fn())

    return check
