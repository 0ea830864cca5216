"""The supervisor: N trio worker processes on one public port, the admin port, systemd.

``bridge serve`` runs :func:`serve`. The supervisor

* binds the public port once and hands the listening socket to every worker (``pass_fds``); the
  workers ``accept()`` from the one shared queue. SO_REUSEPORT (one socket and queue per worker)
  is available as ``listen_mode="reuseport"`` for measurement; BENCHMARKS.md ("Workers") has the
  numbers behind the default;
* starts each worker as a fresh interpreter (``python -m bridge.server.workerproc``) with the
  configuration file path, its worker id and a private control channel (:mod:`.control`);
* restarts a worker that dies, with exponential backoff, after marking that worker's live call
  records ``worker_lost``; five deaths within a minute is a crash loop: it is reported (log and
  ``STATUS=``) and the service drains and exits non-zero rather than spinning;
* serves the admin port: ``/sessions`` merged over the workers' control channels, ``/metrics``
  merged from the workers' prometheus multiprocess files, ``/readyz`` true only while every worker
  is up and nobody drains, ``/healthz`` while it runs;
* drains on SIGTERM/SIGINT (``STOPPING=1``, SIGTERM to every worker, ``EXTEND_TIMEOUT_USEC`` while
  they finish their calls, exit 0 once they are gone) and forwards SIGHUP (configuration reload
  for new calls) after checking the new configuration itself;
* talks to systemd: ``READY=1`` once the public port is open and every worker reported ready,
  ``WATCHDOG=1`` at half of ``WATCHDOG_USEC``, ``STATUS=`` lines.

``PROMETHEUS_MULTIPROC_DIR`` must be in the environment before prometheus_client is imported,
so this module imports nothing that imports :mod:`bridge.metrics` at module level; :func:`serve`
sets the variable first and imports the rest afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
import trio

from bridge import log as bridge_log
from bridge.config import (
    ConfigError,
    Secrets,
    Settings,
    check_startup,
    config_path,
    format_startup_problems,
    load_secrets,
    load_settings,
)
from bridge.server.control import JSONObject, LineChannel, WorkerLink, WorkerUnavailable
from bridge.server.occupancy import CLOSED, SharedOccupancy
from bridge.server.sdnotify import SdNotifier

if TYPE_CHECKING:
    from bridge.accounting.records import CallRecord
    from bridge.accounting.store import OutboxEvent, SqliteRecordStore
    from bridge.server.admin import AdminApp

log = structlog.get_logger("bridge.supervisor")

ListenMode = Literal["shared", "reuseport"]

EXIT_OK = 0
EXIT_FAILED = 1  # crash loop, or the service could not start
EXIT_CONFIG = 2

# Crash loop: this many worker deaths within the window stops the service.
CRASH_LOOP_DEATHS = 5
CRASH_LOOP_WINDOW_S = 60.0
# Restart delay: BACKOFF_BASE_S * 2**(quick deaths - 1), at most BACKOFF_MAX_S. A worker that ran
# for STABLE_AFTER_S before dying starts over at the base delay.
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
# Liveness: a worker that misses this many pings in a row is hung (its event loop does not run)
# and is killed, which then counts as a death.
PING_INTERVAL_S = 2.0
PING_TIMEOUT_S = 3.0
HUNG_AFTER_MISSES = 6
# Admin queries fan out to every worker at once; one that does not answer in time is skipped.
QUERY_TIMEOUT_S = 1.0
# While draining: EXTEND_TIMEOUT_USEC every DRAIN_TICK_S, for the drain timeout plus this grace
# (the time workers need to finalise records and exit); after that remaining workers are killed.
DRAIN_TICK_S = 5.0
DRAIN_GRACE_S = 30.0
# At exit, the time given to deliver the webhooks of the last calls.
WEBHOOK_FLUSH_S = 5.0


def worker_count(settings: Settings) -> int:
    """``server.workers``, or the CPUs this process may run on (cgroup/affinity aware) when 0."""
    if settings.server.workers > 0:
        return settings.server.workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_metrics_dir(settings: Settings, environ: dict[str, str] | None = None) -> tuple[str, bool]:
    """Where the prometheus multiprocess files go, and whether it is a temporary directory we own.

    ``server.metrics_dir``; else ``PROMETHEUS_MULTIPROC_DIR`` if the environment already has one;
    else ``$RUNTIME_DIRECTORY/metrics`` (systemd's per-start directory; the first one if several
    are listed); else a fresh temporary directory, removed at exit.
    """
    env = dict(os.environ) if environ is None else environ
    if settings.server.metrics_dir is not None:
        return str(settings.server.metrics_dir), False
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        return env["PROMETHEUS_MULTIPROC_DIR"], False
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return os.path.join(runtime, "metrics"), False
    return tempfile.mkdtemp(prefix="bridge-metrics-"), True


def _exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "unknown"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Slot:
    """One worker position; its process is replaced when it dies, its id stays."""

    id: int
    listen: socket.socket
    proc: trio.Process | None = None
    link: WorkerLink | None = None
    pid: int | None = None
    ready: bool = False
    draining: bool = False
    calls: int = 0
    started_at: float = 0.0  # trio clock
    quick_deaths: int = 0
    missed_pings: int = 0
    deaths: int = 0


class MergedSessions:
    """The admin ``Sessions`` of the supervisor: every worker's live calls, asked over its channel.

    Each query goes to all workers at once with a short timeout; a worker that does not answer is
    skipped (and logged), so one stuck worker cannot stall the admin port.
    """

    def __init__(self, links: Callable[[], list[tuple[int, WorkerLink]]], timeout: float = QUERY_TIMEOUT_S) -> None:
        self.links = links
        self.timeout = timeout

    async def _ask(self, op: str, key: str | None = None) -> list[Any]:
        answers: list[Any] = []

        async def one(worker: int, link: WorkerLink) -> None:
            try:
                answers.append(await link.request(op, key, timeout=self.timeout))
            except WorkerUnavailable as exc:
                log.warning("worker_not_answering", worker=worker, op=op, error=str(exc))

        async with trio.open_nursery() as nursery:
            for worker, link in self.links():
                nursery.start_soon(one, worker, link)
        return answers

    async def list(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []
        for answer in await self._ask("list"):
            if isinstance(answer, list):
                calls.extend(c for c in answer if isinstance(c, dict))
        calls.sort(key=lambda c: (c.get("started_at") or 0, str(c.get("id"))))
        return calls

    async def _first(self, op: str, key: str) -> dict[str, Any] | None:
        for answer in await self._ask(op, key):
            if isinstance(answer, dict):
                return answer
        return None

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self._first("get", key)

    async def end(self, key: str) -> dict[str, Any] | None:
        # Call ids are unique across workers, so at most one worker finds and ends the call.
        return await self._first("end", key)


@dataclass
class Supervisor:
    settings: Settings
    secrets: Secrets
    config_file: Path | None
    slots: list[Slot]
    admin_socket: socket.socket
    store: SqliteRecordStore
    notifier: SdNotifier
    public_address: str
    render_metrics: Callable[[], tuple[bytes, str]]
    occupancy: SharedOccupancy | None = None
    listen_mode: ListenMode = "shared"
    stopping: bool = False
    exit_code: int = EXIT_OK
    announced: bool = False
    admin: AdminApp | None = None
    _deaths: list[float] = field(default_factory=list)
    _stop_event: trio.Event = field(default_factory=trio.Event)
    _nursery: trio.Nursery | None = None
    _outbound: Any = None  # the webhook sender's HTTP client (bridge.outbound.Outbound), set in run()

    def _ended_events(self, record: CallRecord) -> list[OutboxEvent]:
        return ended_events(self.settings, record)

    # --- state the admin port reads ------------------------------------------------------------
    def is_ready(self) -> bool:
        return not self.stopping and all(s.ready and s.proc is not None and not s.draining for s in self.slots)

    def live_links(self) -> list[tuple[int, WorkerLink]]:
        # Only workers that reported ready: one still importing could not answer in time anyway.
        return [(s.id, s.link) for s in self.slots if s.link is not None and s.proc is not None and s.ready]

    # --- main ------------------------------------------------------------------------------------
    async def run(self) -> int:
        from bridge.outbound import Outbound
        from bridge.server.admin import AdminApp
        from bridge.server.webhook_sender import WebhookSender
        from bridge.server.worker import serve_listeners, trio_listener

        # First: a SIGTERM during start-up must drain, not kill the supervisor and orphan workers.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            self.admin = AdminApp(
                self.settings,
                self.secrets,
                MergedSessions(self.live_links),
                ready=self.is_ready,
                render_metrics=self.render_metrics,
            )
            secret = self.secrets.tools_secret
            outbound = self._outbound = Outbound(secret.get_secret_value() if secret else None)
            async with outbound, trio.open_nursery() as nursery:
                self._nursery = nursery
                sender = WebhookSender(self.store, outbound, lambda: self.settings.webhooks)
                nursery.start_soon(self._signal_loop, signals)
                nursery.start_soon(self._watchdog)
                nursery.start_soon(sender.run)
                await nursery.start(
                    partial(serve_listeners, self.admin.handle, [trio_listener(self.admin_socket)], nursery)
                )
                self.notifier.status(f"starting {len(self.slots)} workers")
                log.info("supervisor_started", workers=len(self.slots), public=self.public_address, pid=os.getpid())
                self._set_alive_gauge()
                async with trio.open_nursery() as slots:
                    for slot in self.slots:
                        slots.start_soon(self._slot_loop, slot)
                    slots.start_soon(self._announce_ready)
                # Every slot loop has ended: we are stopping and every worker has exited. The last
                # calls' webhooks were queued as they ended: try them once before leaving (what
                # does not go now stays in the outbox for the next start).
                with trio.move_on_after(WEBHOOK_FLUSH_S):
                    await sender.deliver_due()
                nursery.cancel_scope.cancel()
        log.info("supervisor_exit", exit_code=self.exit_code)
        return self.exit_code

    async def _announce_ready(self) -> None:
        while not self.stopping:
            if all(s.ready for s in self.slots):
                self.announced = True
                status = f"serving on {self.public_address} with {len(self.slots)} workers"
                self.notifier.ready(status)
                log.info("ready", public=self.public_address, workers=len(self.slots))
                return
            await trio.sleep(0.05)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)

    # --- workers -----------------------------------------------------------------------------
    def _command(self, slot: Slot, control_fd: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "bridge.server.workerproc",
            "--worker-id",
            str(slot.id),
            "--listen-fd",
            str(slot.listen.fileno()),
            "--control-fd",
            str(control_fd),
        ]
        if self.occupancy is not None:
            cmd += ["--occupancy", str(self.occupancy.path), "--listen-mode", self.listen_mode]
        if self.config_file is not None:
            cmd += ["--config", str(self.config_file)]
        return cmd

    def _backoff(self, slot: Slot) -> float:
        if slot.quick_deaths == 0:
            return 0.0
        return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (slot.quick_deaths - 1)))

    async def _slot_loop(self, slot: Slot) -> None:
        while not self.stopping:
            delay = self._backoff(slot)
            if delay > 0:
                log.info("worker_restart_scheduled", worker=slot.id, delay_s=delay)
                with trio.move_on_after(delay):
                    await self._stop_event.wait()
                if self.stopping:
                    return
            await self._run_worker(slot)

    async def _run_worker(self, slot: Slot) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = await trio.lowlevel.open_process(
                self._command(slot, child.fileno()),
                pass_fds=(slot.listen.fileno(), child.fileno()),
                stdin=subprocess.DEVNULL,
                # Own session: a terminal's Ctrl-C reaches only the supervisor, which then drains
                # the workers in order, instead of every worker deciding on its own.
                start_new_session=True,
            )
        except OSError as exc:
            parent.close()
            log.error("worker_spawn_failed", worker=slot.id, error=repr(exc))
            await self._after_death(slot, None, None, time.time())
            return
        finally:
            child.close()
        slot.proc, slot.pid = proc, proc.pid
        slot.ready = slot.draining = False
        slot.calls = slot.missed_pings = 0
        slot.started_at = trio.current_time()
        link = WorkerLink(
            LineChannel(trio.SocketStream(trio.socket.from_stdlib_socket(parent))),
            partial(self._on_event, slot),
        )
        slot.link = link
        log.info("worker_started", worker=slot.id, pid=proc.pid)
        self._set_alive_gauge()
        if self.stopping:  # a stop arrived while we were spawning: this worker drains at once
            proc.send_signal(signal.SIGTERM)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.run)
                nursery.start_soon(self._pinger, slot, link, proc)
                await proc.wait()
                nursery.cancel_scope.cancel()
        finally:
            died_at = time.time()
            slot.proc = slot.link = None
            slot.ready = False
            await link.channel.aclose()
        await self._after_death(slot, proc.pid, proc.returncode, died_at)

    async def _after_death(self, slot: Slot, pid: int | None, returncode: int | None, died_at: float) -> None:
        from bridge import metrics

        if pid is not None:
            metrics.mark_worker_dead(pid)
        if self.occupancy is not None:
            self.occupancy.set(slot.id, CLOSED)  # its calls are gone; a replacement reopens the slot
        self._set_alive_gauge()
        # Before any replacement starts: its fresh calls are newer than died_at and stay live.
        try:
            lost = await trio.to_thread.run_sync(
                partial(self.store.mark_lost, slot.id, before=died_at, events_for=self._ended_events)
            )
        except Exception as exc:
            lost = -1
            log.error("mark_lost_failed", worker=slot.id, error=repr(exc))
        how = _exit_description(returncode)
        if self.stopping and returncode == 0:
            log.info("worker_exited", worker=slot.id, pid=pid)
            return
        if self.stopping:
            log.error("worker_died_while_draining", worker=slot.id, pid=pid, how=how, calls_lost=lost)
            return
        slot.deaths += 1
        now = trio.current_time()
        if pid is not None and now - slot.started_at >= STABLE_AFTER_S:
            slot.quick_deaths = 0
        slot.quick_deaths += 1
        self._deaths = [t for t in self._deaths if now - t < CRASH_LOOP_WINDOW_S] + [now]
        log.error("worker_died", worker=slot.id, pid=pid, how=how, calls_lost=lost)
        if len(self._deaths) >= CRASH_LOOP_DEATHS:
            message = (
                f"crash loop: {len(self._deaths)} worker deaths within {CRASH_LOOP_WINDOW_S:.0f} s "
                f"(last: worker {slot.id}, {how}); stopping"
            )
            log.error("crash_loop", deaths=len(self._deaths), window_s=CRASH_LOOP_WINDOW_S)
            self.exit_code = EXIT_FAILED
            self.notifier.status(message)
            self.begin_stop(message)
            return
        metrics.worker_restarts_total.inc()
        self.notifier.status(f"worker {slot.id} died ({how}); restarting in {self._backoff(slot):.2f} s")

    def _on_event(self, slot: Slot, message: JSONObject) -> None:
        event = message.get("event")
        if event == "ready":
            slot.ready = True
            log.info("worker_ready", worker=slot.id, pid=slot.pid)
            if self.announced and not self.stopping and all(s.ready for s in self.slots):
                self.notifier.status(f"serving on {self.public_address} with {len(self.slots)} workers")
        elif event == "draining":
            slot.draining = True
        elif event == "reloaded":
            log.info("worker_reloaded", worker=slot.id, needs_restart=message.get("needs_restart") or None)
        elif event == "reload_failed":
            log.error("worker_reload_failed", worker=slot.id, error=str(message.get("error"))[:500])
        else:
            log.warning("control_unknown_event", worker=slot.id, event=str(event)[:64])

    async def _pinger(self, slot: Slot, link: WorkerLink, proc: trio.Process) -> None:
        while True:
            await trio.sleep(PING_INTERVAL_S)
            if not slot.ready:
                continue  # still importing and binding; start-up is bounded by systemd, not us
            try:
                answer = await link.request("ping", timeout=PING_TIMEOUT_S)
            except WorkerUnavailable as exc:
                slot.missed_pings += 1
                log.warning("worker_ping_missed", worker=slot.id, missed=slot.missed_pings, error=str(exc))
                if slot.missed_pings >= HUNG_AFTER_MISSES:
                    log.error("worker_hung", worker=slot.id, pid=proc.pid, missed=slot.missed_pings)
                    proc.kill()
                    return
                continue
            slot.missed_pings = 0
            if isinstance(answer, dict) and isinstance(answer.get("calls"), int):
                slot.calls = answer["calls"]

    def _set_alive_gauge(self) -> None:
        from bridge import metrics

        metrics.workers_alive.set(sum(1 for s in self.slots if s.proc is not None))

    # --- signals, drain and reload --------------------------------------------------------------
    async def _signal_loop(self, signals: Any) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                await self.reload()
            else:
                self.begin_stop(f"{signal.Signals(signum).name} received")

    def _signal_workers(self, signum: int) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                try:
                    slot.proc.send_signal(signum)
                except OSError as exc:
                    log.warning("signal_failed", worker=slot.id, error=repr(exc))

    def begin_stop(self, reason: str) -> None:
        if self.stopping:
            # Asked again: tell the workers to stop waiting for their calls.
            log.warning("stop_hurried", reason=reason)
            self._signal_workers(signal.SIGTERM)
            return
        self.stopping = True
        self._stop_event.set()
        calls = sum(s.calls for s in self.slots if s.proc is not None)
        self.notifier.stopping(f"draining ({reason}): {calls} calls in progress")
        log.info("draining", reason=reason, calls=calls)
        self._signal_workers(signal.SIGTERM)
        if self._nursery is not None:
            self._nursery.start_soon(self._drain_watch)

    async def _drain_watch(self) -> None:
        """EXTEND_TIMEOUT_USEC and STATUS while workers drain; kill workers that overrun."""
        limit = trio.current_time() + self.settings.server.drain_timeout_s + DRAIN_GRACE_S
        while any(s.proc is not None for s in self.slots):
            alive = [s for s in self.slots if s.proc is not None]
            if trio.current_time() >= limit:
                log.error("drain_overrun", workers=[s.id for s in alive])
                for slot in alive:
                    if slot.proc is not None:
                        slot.proc.kill()
                return
            self.notifier.send(
                f"EXTEND_TIMEOUT_USEC={round((DRAIN_TICK_S * 2) * 1_000_000)}",
                f"STATUS=draining: {sum(s.calls for s in alive)} calls left on {len(alive)} workers",
            )
            await trio.sleep(DRAIN_TICK_S)

    async def reload(self) -> None:
        """SIGHUP: check the configuration here, then let each worker swap it in for new calls."""
        if self.stopping:
            return
        self.notifier.reloading()
        try:
            settings = await trio.to_thread.run_sync(load_settings, self.config_file)
            secrets = load_secrets(settings)
            check = check_startup(settings, secrets)
            if not check.ok:
                raise ConfigError(format_startup_problems(check))
        except ConfigError as exc:
            # Nothing is forwarded: the workers would fail the same way.
            log.error("reload_failed", error=str(exc))
            self.notifier.ready("configuration reload failed; still running the previous one")
            return
        from bridge.server.workerproc import restart_only_changes

        needs_restart = [k for k in restart_only_changes(self.settings, settings) if k != "server.workers"]
        if worker_count(settings) != len(self.slots) and settings.server.workers != self.settings.server.workers:
            needs_restart.append("server.workers")
        if needs_restart:
            log.warning("reload_needs_restart", keys=needs_restart)
        bridge_log.setup(settings.log.level, settings.log.format)
        # The supervisor's own copy (admin port, drain timeout). The worker count stays as started.
        settings.server.workers = self.settings.server.workers
        self.settings = settings
        if self.admin is not None:
            self.admin.settings = settings
            self.admin.secrets = secrets
            # A new token replaces the old one; a removed token does not switch auth off while the
            # admin port is still bound where the old configuration put it.
            if secrets.admin_token is not None:
                self.admin.token = secrets.admin_token.get_secret_value()
        if self._outbound is not None:
            tools_secret = secrets.tools_secret
            self._outbound.signing_secret = tools_secret.get_secret_value() if tools_secret else None
        self.secrets = secrets
        self._signal_workers(signal.SIGHUP)
        log.info("reloaded", needs_restart=needs_restart or None)
        self.notifier.ready(f"serving on {self.public_address} with {len(self.slots)} workers (reloaded)")


def ended_events(settings: Settings, record: CallRecord) -> list[OutboxEvent]:
    """call.ended for a record the supervisor ended (its worker died): the business hears of it too."""
    from bridge.accounting import webhooks

    if record.call_sid is None:
        return []
    return webhooks.call_events(record, "call.ended", settings.webhooks.endpoints, time.time())


def _render_from(path: str) -> Callable[[], tuple[bytes, str]]:
    """/metrics from the multiprocess directory (bridge.metrics.render_latest when possible)."""
    from bridge import metrics

    if metrics.multiprocess_enabled():
        return metrics.render_latest

    def render() -> tuple[bytes, str]:
        # bridge.metrics was imported before we could set PROMETHEUS_MULTIPROC_DIR (an embedding
        # program did): the workers' files are still merged, only the supervisor's own are missing.
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess
        from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

        registry = CollectorRegistry(support_collectors_without_names=True)
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry), str(CONTENT_TYPE_PLAIN_0_0_4)

    return render


def _public_sockets(settings: Settings, count: int, mode: ListenMode) -> list[socket.socket]:
    """One shared listening socket for every worker, or one SO_REUSEPORT socket each."""
    from bridge.server.worker import make_listen_socket

    host, port = settings.server.host, settings.server.port
    first = make_listen_socket(host, port, reuse_port=mode == "reuseport")
    if mode == "shared":
        return [first] * count
    port = first.getsockname()[1]  # with port 0 the others must join the port the first one got
    return [first] + [make_listen_socket(host, port, reuse_port=True) for _ in range(count - 1)]


def serve(
    settings: Settings,
    config_file: Path | None = None,
    *,
    listen_mode: ListenMode = "shared",
    notifier: SdNotifier | None = None,
) -> int:
    """Run the service until it is stopped; the process exit code."""
    bridge_log.setup(settings.log.level, settings.log.format)
    notifier = notifier or SdNotifier()
    try:
        secrets = load_secrets(settings)
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        return EXIT_CONFIG
    check = check_startup(settings, secrets)  # the same rules `bridge check-config` applies
    if not check.ok:
        for problem in check.problems:
            log.error("config_error", error=problem)
        notifier.status(format_startup_problems(check).replace("\n", " "))
        return EXIT_CONFIG
    for warning in check.warnings:
        log.warning("insecure_configuration", warning=warning)

    metrics_dir, temporary = choose_metrics_dir(settings)
    already = sys.modules.get("bridge.metrics")
    if already is not None and already.multiprocess_enabled():
        metrics_dir, temporary = str(os.environ["PROMETHEUS_MULTIPROC_DIR"]), False
    os.makedirs(metrics_dir, exist_ok=True)
    # Before bridge.metrics (prometheus_client) is first imported here, and inherited by workers.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # Every process of the service takes this lock around each log line (see bridge.log).
    os.environ[bridge_log.LOCK_FILE_ENV] = os.path.join(metrics_dir, "log.lock")
    bridge_log.setup(settings.log.level, settings.log.format)
    from bridge import metrics
    from bridge.accounting.store import SqliteRecordStore

    if not metrics.multiprocess_enabled():
        log.warning("metrics_imported_too_early", detail="the supervisor's own metrics will be missing")
    metrics.prepare_multiprocess_dir(metrics_dir)

    count = worker_count(settings)
    sockets: list[socket.socket] = []
    store = SqliteRecordStore(settings.records.path)
    # Every worker's live calls, for admission across workers (see bridge.server.occupancy).
    occupancy = SharedOccupancy(Path(metrics_dir) / "occupancy", create_slots=count)
    try:
        try:
            store.open()
            # Whatever is still live was left by an earlier run that died without finalising it.
            lost = store.mark_lost(events_for=partial(ended_events, settings))
        except Exception as exc:
            log.error("records_unavailable", path=str(settings.records.path), error=repr(exc))
            notifier.status(f"cannot open the call records at {settings.records.path}: {exc}")
            return EXIT_FAILED
        if lost:
            log.warning("records_marked_lost", count=lost, why="live at start: left by an earlier run")
        from bridge.server.worker import make_listen_socket

        try:
            sockets = _public_sockets(settings, count, listen_mode)
            admin_socket = make_listen_socket(settings.admin.host, settings.admin.port)
        except OSError as exc:
            log.error("cannot_listen", error=repr(exc))
            notifier.status(f"cannot listen: {exc}")
            return EXIT_FAILED
        sockets.append(admin_socket)
        host, port = sockets[0].getsockname()[:2]
        supervisor = Supervisor(
            settings=settings,
            secrets=secrets,
            config_file=config_file,
            slots=[Slot(i, sockets[i]) for i in range(count)],
            admin_socket=admin_socket,
            store=store,
            notifier=notifier,
            public_address=f"{host}:{port}",
            render_metrics=_render_from(metrics_dir),
            occupancy=occupancy,
            listen_mode=listen_mode,
        )
        log.info("listening", public=f"{host}:{port}", admin=str(admin_socket.getsockname()[:2]), mode=listen_mode)
        return trio.run(supervisor.run)
    finally:
        for sock in {id(s): s for s in sockets}.values():
            sock.close()
        store.close()
        occupancy.close()
        if temporary:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridge.server.supervisor``: ``bridge serve`` plus the socket mode (benchmarks)."""
    p = argparse.ArgumentParser(prog="bridge.server.supervisor")
    p.add_argument("--config")
    p.add_argument("--workers", type=int)
    p.add_argument("--listen", choices=["shared", "reuseport"], default="shared")
    args = p.parse_args(argv)
    path = config_path(args.config)
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.workers is not None:
        settings.server.workers = args.workers
    mode: ListenMode = "reuseport" if args.listen == "reuseport" else "shared"
    return serve(settings, config_file=path, listen_mode=mode)


if __name__ == "__main__":
    sys.exit(main())
