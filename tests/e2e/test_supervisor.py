"""`bridge serve` as real processes: the supervisor, its workers, systemd notifications, drain.

Each test starts ``python -m bridge --config <file> serve --workers N`` on loopback (ports picked by
binding port 0 first), with the Realtime simulator and the simulated callers in this test's own
trio run. Worker processes are found through /proc (children of the supervisor, with their
``--worker-id`` on the command line). Every wait is bounded.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import statistics
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from bridge.testing.caller import CallerOptions, CallResult, run_call
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.simulator_server import open_simulator
from tests.e2e.conftest import (
    as_async,
    http,
    http_post,
    new_sid,
    service,
    silent_call,
    speaking_call,
    wait_until,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux (/proc, signals)")

REPLY_MS = 1500
REPLY_BYTES = REPLY_MS * 8  # μ-law passthrough: one byte per sample at 8 kHz


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
                await wait_until("reload refused", as_async(lambda: '"reload_failed"' in svc.log_text()), 5)
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
