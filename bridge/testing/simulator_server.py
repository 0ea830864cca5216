"""The Realtime simulator served over WebSocket with trio-websocket (the thin I/O shell).

All protocol decisions live in :mod:`bridge.testing.simulator`; this module only moves frames,
runs the per-connection tasks and applies the connection-level checks the real endpoint makes
before a session exists. Those follow live captures of ``wss://api.openai.com/v1/realtime``: the
upgrade always succeeds, then a bad request gets one ``error`` event and a close frame whose reason
is ``<error type>.<code>`` (3000 for authentication, 4000 for request shape: beta header, model).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qs, urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

from bridge.testing.simulator import SimulatedSession, SimulatorOptions, error_event

__all__ = [
    "REALTIME_PATH",
    "SimulatorOptions",
    "SimulatorServer",
    "open_simulator",
    "serve_simulator",
]

log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
# Server events can exceed 1 MiB (reference §6) and a client may append up to 15 MiB of base64.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
# The reader task drains get_message() continuously; a queue of 32 absorbs a burst of appends without
# stalling wsproto's reader, which would also stop it answering pings and close frames.
MESSAGE_QUEUE_SIZE = 32
CLOSE_AUTH = 3000
CLOSE_REQUEST = 4000


@dataclass(slots=True)
class SimulatorServer:
    """A running simulator: bound ``port`` and every session it has served, finished ones included."""

    options: SimulatorOptions = field(default_factory=SimulatorOptions)
    port: int = 0
    sessions: list[SimulatedSession] = field(default_factory=list)
    rejected: list[tuple[str, int, str]] = field(default_factory=list)
    """Connections refused before a session existed: (path, close code or HTTP status, reason)."""

    async def run(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[SimulatorServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started(self)`` once listening (``self.port`` is bound)."""
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    self._handle,
                    host,
                    port,
                    ssl_context=None,
                    max_message_size=MAX_MESSAGE_SIZE,
                    message_queue_size=MESSAGE_QUEUE_SIZE,
                )
            )
            self.port = int(server.port)
            task_status.started(self)

    async def _handle(self, request: WebSocketRequest) -> None:
        # trio-websocket's server dies with the first handler that raises: contain everything here so
        # one bad connection never takes the others (or the server) down.
        try:
            await self._serve_connection(request)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("simulator connection failed")

    async def _serve_connection(self, request: WebSocketRequest) -> None:
        target = urlsplit(request.path)
        # Azure's GA endpoint is the same protocol under /openai/v1/realtime.
        if target.path.rstrip("/") not in (REALTIME_PATH, "/openai" + REALTIME_PATH):
            self.rejected.append((request.path, 404, "not found"))
            await request.reject(404, body=b"Not Found\n")
            return
        query = parse_qs(target.query)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}

        bearer = headers.get("authorization", "")
        api_key = headers.get("api-key", "") or query.get("api-key", [""])[0]
        has_key = (bearer.lower().startswith("bearer ") and bearer[7:].strip() != "") or api_key.strip() != ""
        if not has_key:
            await self._refuse(
                request,
                CLOSE_AUTH,
                None,
                "Missing bearer or basic authentication in header",
                "invalid_request_error",
            )
            return
        if "openai-beta" in headers:
            await self._refuse(
                request,
                CLOSE_REQUEST,
                "beta_api_shape_disabled",
                "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
                "invalid_request_error.beta_api_shape_disabled",
            )
            return
        model = query.get("model", [""])[0]
        if not model:
            await self._refuse(
                request,
                CLOSE_REQUEST,
                "missing_model",
                "You must provide a model parameter, for example wss://api.openai.com/v1/realtime?model=gpt-realtime",
                "invalid_request_error.missing_model",
            )
            return

        session = SimulatedSession(self.options, model=model, created_at_unix=int(time.time()))
        self.sessions.append(session)
        ws = await request.accept()
        try:
            await _run_session(ws, session, self.options)
        except Exception:
            # A simulator bug: tell the client the way a server does (1011), then let _handle log it.
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await ws.aclose(1011, "server_error")
            raise
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(2):
                    await ws.aclose()
                session.closed_at = trio.current_time()
                if ws.closed is not None:
                    session.close_code = ws.closed.code

    async def _refuse(
        self, request: WebSocketRequest, code: int, error_code: str | None, message: str, reason: str
    ) -> None:
        self.rejected.append((request.path, code, reason))
        ws = await request.accept()
        try:
            await ws.send_message(error_event(error_code, message))
        finally:
            await ws.aclose(code, reason)


async def _run_session(ws: WebSocketConnection, session: SimulatedSession, options: SimulatorOptions) -> None:
    """Reader, ticker and pinger for one connection; returns when either side ends the session."""
    # One lock around "compute events, send them": events from the reader and the ticker can never
    # interleave on the wire (a delta after its own response.done), and a slow client backpressures both.
    lock = trio.Lock()
    wake = trio.Event()

    async def send_all(events: list[str]) -> None:
        for text in events:
            await ws.send_message(text)

    async def reader() -> None:
        while True:
            message = await ws.get_message()
            async with lock:
                before = session.next_deadline()
                now = trio.current_time()
                out = session.receive(message, now) if isinstance(message, str) else session.receive_bytes(message, now)
                await send_all(out)
                moved = session.next_deadline() != before
            if session.close_requested is not None:
                return
            # Wake the ticker only when its deadline moved (a response started or was cancelled):
            # most frames are appends that change nothing, and a wake-up per frame is a task switch.
            if moved:
                wake.set()

    async def ticker() -> None:
        nonlocal wake
        while session.close_requested is None:
            deadline = session.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await wake.wait()
            wake = trio.Event()
            if deadline is not None and trio.current_time() >= deadline:
                async with lock:
                    await send_all(session.tick(trio.current_time()))

    async def pinger() -> None:
        # The real API pings about every 20 s, so a client must cope with pings while idle. A missing
        # pong is not fatal here: the simulator exercises clients, it does not police them.
        if options.ping_interval_s <= 0:
            await trio.sleep_forever()
        while True:
            await trio.sleep(options.ping_interval_s)
            with trio.move_on_after(options.ping_interval_s):
                await ws.ping()

    async with lock:
        await send_all(session.connect(trio.current_time()))
    async with trio.open_nursery() as nursery:

        async def run_then_cancel(fn: Callable[[], Awaitable[None]]) -> None:
            # Whichever task ends first (client gone, session expired) ends the connection.
            try:
                await fn()
            except ConnectionClosed:
                pass
            finally:
                nursery.cancel_scope.cancel()

        nursery.start_soon(run_then_cancel, reader)
        nursery.start_soon(run_then_cancel, ticker)
        nursery.start_soon(run_then_cancel, pinger)
    if session.close_requested is not None:
        code, reason = session.close_requested
        with trio.move_on_after(2):
            await ws.aclose(code, reason)


async def serve_simulator(
    host: str,
    port: int,
    *,
    options: SimulatorOptions | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the Realtime simulator at ``ws://host:port/v1/realtime`` until cancelled.

    ``task_status.started(port)`` reports the bound port, so ``port=0`` works.
    """
    server = SimulatorServer(options or SimulatorOptions())
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.run, host, port))
        log.info("realtime simulator listening on %s:%d%s", host, server.port, REALTIME_PATH)
        task_status.started(server.port)


@asynccontextmanager
async def open_simulator(
    host: str = "127.0.0.1", port: int = 0, *, options: SimulatorOptions | None = None
) -> AsyncIterator[SimulatorServer]:
    """Run the simulator in-process for the block: ``async with open_simulator() as sim: sim.port``."""
    server = SimulatorServer(options or SimulatorOptions())
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.run, host, port))
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
