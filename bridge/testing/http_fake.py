"""A tiny HTTP/1.1 server on trio and h11 for the fakes tests and the demo run on loopback.

It records every request as it arrived (method, target, headers, raw body) and answers with what
a handler returns: a status and body, optionally after a delay, or no answer at all (hold the
request until the client gives up, or close the connection). Keep-alive works the way an HTTP
client with a connection pool expects (several requests per connection, in order). While an
answer is held back the server keeps watching the socket, so a client that gives up (a timeout,
a cancelled call) is seen and recorded as ``disconnected_at``.

Not a general web server: one handler, bodies up to ``max_body`` bytes, no TLS, no chunked
answers (every answer has a Content-Length).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import h11
import trio

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
READ_SIZE = 65536


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    target: str  # path and query, as sent
    headers: list[tuple[str, str]]  # in order; names lower-cased (as h11 gives them)
    body: bytes  # the raw body, byte for byte (signatures are computed over it)
    received_at: float  # trio clock, when the whole request had arrived
    connection: int  # 1-based number of the TCP connection it came on (reuse shows as repeats)
    status: int | None = None  # what the server answered; None: no answer (held or closed)
    answered_at: float | None = None
    disconnected_at: float | None = None  # the client went away while the answer was held back
    notes: dict[str, Any] = field(default_factory=dict)  # what the handler wants to remember

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case); repeated headers are joined with ", "."""
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body)


@dataclass
class Reply:
    """What to answer. ``body``: bytes as they are, str as UTF-8 text, anything else as JSON."""

    status: int = 200
    body: Any = b""
    content_type: str | None = None  # default from the body's kind
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0  # wait this long before answering (the client may give up meanwhile)
    action: Literal["answer", "hang", "close"] = "answer"
    """``hang``: never answer (until the client disconnects or the server stops);
    ``close``: close the connection without answering."""

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes | bytearray):
            return bytes(self.body), self.content_type or "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


Handler = Callable[[RecordedRequest], Reply | Awaitable[Reply]]


class FakeHttpServer:
    """Serve ``handler`` on loopback; ``requests`` holds every request received, in order."""

    def __init__(self, handler: Handler, *, max_body: int = MAX_BODY, name: str = "fake http") -> None:
        self.handler = handler
        self.max_body = max_body
        self.name = name
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self.connections = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(
        self, host: str = "127.0.0.1", port: int = 0, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = int(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started()

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        number = self.connections
        try:
            await self._serve(stream, number)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-answer
        except Exception:
            log.exception("%s: connection %d failed", self.name, number)
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream, number: int) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        while True:
            try:
                request = await self._read_request(conn, stream, number)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, stream, Reply(exc.error_status_hint, f"bad request: {exc}\n"))
                return
            if request is None:
                return  # the client closed the connection between requests
            self.requests.append(request)
            outcome = self.handler(request)
            reply = await outcome if inspect.isawaitable(outcome) else outcome
            if reply.delay_s > 0 or reply.action == "hang":
                wait = math.inf if reply.action == "hang" else reply.delay_s
                if await self._client_left_within(conn, stream, wait):
                    request.disconnected_at = trio.current_time()
                    return
            if reply.action in ("close", "hang"):
                return
            await self._send(conn, stream, reply)
            request.status = reply.status
            request.answered_at = trio.current_time()
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return  # the client did not finish sending its request body; do not guess

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream, number: int
    ) -> RecordedRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(READ_SIZE)
                conn.receive_data(data)  # b"" is EOF
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    raise h11.RemoteProtocolError("body too large", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return RecordedRequest(
                    method=head.method.decode("ascii", "replace"),
                    target=head.target.decode("ascii", "replace"),
                    headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers],
                    body=bytes(body),
                    received_at=trio.current_time(),
                    connection=number,
                )

    async def _client_left_within(self, conn: h11.Connection, stream: trio.SocketStream, seconds: float) -> bool:
        """Hold the answer for ``seconds``; True as soon as the client closes its side."""
        with trio.move_on_after(seconds):
            while True:
                try:
                    data = await stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return True
                if not data:
                    return True
                conn.receive_data(data)  # a pipelined next request: kept for its turn
        return False

    async def _send(self, conn: h11.Connection, stream: trio.SocketStream, reply: Reply) -> None:
        body, content_type = reply.encoded()
        headers = [("content-type", content_type), ("content-length", str(len(body))), *reply.headers]
        data = conn.send(h11.Response(status_code=reply.status, headers=headers))
        data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)


@asynccontextmanager
async def open_http_server(handler: Handler, *, name: str = "fake http") -> AsyncIterator[FakeHttpServer]:
    """Run a :class:`FakeHttpServer` on a free loopback port for the block."""
    server = FakeHttpServer(handler, name=name)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.run, "127.0.0.1", 0))
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


__all__ = ["FakeHttpServer", "Handler", "RecordedRequest", "Reply", "open_http_server"]
