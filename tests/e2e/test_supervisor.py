"""`bridge serve` as real processes: the supervisor, its workers, systemd notifications, drain.

Each test starts ``python -m bridge --config <file> serve --workers N`` on loopback (ports picked by
binding port 0 first), with the Realtime simulator and the simulated callers in this test's own
trio run. Worker processes are found through /proc (children of the supervisor, with their
``--worker-id`` on the command line). Every wait is bounded.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from bridge.accounting.store import SqliteRecordStore
from bridge.audio.wavfile import CALLER_ULAW, bundled
from bridge.testing.caller import CallerOptions, CallResult, Pause, Say, WaitForReply, run_call
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.simulator_server import SimulatorServer, open_simulator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux (/proc, signals)")

ROOT = Path(__file__).resolve().parents[2]
REPLY_MS = 1500
REPLY_BYTES = REPLY_MS * 8  # μ-law passthrough: one byte per sample at 8 kHz
# The first 1.6 s of the bundled recording: speech, then the caller's silence ends the turn.
SPEECH = bundled(CALLER_ULAW).data[: 8 * 1600]
API_KEY = "sk-test-not-a-real-key-0000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def speaking_call(url: str, sid: str, wait_ms: int = 8000) -> CallerOptions:
    """Say ~1.6 s, then stay on the line until the simulator's 1.5 s reply has fully played."""
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
            cwd=ROOT,
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
    with trio.move_on_after(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await trio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------------------------


def test_killed_worker_costs_only_its_own_calls(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_simulator(options=SimulatorOptions(response_audio_ms=REPLY_MS)) as sim:
            async with service(tmp_path, sim, workers=2) as svc:
                before = svc.workers()
                assert sorted(before) == [0, 1]
                results: dict[str, CallResult] = {}

                async def call(options: CallerOptions) -> None:
                    results[options.call_sid or ""] = await run_call(options)

                # Calls until both workers hold some: the shared socket decides who accepts.
                placed: dict[str, int] = {}
                async with trio.open_nursery() as nursery:
                    for i in range(10):
                        sid = new_sid(f"{i:02d}")
                        nursery.start_soon(call, speaking_call(svc.url, sid))

                        async def placed_on(sid: str = sid) -> tuple[int] | None:
                            for s in await svc.sessions():
                                if s["call_sid"] == sid:
                                    return (int(s["worker"]),)
                            return None

                        (placed[sid],) = await wait_until("call in /sessions", placed_on, 5)
                        if len(set(placed.values())) == 2 and i >= 1:
                            break
                    assert set(placed.values()) == {0, 1}, placed
                    # /sessions merges both workers' calls.
                    listed = {s["call_sid"]: s["worker"] for s in await svc.sessions()}
                    assert listed == placed
                    victim = placed[max(placed)]  # the newest call's worker: its calls are all mid-way
                    os.kill(before[victim], signal.SIGKILL)
                    killed_at = time.time()

                victims = [sid for sid, w in placed.items() if w == victim]
                survivors = [sid for sid, w in placed.items() if w != victim]
                for sid in survivors:
                    r = results[sid]
                    assert r.ok and r.closed_by == "caller", (sid, r.close_code, r.failure)
                    assert r.played_bytes == REPLY_BYTES, "a survivor lost reply audio"
                    assert r.ended_at > killed_at + 1.0, "the surviving call should outlive the kill"
                for sid in victims:
                    r = results[sid]
                    assert not r.ok and r.closed_by == "server" and r.close_code not in (1000, 1001)

                # The victim is replaced under the same id, and the service is ready again.
                async def restarted() -> bool:
                    now = svc.workers()
                    return sorted(now) == [0, 1] and now[victim] != before[victim] and await svc.ready() == 200

                await wait_until("the worker's replacement", restarted, 10)
                status, body = await http(svc.admin_port, "GET", "/metrics")
                assert status == 200
                assert b"bridge_worker_restarts_total 1.0" in body
                assert b"bridge_workers_alive 2.0" in body

                # DELETE /sessions/{id} reaches whichever worker holds the call.
                sid = new_sid("op")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call, silent_call(svc.url, sid, 20))

                    async def call_id() -> str | None:
                        return next((s["id"] for s in await svc.sessions() if s["call_sid"] == sid), None)

                    key = await wait_until("operator call", call_id, 5)
                    status, body = await http(svc.admin_port, "DELETE", f"/sessions/{key}")
                    assert status == 200, body
                # The server's close frame (the caller's own closed_by is racy when both close).
                assert results[sid].close_code == 1000 and (results[sid].close_reason or "").startswith("operator")
                assert results[sid].duration_s < 10

                async def settled() -> dict[str, Any] | None:
                    recs = svc.records_by_sid()
                    wanted = [*placed, sid]
                    done = all(s in recs and recs[s].status.value == "ended" for s in wanted)
                    return recs if done else None

                records = await wait_until("final records", settled, 10)

                # The killed worker's calls no longer count as active (its live gauge files are gone).
                async def no_active_calls() -> bool:
                    return b"bridge_calls_active 0.0" in (await http(svc.admin_port, "GET", "/metrics"))[1]

                await wait_until("bridge_calls_active 0", no_active_calls, 5)
                for s in victims:
                    assert records[s].end_reason.value == "worker_lost" and records[s].worker == victim
                for s in survivors:
                    assert records[s].end_reason.value == "caller_hangup"
                assert records[sid].end_reason.value == "operator"
            assert b'"worker_died"' in svc.log.read_bytes()

    trio.run(main)


def test_sigterm_drains_live_calls_and_refuses_new_ones(tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            open_simulator(options=SimulatorOptions(response_audio_ms=REPLY_MS)) as sim,
            service(tmp_path, sim, workers=2, drain=30) as svc,
        ):
            results: dict[str, CallResult] = {}
            sids = [new_sid(f"d{i}") for i in range(3)]

            async def call(options: CallerOptions) -> None:
                results[options.call_sid or ""] = await run_call(options)

            async with trio.open_nursery() as nursery:
                for sid in sids:
                    nursery.start_soon(call, speaking_call(svc.url, sid))

                async def all_live() -> bool:
                    return len(await svc.sessions()) == len(sids)

                await wait_until("calls live", all_live, 5)
                svc.proc.send_signal(signal.SIGTERM)
                await wait_until("/readyz 503", lambda: _is(svc.ready(), 503), 3)
                await trio.sleep(0.3)  # the workers have the forwarded SIGTERM by now
                late = await run_call(speaking_call(svc.url, new_sid("late")))
                assert not late.connected and "HTTP 503" in (late.connect_error or ""), late.connect_error
                # Still answering while it drains.
                assert len(await svc.sessions()) == len(sids)
                assert (await http(svc.admin_port, "GET", "/healthz"))[0] == 200
            with trio.fail_after(15):
                code = await svc.proc.wait()
            assert code == 0, svc.log_text()[-3000:]
            for sid in sids:
                r = results[sid]
                assert r.ok and r.played_bytes == REPLY_BYTES, (sid, r.close_code, r.played_bytes)
            records = svc.records_by_sid()
            assert {records[s].end_reason.value for s in sids} == {"caller_hangup"}
            assert not svc.workers()

    trio.run(main)


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


def test_sd_notify_ready_watchdog_stopping_and_drain_timeout(tmp_path: Path) -> None:
    notify_path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify_path)

    async def main() -> None:
        messages: list[tuple[float, str]] = []  # (arrival time, datagram)

        stop_collecting = threading.Event()

        def collect() -> None:
            # A thread that is always reading, so arrival times are the supervisor's send times
            # (within a few ms) even while this test's trio loop is busy with the call.
            receiver.settimeout(0.05)
            while not stop_collecting.is_set():
                try:
                    messages.append((time.monotonic(), receiver.recv(4096).decode()))
                except TimeoutError:
                    pass

        def seen(text: str, start: int = 0) -> int:
            return sum(text in m for _, m in messages[start:])

        async def until(what: str, check: Any, timeout: float) -> None:
            with trio.fail_after(timeout):
                while not check():
                    await trio.sleep(0.005)

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        try:
            async with (
                open_simulator(options=SimulatorOptions(response_audio_ms=REPLY_MS)) as sim,
                service(
                    tmp_path,
                    sim,
                    workers=2,
                    drain=1.0,
                    env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "1000000"},
                    wait_ready=False,
                ) as svc,
            ):
                await until("READY=1", lambda: seen("READY=1"), 20)
                # READY=1 means the public port is open and served by a worker.
                status, body = await http(svc.port, "GET", "/healthz")
                assert (status, body) == (200, b"ok\n")
                assert await svc.ready() == 200
                results: list[CallResult] = []

                async def call() -> None:
                    results.append(await run_call(silent_call(svc.url, new_sid("long"), 30)))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call)
                    mark = len(messages)
                    await until("3 watchdog pings", lambda: seen("WATCHDOG=1", mark) >= 3, 5)
                    await wait_until("call live", svc.sessions, 5)
                    svc.proc.send_signal(signal.SIGTERM)
                    await until("STOPPING=1", lambda: seen("STOPPING=1"), 5)
                    # drain_timeout_s = 1: the call is ended for us, cleanly, with "going away".
                with trio.fail_after(15):
                    code = await svc.proc.wait()
                await trio.sleep(0.1)
                assert code == 0, svc.log_text()[-3000:]
                (r,) = results
                assert r.close_code == 1001 and (r.close_reason or "").startswith("drain"), r.close_reason
                assert r.duration_s < 10
                (rec,) = svc.records_by_sid().values()
                assert rec.end_reason.value == "drain"
        finally:
            stop_collecting.set()
            collector.join()

        texts = [m for _, m in messages]
        ready = next(i for i, m in enumerate(texts) if "READY=1" in m)
        stopping = next(i for i, m in enumerate(texts) if "STOPPING=1" in m)
        assert ready < stopping
        pings = [t for t, m in messages[ready:stopping] if m == "WATCHDOG=1"]
        assert len(pings) >= 3
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # Half of WATCHDOG_USEC apart, and never a gap that would make systemd kill us.
        assert 0.35 < statistics.fmean(gaps) < 0.7 and max(gaps) < 0.95, gaps
        assert any("EXTEND_TIMEOUT_USEC=" in m for m in texts[stopping:])
        assert "STATUS=serving on 127.0.0.1:" in texts[ready]

    try:
        trio.run(main)
    finally:
        receiver.close()


def test_crash_loop_stops_the_service_with_an_error(tmp_path: Path) -> None:
    notify_path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(notify_path)

    async def main() -> None:
        async with (
            open_simulator() as sim,
            service(tmp_path, sim, workers=1, env={"NOTIFY_SOCKET": notify_path}) as svc,
        ):
            killed: set[int] = set()
            with trio.fail_after(20):
                while svc.proc.poll() is None:
                    for pid in svc.workers().values():
                        if pid not in killed:
                            killed.add(pid)
                            os.kill(pid, signal.SIGKILL)
                    await trio.sleep(0.02)
            assert svc.proc.returncode == 1
            assert len(killed) == 5  # restarted four times, with growing delays, then gave up
            assert b'"crash_loop"' in svc.log.read_bytes()

    try:
        trio.run(main)
        receiver.setblocking(False)
        statuses = []
        while True:
            try:
                statuses.append(receiver.recv(4096).decode())
            except BlockingIOError:
                break
        assert any("STATUS=crash loop" in m for m in statuses), statuses
    finally:
        receiver.close()


def test_sighup_reload_applies_to_new_calls_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            open_simulator(options=SimulatorOptions(response_audio_ms=REPLY_MS)) as sim,
            service(tmp_path, sim, workers=2, realtime='instructions = "old words"') as svc,
        ):
            results: dict[str, CallResult] = {}

            async def call(options: CallerOptions) -> None:
                results[options.call_sid or ""] = await run_call(options)

            def instructions() -> list[str]:
                return [str(s.config.get("instructions")) for s in sim.sessions]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, speaking_call(svc.url, "CA" + "a" * 32))
                await wait_until("first call", svc.sessions, 5)
                text = svc.config.read_text()
                svc.config.write_text(text.replace('"old words"', '"new words"'))
                svc.proc.send_signal(signal.SIGHUP)

                async def reloaded() -> bool:
                    return svc.log_text().count('"worker_reloaded"') == 2

                await wait_until("both workers reloaded", reloaded, 5)
                await call(speaking_call(svc.url, "CA" + "b" * 32))
                # A broken file on the next reload changes nothing and kills nothing.
                svc.config.write_text(text.replace('"old words"', "not toml"))
                svc.proc.send_signal(signal.SIGHUP)
                await wait_until("reload refused", _true(lambda: '"reload_failed"' in svc.log_text()), 5)
                assert await svc.ready() == 200
                await call(speaking_call(svc.url, "CA" + "c" * 32))
            assert instructions() == ["old words", "new words", "new words"]
            for r in results.values():
                assert r.ok and r.played_bytes == REPLY_BYTES  # the live call was not touched
            assert len(svc.workers()) == 2

    trio.run(main)


def test_admission_across_workers_sees_every_workers_calls(tmp_path: Path) -> None:
    """One call per worker: the second call goes to the worker with room (the full one leaves the
    shared socket to it), and the third, with every worker full, gets the overflow TwiML and a 503."""

    async def main() -> None:
        async with (
            open_simulator(options=SimulatorOptions(response_audio_ms=REPLY_MS)) as sim,
            service(tmp_path, sim, workers=2, server="max_calls_per_worker = 1") as svc,
        ):
            results: dict[str, CallResult] = {}

            async def call(options: CallerOptions) -> None:
                results[options.call_sid or ""] = await run_call(options)

            async def worker_of(sid: str) -> tuple[int] | None:
                for s in await svc.sessions():
                    if s["call_sid"] == sid and s["state"] == "active":
                        return (int(s["worker"]),)
                return None

            async with trio.open_nursery() as nursery:
                placed = []
                for tag in ("a", "b"):
                    sid = "CA" + tag * 32
                    nursery.start_soon(call, silent_call(svc.url, sid, 6))
                    (worker,) = await wait_until(f"call {tag} active", partial(worker_of, sid), 5)
                    placed.append(worker)
                assert sorted(placed) == [0, 1]  # not a 503 from the worker that was already full

                status, body = await http_post(svc.port, "/twiml", b"From=%2B1555&To=%2B1666")
                assert status == 200 and b"<Say>" in body and b"<Hangup/>" in body and b"<Stream" not in body
                refused = await run_call(silent_call(svc.url, "CA" + "c" * 32, 1))
                assert not refused.connected and "503" in (refused.connect_error or "")
            for sid in ("CA" + "a" * 32, "CA" + "b" * 32):
                assert results[sid].ok, results[sid]
            _, metrics_body = await http(svc.admin_port, "GET", "/metrics")
            assert b'bridge_refused_total{reason="at_capacity",route="answer"} 1.0' in metrics_body
            assert b'bridge_refused_total{reason="at_capacity",route="media"} 1.0' in metrics_body

            # Once the bridge has finalised the calls there is room again.
            async def room() -> bool:
                status, body = await http_post(svc.port, "/twiml", b"From=%2B1555&To=%2B1666")
                return status == 200 and b"<Stream" in body

            await wait_until("room again", room, 5)

    trio.run(main)


async def http_post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, reply = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), reply


def _true(fn: Any) -> Any:
    async def check() -> bool:
        return bool(fn())

    return check
