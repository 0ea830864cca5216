"""A worker: one trio program serving the public port (and, alone, the admin port)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import structlog
import trio

from bridge.call.runner import WorkerContext
from bridge.outbound import Outbound
from bridge.server.frontdoor import FrontDoor
from bridge.vocabulary import EndReason

log = structlog.get_logger("bridge.worker")

Handler = Callable[[trio.SocketStream], Awaitable[None]]


def make_listen_socket(host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024) -> socket.socket:
    """A bound, listening stdlib socket (so a supervisor can hand it to workers)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(addr)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def trio_listener(sock: socket.socket) -> trio.SocketListener:
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


async def _accept_loop(listener: trio.SocketListener, handler: Handler, nursery: trio.Nursery) -> None:
    """Like trio.serve_listeners, but a handler can never crash the loop."""
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                log.error("accept_failed", error=repr(exc))
                await trio.sleep(0.1)
                continue
            raise
        except trio.ClosedResourceError:
            return
        nursery.start_soon(handler, stream)


async def serve_listeners(
    handler: Handler,
    listeners: Sequence[trio.SocketListener],
    connections: trio.Nursery,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on every listener until cancelled; connection tasks live in ``connections``.

    Cancelling this task stops accepting (drain) without touching live connections.
    """
    async with trio.open_nursery() as accept_nursery:
        for listener in listeners:
            accept_nursery.start_soon(_accept_loop, listener, handler, connections)
        task_status.started()
    # (never reached until cancelled)


async def run_worker(
    ctx: WorkerContext,
    public: Sequence[trio.SocketListener],
    *,
    extra: Sequence[tuple[Handler, Sequence[trio.SocketListener]]] = (),
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stop`` is set, then drain: refuse new calls, wait for live ones up to
    ``server.drain_timeout_s``, end the rest cleanly (their records say ``drain``)."""
    door = FrontDoor(ctx)
    stop = trio.Event() if stop is None else stop
    secret = ctx.secrets.tools_secret
    async with Outbound(secret.get_secret_value() if secret else None) as outbound, trio.open_nursery() as connections:
        ctx.outbound = outbound
        async with trio.open_nursery() as acceptors:
            await acceptors.start(partial(serve_listeners, door.handle, public, connections))
            for handler, listeners in extra:
                await acceptors.start(partial(serve_listeners, handler, listeners, connections))
            task_status.started()
            await stop.wait()
            ctx.draining = True
            log.info("draining", live_calls=len(ctx.calls))
            # Stop accepting on the public port only after refusals are in place; the admin
            # listeners keep serving /readyz (false) and /sessions during the drain.
            await drain(ctx)
            acceptors.cancel_scope.cancel()
        connections.cancel_scope.cancel()


async def drain(ctx: WorkerContext) -> None:
    deadline = trio.current_time() + ctx.settings.server.drain_timeout_s
    while ctx.calls and trio.current_time() < deadline:
        await trio.sleep(0.1)
    for call in list(ctx.calls.values()):
        call.request_end(EndReason.DRAIN, "service is shutting down")
    with trio.move_on_after(5):
        while ctx.calls:
            await trio.sleep(0.05)
