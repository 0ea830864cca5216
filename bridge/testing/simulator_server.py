"""The Realtime simulator served over WebSocket with trio-websocket (the thin I/O shell).

All protocol decisions live in :mod:`bridge.testing.simulator`; this module only moves frames,
runs the per-connection tasks and applies the connection-level checks the real endpoint makes
before a session exists. Those follow live captures of ``wss://api.openai.com/v1/realtime``: the
upgrade always succeeds, then a bad request gets one ``error`` event and a close frame whose reason
is ``<error type>.<code>`` (3000 for authentication, 4000 for request shape: beta header, model).

It also carries out the faults :class:`SimulatorOptions` asks for, the ways a model socket really
fails: refused handshakes (HTTP 503 while the service is overloaded), a close with 1011, a TCP reset
without a close frame, and a peer that goes silent (no data, no pongs) until the client's keep-alive
gives up. It owns its TCP listener so that it can do the last two, which need the raw socket.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
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
    wrap_server_stream,
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
# Server events can exceed 1 MiB (https://github.com/BerriAI/litellm/issues/15747) and a client
# may append up to 15 MiB of base64.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
# The reader task drains get_message() continuously; a queue of 32 absorbs a burst of appends without
# stalling wsproto's reader, which would also stop it answering pings and close frames.
MESSAGE_QUEUE_SIZE = 32
HANDSHAKE_TIMEOUT_S = 10.0
# A silent session waits this long at most for the peer to give up before the socket is closed.
SILENT_HOLD_S = 600.0
CLOSE_AUTH = 3000
CLOSE_REQUEST = 4000
CLOSE_SERVER_ERROR = 1011


class _FaultStream(trio.abc.Stream):
    """The connection's TCP stream, with two faults: go silent (swallow every byte we would send,
    pongs included, while still reading) and reset (RST instead of an orderly FIN)."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.silent = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.silent:
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def reset(self) -> None:
        """Abort the connection: with SO_LINGER 0 the close sends RST and no close frame."""
        self.inner.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.inner.aclose()


@dataclass(slots=True)
class SimulatorServer:
    """A running simulator: bound ``port`` and every session it has served, finished ones included."""

    options: SimulatorOptions = field(default_factory=SimulatorOptions)
    port: int = 0
    sessions: list[SimulatedSession] = field(default_factory=list)
    rejected: list[tuple[str, int, str]] = field(default_factory=list)
    """Connections refused before a session existed: (path, close code or HTTP status, reason)."""
    connection_attempts: int = 0
    """WebSocket handshakes for the Realtime path so far (refused ones included)."""

    async def run(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[SimulatorServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started(self)`` once listening (``self.port`` is bound)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = int(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle_stream, listeners)
            task_status.started(self)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        wrapped = _FaultStream(stream)
        try:
            async with trio.open_nursery() as nursery:
                request = None
                with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
                    request = await wrap_server_stream(
                        nursery,
                        wrapped,
                        message_queue_size=MESSAGE_QUEUE_SIZE,
                        max_message_size=MAX_MESSAGE_SIZE,
                    )
                try:
                    if request is not None:
                        await self._handle(request, wrapped)
                finally:
                    nursery.cancel_scope.cancel()  # the connection's reader task
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(wrapped)

    async def _handle(self, request: WebSocketRequest, stream: _FaultStream) -> None:
        # One bad connection must never take the others (or the server) down: contain everything.
        try:
            await self._serve_connection(request, stream)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("simulator connection failed")

    async def _serve_connection(self, request: WebSocketRequest, stream: _FaultStream) -> None:
        target = urlsplit(request.path)
        # Azure's GA endpoint is the same protocol under /openai/v1/realtime.
        if target.path.rstrip("/") not in (REALTIME_PATH, "/openai" + REALTIME_PATH):
            self.rejected.append((request.path, 404, "not found"))
            await request.reject(404, body=b"Not Found\n")
            return
        self.connection_attempts += 1
        if self.connection_attempts <= self.options.refuse_connections:
            status = self.options.refuse_status
            self.rejected.append((request.path, status, "refused (simulated fault)"))
            log.info("simulator: refusing connection attempt %d with HTTP %d", self.connection_attempts, status)
            await request.reject(status, body=b"Service Unavailable (simulated)\n")
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

        session = SimulatedSession(
            self.options, model=model, created_at_unix=int(time.time()), index=len(self.sessions)
        )
        self.sessions.append(session)
        ws = await request.accept()
        try:
            await _run_session(ws, session, self.options)
            if session.fault is not None:
                await _carry_out_fault(ws, stream, session)
        except Exception:
            # A simulator bug: tell the client the way a server does (1011), then let _handle log it.
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await ws.aclose(CLOSE_SERVER_ERROR, "server_error")
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


async def _carry_out_fault(ws: WebSocketConnection, stream: _FaultStream, session: SimulatedSession) -> None:
    """Drop the socket the way ``session.fault`` says (the session has stopped producing events)."""
    log.info("simulator: dropping session %s (%s)", session.session_id, session.fault)
    if session.fault == "close":
        with trio.move_on_after(2):
            await ws.aclose(CLOSE_SERVER_ERROR, "server_error")
    elif session.fault == "reset":
        await stream.reset()
    else:  # silent: keep reading (so TCP does not push back) but send nothing, not even pongs
        stream.silent = True
        with trio.move_on_after(SILENT_HOLD_S):
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed:
                pass


async def _run_session(ws: WebSocketConnection, session: SimulatedSession, options: SimulatorOptions) -> None:
    """Reader, ticker and pinger for one connection; returns when either side ends the session."""
    # One lock around "compute events, send them": events from the reader and the ticker can never
    # interleave on the wire (a delta after its own response.done), and a slow client backpressures both.
    lock = trio.Lock()
    wake = trio.Event()
    skipped_seen = 0

    def ended() -> bool:
        return session.close_requested is not None or session.fault is not None

    async def send_all(events: list[str]) -> None:
        nonlocal skipped_seen
        # A trigger that could not call its tool is a test setup problem: say so where people look.
        for skipped in session.skipped_calls[skipped_seen:]:
            log.warning("simulator: did not call tool %r: %s", skipped.name, skipped.reason)
        skipped_seen = len(session.skipped_calls)
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
            if ended():
                return
            # Wake the ticker only when its deadline moved (a response started or was cancelled):
            # most frames are appends that change nothing, and a wake-up per frame is a task switch.
            if moved:
                wake.set()

    async def ticker() -> None:
        nonlocal wake
        while not ended():
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
