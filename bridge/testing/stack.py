"""The in-process stack: the Realtime simulator and one bridge worker (with its admin port) in one
trio run on loopback, ports chosen freely. ``bridge demo`` and the end-to-end tests use it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from bridge.accounting.store import SqliteRecordStore
from bridge.call.runner import CallRunner, WorkerContext
from bridge.config import Settings, load_secrets
from bridge.server.hooks import WorkerHooks
from bridge.server.webhook_sender import WebhookSender
from bridge.server.worker import make_listen_socket, run_worker, trio_listener
from bridge.testing.simulator_server import SimulatorOptions, SimulatorServer, open_simulator

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
    sender: WebhookSender | None = None  # delivers call webhooks (with a record store)

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


async def _run_in(scope: trio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await fn()


def demo_settings(sim_port: int, overrides: dict[str, Any] | None = None, records: Path | None = None) -> Settings:
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "drain_timeout_s": 5},
        "realtime": {"url": f"ws://127.0.0.1:{sim_port}/v1/realtime", "connect_timeout_s": 5},
        "admin": {"host": "127.0.0.1", "port": 0},
        "log": {"level": "warning"},
        # Loopback only, and the simulated callers do not sign (tests that check signatures set it).
        "twilio": {"validate_signature": False},
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
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Simulator + one worker (+ its admin port) in this trio run, on loopback, ports chosen freely.

    ``admin_token`` makes the admin port require ``Authorization: Bearer <token>``. ``env`` holds
    the secrets the service would read from its environment (``BRIDGE_TOOLS_SECRET``,
    ``TWILIO_AUTH_TOKEN``, variables named by ``{ env = ... }`` references); nothing is read from
    the test process's own environment.
    """
    from bridge.server.admin import AdminApp, LocalSessions

    async with open_simulator(options=simulator) as sim:
        settings = demo_settings(sim.port, overrides, records)
        environ = {"OPENAI_API_KEY": api_key, **(env or {})}
        if admin_token:
            environ["BRIDGE_ADMIN_TOKEN"] = admin_token
        # As the service does (and registering them with the log redactor, as it must).
        secrets = load_secrets(settings, environ)
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
                sender = None
                sending = trio.CancelScope()
                if store is not None and ctx.outbound is not None:
                    # As the supervisor does for the service: one sender delivers the outbox.
                    sender = WebhookSender(store, ctx.outbound, lambda: ctx.settings.webhooks)
                    nursery.start_soon(_run_in, sending, sender.run)
                try:
                    yield Stack(settings, ctx, sim, port, admin_port, store, stop, hooks, sender)
                finally:
                    stop.set()
                    sending.cancel()
        finally:
            if store is not None:
                store.close()
