"""Call webhooks are never lost: the endpoint is down (503, then refusing connections) across a
restart of the whole service, and every event arrives once it is back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from bridge.accounting.store import SqliteRecordStore
from bridge.testing.caller import run_call
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.simulator_server import open_simulator
from bridge.testing.tool_server import Route, ToolServer
from tests.e2e.conftest import free_port, new_sid, service, speaking_call
from tests.e2e.test_supervisor import REPLY_MS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux (/proc, signals)")


def test_webhooks_survive_an_endpoint_outage_across_a_restart(tmp_path: Path) -> None:
    hook_port = free_port()
    extra = f"""
[webhooks]
endpoints = [{{ url = "http://127.0.0.1:{hook_port}/hooks" }}]
retry_initial_s = 0.2
retry_max_s = 0.5
timeout_s = 2
"""

    async def endpoint(server: ToolServer, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await server.http.run(port=hook_port, task_status=task_status)

    async def main() -> None:
        down = ToolServer({"/hooks": Route(status=503, body="maintenance")})
        options = SimulatorOptions(response_audio_ms=REPLY_MS)
        async with open_simulator(options=options) as sim, trio.open_nursery() as n:
            outage = trio.CancelScope()
            await n.start(partial(endpoint, down, outage))
            sids = [new_sid("hook1"), new_sid("hook2")]
            async with service(tmp_path, sim, workers=1, extra=extra) as svc:
                for sid in sids:
                    await run_call(speaking_call(svc.url, sid, wait_ms=4000))
                # Every event was tried and refused with 503 ...
                with trio.fail_after(10):
                    while len({r.header("X-Bridge-Event-Id") for r in down.requests}) < 4:
                        await trio.sleep(0.05)
                # ... then the endpoint stops answering at all, and the service is restarted.
                outage.cancel()
                await trio.sleep(1.0)
                svc.proc.send_signal(signal.SIGTERM)
                with trio.fail_after(20):
                    assert await svc.proc.wait() == 0
            with SqliteRecordStore(svc.records) as store:
                counts = store.outbox_counts()
                pending = store.outbox(("pending",))
            assert counts["delivered"] == 0 and counts["pending"] == 4, counts
            assert all(row.attempts >= 1 for row in pending)
            assert {row.type for row in pending} == {"call.started", "call.ended"}
            listed = subprocess.run(
                [sys.executable, "-m", "bridge", "webhooks", "--json", "--db", str(svc.records)],
                capture_output=True,
                text=True,
                check=True,
            )
            assert json.loads(listed.stdout)["counts"]["pending"] == 4

            up = ToolServer({"/hooks": Route(body="")})
            async with service(tmp_path, sim, workers=1, extra=extra) as svc2:
                await trio.sleep(1.0)  # the new service tries while the endpoint still refuses
                await n.start(partial(endpoint, up, trio.CancelScope()))
                with trio.fail_after(15):
                    while True:
                        with SqliteRecordStore(svc2.records) as store:
                            if store.outbox_counts() == {"pending": 0, "delivered": 4, "failed": 0}:
                                break
                        await trio.sleep(0.1)
            delivered = [r for r in up.requests if r.status == 200]
            ids = {r.header("X-Bridge-Event-Id") for r in delivered}
            assert ids == {row.event_id for row in pending}  # every event, each at least once
            ended = [json.loads(r.body)["data"] for r in delivered if json.loads(r.body)["type"] == "call.ended"]
            assert sorted(d["call_sid"] for d in ended) == sorted(sids)
            assert all(d["cost_total_usd"] and d["end_reason"] == "caller_hangup" for d in ended)
            n.cancel_scope.cancel()

    trio.run(main)
