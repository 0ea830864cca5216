"""A worker process: ``python -m bridge.server.workerproc --worker-id N --listen-fd F --control-fd C``.

Started by the supervisor (:mod:`bridge.server.supervisor`) with a clean interpreter. It inherits
the public listening socket (``--listen-fd``) and its end of a private control channel
(``--control-fd``, see :mod:`bridge.server.control`), and ``PROMETHEUS_MULTIPROC_DIR`` in its
environment, set by the supervisor before this interpreter started, so every metric this process
writes lands in the shared directory the supervisor's ``/metrics`` merges.

Signals: SIGTERM or SIGINT drains (refuse new calls with 503, let live calls finish for up to
``server.drain_timeout_s``, end the rest with reason ``drain``, exit 0); a second one ends the
live calls at once. SIGHUP re-reads the configuration file and swaps it in for calls that start
afterwards: every live call's :class:`~bridge.call.core.CallCore` captured its settings when it
started. Losing the supervisor (EOF on the control channel) also drains, so the calls in progress
finish instead of being cut.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import structlog
import trio

from bridge import log as bridge_log
from bridge.accounting.store import SqliteRecordStore
from bridge.call.runner import WorkerContext
from bridge.config import ConfigError, Settings, check_startup, format_startup_problems, load_secrets, load_settings
from bridge.server.admin import LocalSessions
from bridge.server.control import ChannelClosed, JSONObject, LineChannel
from bridge.server.hooks import WorkerHooks
from bridge.server.occupancy import CLOSED, MemoryOccupancy, Occupancy, SharedOccupancy
from bridge.server.worker import run_worker, trio_listener
from bridge.vocabulary import EndReason

log = structlog.get_logger("bridge.workerproc")

# Exit codes the supervisor understands (anything non-zero counts as a death and is restarted).
EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STARTUP = 3

# Settings a running worker cannot apply: they belong to sockets, files and processes set up at start.
RESTART_ONLY = (
    ("server", "host"),
    ("server", "port"),
    ("server", "workers"),
    ("server", "metrics_dir"),
    ("admin", "host"),
    ("admin", "port"),
    ("records", "path"),
)


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """Keys that changed between ``old`` and ``new`` but only take effect after a restart."""
    changed = []
    for section, key in RESTART_ONLY:
        if getattr(getattr(old, section), key) != getattr(getattr(new, section), key):
            changed.append(f"{section}.{key}")
    return changed


class WorkerProcess:
    def __init__(
        self,
        ctx: WorkerContext,
        listener: socket.socket,
        control: socket.socket,
        config_file: Path | None,
        occupancy: Occupancy | None = None,
        shared_listener: bool = True,
    ) -> None:
        self.ctx = ctx
        self.occupancy = occupancy
        self.shared_listener = shared_listener
        self.listener = listener
        self.control_sock = control
        self.config_file = config_file
        self.stop = trio.Event()
        self.sessions = LocalSessions(ctx)
        self.channel: LineChannel | None = None
        self._signals_seen = 0

    async def run(self) -> int:
        # Bound here rather than before trio.run so every task of this run inherits it.
        structlog.contextvars.bind_contextvars(worker=self.ctx.worker_id)
        self.channel = LineChannel(trio.SocketStream(trio.socket.from_stdlib_socket(self.control_sock)))
        # Open before anything else: a SIGTERM that arrives during start-up must drain, not kill.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, signals)
                nursery.start_soon(self._control)
                async with trio.open_nursery() as serving:
                    await serving.start(
                        partial(
                            run_worker,
                            self.ctx,
                            [trio_listener(self.listener)],
                            stop=self.stop,
                            occupancy=self.occupancy,
                            shared_listener=self.shared_listener,
                        )
                    )
                    log.info("worker_listening", pid=os.getpid())
                    await self._event({"event": "ready", "pid": os.getpid()})
                # run_worker returned: the drain is over and every call has been finalised.
                nursery.cancel_scope.cancel()
        await self.channel.aclose()
        log.info("worker_exit")
        return EXIT_OK

    async def _event(self, message: JSONObject) -> None:
        assert self.channel is not None
        try:
            await self.channel.send(message)
        except ChannelClosed:
            pass  # the control reader notices and starts the drain

    def _begin_drain(self, why: str) -> None:
        if self.stop.is_set():
            return
        # Refuse new calls from this instant, before run_worker's task gets to run.
        self.ctx.draining = True
        self.stop.set()
        log.info("drain_requested", why=why, live_calls=len(self.ctx.calls))

    async def _signals(self, signals: Any) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                await self._reload()
                continue
            self._signals_seen += 1
            if self._signals_seen == 1:
                self._begin_drain(signal.Signals(signum).name)
                await self._event({"event": "draining"})
            else:
                # Asked twice: stop waiting for calls to end by themselves.
                log.warning("drain_hurried", live_calls=len(self.ctx.calls))
                for call in list(self.ctx.calls.values()):
                    call.request_end(EndReason.DRAIN, "service is shutting down now")

    async def _reload(self) -> None:
        try:
            settings = await trio.to_thread.run_sync(load_settings, self.config_file)
            secrets = load_secrets(settings)
        except ConfigError as exc:
            log.error("reload_failed", error=str(exc))
            await self._event({"event": "reload_failed", "error": str(exc)})
            return
        check = check_startup(settings, secrets)
        if not check.ok:
            log.error("reload_failed", problems=list(check.problems))
            await self._event({"event": "reload_failed", "error": format_startup_problems(check)})
            return
        needs_restart = restart_only_changes(self.ctx.settings, settings)
        # Live calls keep the settings their CallCore captured at start; only new calls see these.
        self.ctx.reconfigure(settings, secrets)  # check_startup above built every carrier already
        if self.ctx.outbound is not None:
            tools_secret = secrets.tools_secret
            self.ctx.outbound.signing_secret = tools_secret.get_secret_value() if tools_secret else None
        bridge_log.setup(settings.log.level, settings.log.format)
        log.info("reloaded", needs_restart=needs_restart or None)
        await self._event({"event": "reloaded", "needs_restart": needs_restart})

    async def _control(self) -> None:
        assert self.channel is not None
        channel = self.channel
        try:
            while True:
                message = await channel.receive()
                await self._answer(channel, message)
        except ChannelClosed as exc:
            if not self.stop.is_set():
                log.warning("supervisor_gone", detail=str(exc))
                self._begin_drain("supervisor gone")

    async def _answer(self, channel: LineChannel, message: JSONObject) -> None:
        request_id = message.get("id")
        op = message.get("op")
        key = message.get("key")
        result: Any
        try:
            if op == "ping":
                result = {"pid": os.getpid(), "calls": len(self.ctx.calls), "draining": self.ctx.draining}
            elif op == "list":
                result = await self.sessions.list()
            elif op in ("get", "end") and isinstance(key, str):
                if op == "get":
                    result = await self.sessions.get(key)
                else:
                    result = await self.sessions.end(key)
                    if result is not None:
                        log.info("operator_end", session=key)
            else:
                await channel.send({"id": request_id, "error": f"bad request: op={op!r}"})
                return
        except Exception as exc:  # a bug answering one request must not end the control channel
            log.error("control_request_failed", op=op, error=repr(exc), exc_info=exc)
            await channel.send({"id": request_id, "error": repr(exc)})
            return
        await channel.send({"id": request_id, "result": result})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bridge.server.workerproc", description="one bridge worker (started by serve)")
    p.add_argument("--worker-id", type=int, required=True)
    p.add_argument("--listen-fd", type=int, required=True)
    p.add_argument("--control-fd", type=int, required=True)
    p.add_argument("--config", help="configuration file (the environment applies as well)")
    p.add_argument("--occupancy", help="the service's live-call counts, one slot per worker (made by serve)")
    p.add_argument("--listen-mode", choices=["shared", "reuseport"], default="shared")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_file = Path(args.config) if args.config else None
    try:
        settings = load_settings(config_file)
        secrets = load_secrets(settings)
    except ConfigError as exc:
        # The supervisor validated this configuration; it changed on disk since. Exit, and let the
        # supervisor's restart backoff and crash-loop limit decide what happens next.
        bridge_log.setup("info", "auto")
        structlog.get_logger("bridge.workerproc").error("worker_config_error", worker=args.worker_id, error=str(exc))
        return EXIT_CONFIG
    bridge_log.setup(settings.log.level, settings.log.format)
    worker_id: int = args.worker_id
    try:
        listener = socket.socket(fileno=args.listen_fd)
        control = socket.socket(fileno=args.control_fd)
        store = SqliteRecordStore(settings.records.path)
        store.open()
        occupancy: Occupancy = (
            SharedOccupancy(Path(args.occupancy)) if args.occupancy else MemoryOccupancy(worker_id + 1)
        )
    except Exception as exc:
        log.error("worker_start_failed", worker=worker_id, error=repr(exc))
        return EXIT_STARTUP
    ctx = WorkerContext(settings, secrets, hooks=WorkerHooks(store, worker_id=worker_id), worker_id=worker_id)
    # Everything imported so far lives for the whole process: keep it out of the collector's
    # scans, and collect the young generation less often. Full collections of 14-43 ms lined up
    # with the latency spikes of a loaded worker (BENCHMARKS.md, "One worker under load").
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    process = WorkerProcess(
        ctx, listener, control, config_file, occupancy=occupancy, shared_listener=args.listen_mode == "shared"
    )
    try:
        return trio.run(process.run)
    finally:
        occupancy.set(worker_id, CLOSED)
        occupancy.close()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
