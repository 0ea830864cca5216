"""``bridge demo``: the whole path on one machine, no account, no key.

Starts the Realtime simulator, a bridge worker pointed at it and a few simulated Twilio callers
on loopback, then prints what each call did and what it cost. :func:`open_stack` is the same
stack for tests.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from pydantic import SecretStr

from bridge.accounting.store import SqliteRecordStore
from bridge.call.runner import CallRunner, WorkerContext
from bridge.config import Secrets, Settings
from bridge.realtime.simulator_server import SimulatorOptions, SimulatorServer, open_simulator
from bridge.server.hooks import WorkerHooks
from bridge.server.worker import make_listen_socket, run_worker, trio_listener

DEMO_KEY = "sk-demo-not-a-real-key-0000"


class StackHooks(WorkerHooks):
    """Worker hooks that also keep the finished calls, so tests can inspect them afterwards."""

    def __init__(self, store: SqliteRecordStore | None, worker_id: int | None = None) -> None:
        super().__init__(store, worker_id)
        self.finished: list[CallRunner] = []

    def call_ended(self, call: CallRunner) -> None:
        super().call_ended(call)
        self.finished.append(call)


@dataclass
class Stack:
    settings: Settings
    ctx: WorkerContext
    simulator: SimulatorServer
    port: int
    admin_port: int | None
    store: SqliteRecordStore | None
    stop: trio.Event
    hooks: StackHooks

    @property
    def media_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Until every call has been finalised (record written, metrics counted)."""
        with trio.fail_after(timeout):
            while self.ctx.calls:
                await trio.sleep(0.02)


def demo_settings(sim_port: int, overrides: dict[str, Any] | None = None, records: Path | None = None) -> Settings:
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "drain_timeout_s": 5},
        "realtime": {"url": f"ws://127.0.0.1:{sim_port}/v1/realtime", "connect_timeout_s": 5},
        "admin": {"host": "127.0.0.1", "port": 0},
        "log": {"level": "warning"},
    }
    if records is not None:
        data["records"] = {"path": str(records), "update_interval_s": 1.0}
    for section, values in (overrides or {}).items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return Settings(**data)


@asynccontextmanager
async def open_stack(
    *,
    overrides: dict[str, Any] | None = None,
    simulator: SimulatorOptions | None = None,
    records: Path | None = None,
    api_key: str = DEMO_KEY,
    admin: bool = True,
    admin_token: str | None = None,
) -> AsyncIterator[Stack]:
    """Simulator + one worker (+ its admin port) in this trio run, on loopback, ports chosen freely.

    ``admin_token`` makes the admin port require ``Authorization: Bearer <token>``.
    """
    from bridge.log import REDACTOR
    from bridge.server.admin import AdminApp, LocalSessions

    async with open_simulator(options=simulator) as sim:
        settings = demo_settings(sim.port, overrides, records)
        secrets = Secrets(SecretStr(api_key), None, SecretStr(admin_token) if admin_token else None)
        # As the service must: no log line may quote a secret, whatever shape it has.
        REDACTOR.add(api_key)
        REDACTOR.add(admin_token)
        store = SqliteRecordStore(records) if records is not None else None
        if store is not None:
            store.open()
        hooks = StackHooks(store, worker_id=0)
        ctx = WorkerContext(settings, secrets, hooks=hooks, worker_id=0)
        sock = make_listen_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        extra = []
        admin_port = None
        if admin:
            asock = make_listen_socket("127.0.0.1", 0)
            admin_port = asock.getsockname()[1]
            app = AdminApp(settings, secrets, LocalSessions(ctx), ready=lambda: not ctx.draining)
            extra.append((app.handle, [trio_listener(asock)]))
        stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(run_worker, ctx, [trio_listener(sock)], extra=extra, stop=stop))
                try:
                    yield Stack(settings, ctx, sim, port, admin_port, store, stop, hooks)
                finally:
                    stop.set()
        finally:
            if store is not None:
                store.close()


def _fmt_cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def main(calls: int = 3, fast: bool = False) -> int:
    return trio.run(_demo, calls, fast)


async def _demo(calls: int, fast: bool) -> int:
    from bridge import log
    from bridge.caller import ALAW, MULAW, CallerOptions, run_call, summarise

    log.setup("warning", "console")
    print("bridge demo: Realtime simulator + bridge + simulated Twilio callers, all on loopback\n")
    tmp = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    profiles = {
        "alaw-pcm16": {"audio_format": "pcm16", "instructions": "You help {caller_name}."},
        "greeter": {"greeting": "Greet the caller warmly.", "audio_format": "pcma"},
    }
    plan: list[tuple[str, CallerOptions]] = []
    async with open_stack(records=tmp / "calls.sqlite", overrides={"profiles": profiles}) as stack:
        kinds = [
            ("μ-law caller, pcmu session (passthrough)", MULAW, {}),
            ("A-law caller, pcm16 session (24 kHz resampling)", ALAW, {"profile": "alaw-pcm16", "caller_name": "Ada"}),
            ("μ-law caller, pcma session, model greets first", MULAW, {"profile": "greeter"}),
        ]
        for i in range(calls):
            title, encoding, params = kinds[i % len(kinds)]
            opts = CallerOptions(
                url=stack.media_url,
                encoding=encoding,
                params=dict(params),
                realtime=not fast,
                # The greeter's caller lets the model speak first; the others start talking.
                leading_silence_ms=5000 if params.get("profile") == "greeter" else 500,
                wait_for_reply_ms=20_000,
            )
            plan.append((title, opts))
        results: list[Any] = [None] * len(plan)

        async def one(i: int, opts: CallerOptions) -> None:
            results[i] = await run_call(opts)

        async with trio.open_nursery() as nursery:
            for i, (_, opts) in enumerate(plan):
                nursery.start_soon(one, i, opts)
        # Let the bridge finalise the records of the calls that just ended.
        with trio.move_on_after(5):
            while stack.ctx.calls:
                await trio.sleep(0.05)
        records = stack.store.query() if stack.store else []
    failures = 0
    by_sid = {r.call_sid: r for r in records}
    for (title, opts), result in zip(plan, results, strict=True):
        print(f"── {title}")
        print("   " + summarise(result).replace("\n", "\n   "))
        rec = by_sid.get(opts.call_sid) if opts.call_sid else None
        if rec is None and result is not None:
            rec = by_sid.get(getattr(result, "call_sid", None))
        if rec is not None:
            print(
                f"   record: {rec.end_reason} after {rec.duration_s:.1f} s, turns {rec.turns}, "
                f"cost {_fmt_cost(rec.cost_total_usd)} (model {_fmt_cost(rec.cost_model_usd)}, "
                f"carrier {_fmt_cost(rec.cost_carrier_usd)}), per minute {_fmt_cost(rec.cost_per_minute_usd)}"
            )
        else:
            failures += 1
            print("   record: missing!")
        if result is None or not getattr(result, "connected", False):
            failures += 1
        print()
    print(f"call records: {tmp / 'calls.sqlite'}  (bridge cdr --db {tmp / 'calls.sqlite'})")
    if failures:
        print(f"demo: {failures} problem(s)", file=sys.stderr)
        return 1
    return 0
