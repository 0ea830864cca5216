"""A WebSocket read and written by the call's own tasks (``server.websocket = "direct"``).

trio-websocket gives every connection a reader task that hands each message to the application
over a memory channel, and sends every message with its own lock, frame and ``send_all``: per
message two task switches, a channel, a lock and wsproto's general frame machinery. A call needs
none of that: its reader task is always reading anyway, so here that task reads the socket
itself, and whatever the call decides to send goes out with one write per batch.

* **Reading** (:meth:`DirectWebSocket.receive`): wait until the socket is readable, one
  ``read``, and every complete frame in it is parsed (:mod:`bridge.websocket.codec`); pings are
  answered and pongs and close frames handled on the way, the messages returned together.
* **Writing** (:meth:`DirectWebSocket.send`): the frames of all messages joined and written at
  once with a non-blocking ``write``; no checkpoint unless the kernel's buffer is full, in which
  case the rest waits in a backlog that later sends queue behind (so the order on the wire is
  the order of the calls), and the sender waits until it has gone (backpressure, as before).

On a plain TCP socket (the public port; ``ws://`` upstream) the socket's descriptor is read and
written directly (:class:`SocketTransport`); over TLS (``wss://`` upstream) the same framing runs
on trio's ``SSLStream`` (:class:`StreamTransport`). The opening handshakes are wsproto's
(h11-based), done once per connection.

RFC 6455: https://www.rfc-editor.org/rfc/rfc6455
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol
from urllib.parse import urlsplit

import trio
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError, generate_accept_token

from bridge.websocket import Closed
from bridge.websocket.codec import (
    OP_PING,
    OP_PONG,
    Close,
    FrameReader,
    FrameWriter,
    Ping,
    Pong,
    ProtocolError,
)

__all__ = [
    "DirectWebSocket",
    "HandshakeFailed",
    "SocketTransport",
    "StreamTransport",
    "accept_response",
    "open_client",
]

RECEIVE_BYTES = 65536
MAX_RESPONSE_HEAD = 16 * 1024
# How long a close frame sent on a protocol error may wait for a full send buffer.
FAIL_SEND_TIMEOUT_S = 1.0
ABNORMAL = 1006  # no close frame (RFC 6455 section 7.1.5)
NO_STATUS = 1005  # a close frame without a code


class Transport(Protocol):
    async def receive(self) -> bytes:
        """The next bytes (b"" at end of stream). Raises trio.BrokenResourceError or ClosedResourceError."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


class SocketTransport:
    """A plain TCP socket read and written by the calling task, without trio's per-call checkpoints."""

    __slots__ = ("_backlog", "_fd", "_flushing", "_sock", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._sock = stream.socket
        self._fd = stream.socket.fileno()
        self._backlog = bytearray()  # written by no one yet: the kernel's buffer was full
        self._flushing = trio.Lock()

    async def receive(self) -> bytes:
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            try:
                return os.read(self._fd, RECEIVE_BYTES)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"read failed: {exc!r}") from exc

    async def send(self, data: bytes) -> None:
        if not self._backlog:
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise trio.BrokenResourceError(f"write failed: {exc!r}") from exc
            if sent == len(data):
                return
            data = data[sent:]
        # The rest waits behind whatever is queued already, and this sender waits until it has gone.
        self._backlog += data
        async with self._flushing:
            while self._backlog:
                await trio.lowlevel.wait_writable(self._sock)
                try:
                    sent = os.write(self._fd, self._backlog)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(f"write failed: {exc!r}") from exc
                del self._backlog[:sent]

    async def aclose(self) -> None:
        await self.stream.aclose()


class StreamTransport:
    """Any trio stream (TLS): the stream's own receive_some and send_all."""

    __slots__ = ("_sending", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._sending = trio.StrictFIFOLock()

    async def receive(self) -> bytes:
        return bytes(await self.stream.receive_some(RECEIVE_BYTES))

    async def send(self, data: bytes) -> None:
        async with self._sending:
            await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)


class DirectWebSocket:
    """One WebSocket connection (either role) on a :class:`Transport`; see the module docstring."""

    def __init__(self, transport: Transport, *, client: bool, max_message: int, received: bytes = b"") -> None:
        self._io = transport
        self._reader = FrameReader(masked=not client, max_message=max_message)
        self._writer = FrameWriter(masked=client)
        self._early = received  # bytes that arrived with the handshake
        self._closed: Closed | None = None  # set once the connection is over (never raised: see _gone)
        self._close_sent = False
        self._peer_closed = trio.Event()  # the peer's close frame (or the end of the stream) was read
        self._reading = False  # a task is inside receive(): aclose must leave the reading to it
        self._draining = False  # aclose reads the peer's close itself: receive must wait for it
        self._pings: dict[bytes, trio.Event] = {}

    @property
    def closed(self) -> Closed | None:
        return self._closed

    # --- reading -----------------------------------------------------------------------------
    async def receive(self) -> list[str | bytes]:
        if self._closed is not None:
            raise self._gone()
        if self._draining:  # aclose is reading the rest; what it reads is dropped anyway
            await self._peer_closed.wait()
            raise self._gone(ABNORMAL)
        self._reading = True
        try:
            while True:
                if self._early:
                    data, self._early = self._early, b""
                else:
                    try:
                        data = await self._io.receive()
                    except _BROKEN:
                        data = b""
                if not data:
                    raise self._lost()
                messages = await self._take(data)
                if messages:
                    return messages
                if self._closed is not None:
                    raise self._gone()
        finally:
            self._reading = False

    async def _take(self, data: bytes) -> list[str | bytes]:
        """The messages in ``data``; control frames answered or noted on the way."""
        try:
            events = self._reader.feed(data)
        except ProtocolError as exc:
            await self._fail(exc.code, exc.reason)
            raise self._gone(exc.code, exc.reason) from None
        messages: list[str | bytes] = []
        for event in events:
            if type(event) is str or type(event) is bytes:
                messages.append(event)
            elif isinstance(event, Ping):
                await self._send_control(self._writer.frame(OP_PONG, event.payload))
            elif isinstance(event, Pong):
                self._answered(event.payload)
            elif isinstance(event, Close):
                await self._on_close(event)
        return messages

    async def _on_close(self, event: Close) -> None:
        code = NO_STATUS if event.code is None else event.code
        if not self._close_sent:  # the peer closes: echo its code (RFC 6455 section 5.5.1)
            self._close_sent = True
            await self._send_control(self._writer.close(event.code, ""))
        self._finish(Closed(code, event.reason or None))
        with trio.CancelScope(shield=True):
            await self._close_transport()

    def _lost(self) -> Closed:
        self._finish(Closed(ABNORMAL, None))
        return self._gone()

    def _gone(self, code: int | None = ABNORMAL, reason: str | None = None) -> Closed:
        """A new exception for the stored close (``code`` and ``reason`` if there is none yet).

        Never the stored one: an exception raised keeps the traceback of every raise, whose frames
        hold this socket and its call, a cycle only a full garbage collection frees. The worker
        runs that rarely (``gc.set_threshold``), so every ended call stayed in memory until then.
        """
        if self._closed is not None:
            code, reason = self._closed.code, self._closed.reason
        return Closed(code, reason)

    def _finish(self, closed: Closed) -> None:
        if self._closed is None:
            self._closed = closed
        self._peer_closed.set()
        for event in self._pings.values():
            event.set()
        self._pings.clear()

    async def _fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol: close frame with ``code``, then the transport."""
        self._finish(Closed(code, reason))
        if not self._close_sent:
            self._close_sent = True
            with trio.move_on_after(FAIL_SEND_TIMEOUT_S):
                await self._send_control(self._writer.close(code, reason))
        with trio.CancelScope(shield=True):
            await self._close_transport()

    # --- writing -----------------------------------------------------------------------------
    async def send(self, messages: Sequence[str | bytes]) -> None:
        if self._closed is not None:
            raise self._gone()
        if self._close_sent:
            raise Closed(None, "closing")
        frame = self._writer.message
        data = frame(messages[0]) if len(messages) == 1 else b"".join([frame(m) for m in messages])
        try:
            await self._io.send(data)
        except _BROKEN:
            raise self._lost() from None

    async def _send_control(self, data: bytes) -> None:
        try:
            await self._io.send(data)
        except _BROKEN:
            self._lost()

    async def ping(self) -> None:
        if self._closed is not None:
            raise self._gone()
        payload = os.urandom(4)
        answered = self._pings[payload] = trio.Event()
        await self._send_control(self._writer.frame(OP_PING, payload))
        await answered.wait()
        if self._closed is not None:
            raise self._gone()

    def _answered(self, payload: bytes) -> None:
        """A pong answers its ping and every earlier one (a peer may answer only the latest)."""
        if payload not in self._pings:
            return  # unsolicited (allowed by RFC 6455 section 5.5.3)
        for key in list(self._pings):
            self._pings.pop(key).set()
            if key == payload:
                break

    # --- closing -----------------------------------------------------------------------------
    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        try:
            if self._closed is None and not self._close_sent:
                self._close_sent = True
                await self._send_control(self._writer.close(code, reason))
                if self._closed is None:
                    await self._await_peer_close()
        finally:
            self._finish(Closed(code, reason or None))
            with trio.CancelScope(shield=True):
                await self._close_transport()

    async def _await_peer_close(self) -> None:
        if self._reading:  # the reader task will see the close frame
            await self._peer_closed.wait()
            return
        self._draining = True
        try:
            while self._closed is None:
                try:
                    data = await self._io.receive()
                except _BROKEN:
                    data = b""
                if not data:
                    self._lost()
                    return
                await self._take(data)  # messages after our close are dropped
        finally:
            self._draining = False
            self._peer_closed.set()

    async def _close_transport(self) -> None:
        try:
            await self._io.aclose()
        except Exception:  # closing must not fail: the connection is over either way
            pass


# --- opening handshakes ---------------------------------------------------------------------


def accept_response(key: str) -> bytes:
    """The server's ``101 Switching Protocols`` for a request whose Sec-WebSocket-Key is ``key``
    (RFC 6455 section 4.2.2; no subprotocol, no extension: none is offered to carriers)."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(key.strip().encode("ascii")) + b"\r\n\r\n"
    )


class HandshakeFailed(Exception):
    """The server refused the upgrade (``status``) or did not speak WebSocket."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@asynccontextmanager
async def open_client(
    url: str,
    *,
    extra_headers: list[tuple[bytes, bytes]],
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
    max_message: int,
    close_timeout: float = 2.0,
) -> AsyncIterator[DirectWebSocket]:
    """A client connection to ``url`` (ws:// or wss://), closed on exit (waiting at most ``close_timeout``)."""
    ws = await _connect(url, extra_headers, ssl_context, connect_timeout, max_message)
    try:
        yield ws
    finally:
        with trio.move_on_after(close_timeout) as scope:
            scope.shield = True
            await ws.aclose()


async def _connect(
    url: str,
    extra_headers: list[tuple[bytes, bytes]],
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    max_message: int,
) -> DirectWebSocket:
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise HandshakeFailed(f"not a WebSocket URL: {parts.scheme}://{parts.hostname or ''}")
    host = parts.hostname
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with trio.fail_after(timeout):
        tcp = await trio.open_tcp_stream(host, port)
        transport: SocketTransport | StreamTransport
        try:
            if secure:
                tls = trio.SSLStream(tcp, ssl_context or ssl.create_default_context(), server_hostname=host,
                                     https_compatible=True)  # fmt: skip
                await tls.do_handshake()
                transport = StreamTransport(tls)
            else:
                transport = SocketTransport(tcp)
            handshake = H11Handshake(ConnectionType.CLIENT)
            netloc = host if parts.port is None else f"{host}:{parts.port}"
            await transport.send(handshake.send(Request(host=netloc, target=target, extra_headers=extra_headers)))
            head, rest = await _response_head(transport)
            try:
                handshake.receive_data(head)
            except RemoteProtocolError as exc:
                raise HandshakeFailed(f"bad handshake response: {exc}") from None
            for event in handshake.events():
                if isinstance(event, AcceptConnection):
                    return DirectWebSocket(transport, client=True, max_message=max_message, received=rest)
                if isinstance(event, RejectConnection):
                    raise HandshakeFailed(f"upgrade refused with HTTP status {event.status_code}", event.status_code)
            raise HandshakeFailed("no WebSocket handshake response")
        except _BROKEN as exc:  # TLS failures come as BrokenResourceError too
            with trio.CancelScope(shield=True):
                await tcp.aclose()
            raise HandshakeFailed(f"connection failed: {exc!r} ({exc.__cause__!r})") from None
        except BaseException:
            with trio.CancelScope(shield=True):
                await tcp.aclose()
            raise


async def _response_head(transport: SocketTransport | StreamTransport) -> tuple[bytes, bytes]:
    """The response head (through the blank line) and the bytes after it (the first frames)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_RESPONSE_HEAD:
            raise HandshakeFailed("handshake response head too large")
        try:
            chunk = await transport.receive()
        except _BROKEN as exc:
            raise HandshakeFailed(f"connection lost during the handshake: {exc!r}") from None
        if not chunk:
            raise HandshakeFailed("connection closed during the handshake")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest
