"""A worker: one trio program serving the public port (and, alone, the admin port)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import structlog
import trio

from bridge.call.runner import WorkerContext, tick_calls
from bridge.outbound import Outbound
from bridge.server.frontdoor import FrontDoor
from bridge.server.occupancy import Occupancy
from bridge.vocabulary import EndReason

log = structlog.get_logger("bridge.worker")

Handler = Callable[[trio.SocketStream], Awaitable[None]]

# How often a worker that stepped back from the shared socket looks at the others' counts again,
# and how often one waiting in accept() does (another worker's calls may end without notice).
ACCEPT_RECHECK_S = 0.05
ACCEPT_WAIT_S = 0.25
# A worker with more calls than another lets a connection wait this long for that one to take
# it (it normally does within a millisecond) before taking it itself: the other may be busy.
STEP_BACK_S = 0.03


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


class AcceptGate:
    """Whether this worker takes the next connection from a listening socket it shares.

    Every worker ``accept()``s from the one shared queue, so the first to ask gets the next
    connection: whichever event loop happens to wake first, which spread six calls 5:1 as often
    as 3:3. So the decision uses every worker's live calls (:mod:`bridge.server.occupancy`):

    * a full worker stops asking until it has room again, or until nobody has (then it answers
      them: the overflow document or a 503);
    * a worker with more calls than another (``calls_ahead``) waits until a connection is
      pending, gives the less busy worker :data:`STEP_BACK_S` to take it, and takes it itself
      only if it is still there (the other may be busy);
    * the others' counts change without notice, so every wait is bounded and decided again.

    ``changed`` is called when this worker's own count changes, to stop an accept in progress.
    """

    def __init__(
        self,
        takes_new_connections: Callable[[], bool],
        has_room: Callable[[], bool],
        calls_ahead: Callable[[], int] = lambda: 0,
    ) -> None:
        self.takes_new_connections = takes_new_connections
        self.has_room = has_room
        self.calls_ahead = calls_ahead
        self._waiting: trio.CancelScope | None = None

    def changed(self) -> None:
        if self._waiting is not None:
            self._waiting.cancel()  # decide again with the new count

    async def accept(self, listener: trio.SocketListener) -> trio.SocketStream | None:
        """The next connection, or None when it is time to decide again."""
        if not self.takes_new_connections():
            await trio.sleep(ACCEPT_RECHECK_S)
            return None
        if self.calls_ahead() > 0:
            return await self._after_the_others(listener)
        with trio.CancelScope() as scope:
            # Every worker is full: answer connections, but look again soon, as another
            # worker's calls may end; otherwise look again now and then all the same.
            wait = ACCEPT_WAIT_S if self.has_room() else ACCEPT_RECHECK_S
            scope.deadline = trio.current_time() + wait
            self._waiting = scope
            try:
                return await listener.accept()
            finally:
                self._waiting = None
        return None

    async def _after_the_others(self, listener: trio.SocketListener) -> trio.SocketStream | None:
        with trio.move_on_after(ACCEPT_RECHECK_S) as waited:
            await trio.lowlevel.wait_readable(listener.socket)  # a connection is pending
        if waited.cancelled_caught:
            return None
        await trio.sleep(STEP_BACK_S)
        # Still pending (accept() tries at once): the less busy worker did not take it.
        with trio.move_on_after(0.001):
            return await listener.accept()
        return None


async def _accept_loop(
    listener: trio.SocketListener, handler: Handler, nursery: trio.Nursery, gate: AcceptGate | None = None
) -> None:
    """Like trio.serve_listeners, but a handler can never crash the loop."""
    while True:
        try:
            stream = await listener.accept() if gate is None else await gate.accept(listener)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                log.error("accept_failed", error=repr(exc))
                await trio.sleep(0.1)
                continue
            raise
        except trio.ClosedResourceError:
            return
        if stream is not None:
            nursery.start_soon(handler, stream)


async def serve_listeners(
    handler: Handler,
    listeners: Sequence[trio.SocketListener],
    connections: trio.Nursery,
    *,
    gate: AcceptGate | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on every listener until cancelled; connection tasks live in ``connections``.

    Cancelling this task stops accepting (drain) without touching live connections.
    """
    async with trio.open_nursery() as accept_nursery:
        for listener in listeners:
            accept_nursery.start_soon(_accept_loop, listener, handler, connections, gate)
        task_status.started()
    # (never reached until cancelled)


async def run_worker(
    ctx: WorkerContext,
    public: Sequence[trio.SocketListener],
    *,
    extra: Sequence[tuple[Handler, Sequence[trio.SocketListener]]] = (),
    stop: trio.Event | None = None,
    occupancy: Occupancy | None = None,
    shared_listener: bool = True,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stop`` is set, then drain: refuse new calls, wait for live ones up to
    ``server.drain_timeout_s``, end the rest cleanly (their records say ``drain``).

    ``occupancy`` is the service's view of every worker's live calls (one slot per worker, this
    one's is ``ctx.worker_id``); alone, a worker keeps a view of its own. ``shared_listener``
    says the public socket is shared with other workers, so a full worker steps back from it.
    """
    door = FrontDoor(ctx, occupancy)
    gate = AcceptGate(door.takes_new_connections, door.has_room, door.calls_ahead) if shared_listener else None
    if gate is not None:
        door.on_change = gate.changed
    stop = trio.Event() if stop is None else stop
    secret = ctx.secrets.tools_secret
    async with Outbound(secret.get_secret_value() if secret else None) as outbound, trio.open_nursery() as connections:
        ctx.outbound = outbound
        connections.start_soon(tick_calls, ctx)  # the calls' clock, until the last call is gone
        async with trio.open_nursery() as acceptors:
            await acceptors.start(partial(serve_listeners, door.handle, public, connections, gate=gate))
            for handler, listeners in extra:
                await acceptors.start(partial(serve_listeners, handler, listeners, connections))
            task_status.started()
            await stop.wait()
            ctx.draining = True
            door.publish()  # other workers now see this one as closed to new calls
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
