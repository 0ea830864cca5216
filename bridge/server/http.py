"""A minimal HTTP/1.1 layer on h11 for the few plain requests bridge answers.

trio-websocket cannot answer plain HTTP (its handshake rejects a request without ``Upgrade``),
and a carrier is configured with one base URL, so the public port reads each request head itself:
upgrades go to trio-websocket with the bytes already read, everything else is answered here. One
request per connection (``Connection: close``): webhooks and scrapes are rare, and it keeps this
small.

Bad traffic is bounded here: the head must arrive whole within :attr:`Limits.head_timeout_s`
(a total deadline, so a client sending one byte a second is cut off at it, not kept alive by
each byte) and within :attr:`Limits.max_head_bytes` (h11's own ``max_incomplete_event_size``,
which fails with status hint 431). Each refusal carries a ``kind`` for the metrics.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import h11
import trio

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Limits:
    """How long and how large a request head (and a body) may be."""

    head_timeout_s: float = HEAD_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES
    max_body_bytes: int = MAX_BODY_BYTES


DEFAULT_LIMITS = Limits()


class BadRequest(Exception):
    """A request refused before it was understood; ``kind`` labels the refusal metric:
    ``head_timeout``, ``head_too_large``, ``bad_request``, ``body_timeout`` or ``body_too_large``."""

    def __init__(self, status: int, reason: str, kind: str = "bad_request") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    raw: bytes  # every byte read so far (head, and body if read)
    body: bytes = b""
    trailing: bytes = b""  # bytes read after the head (an upgraded connection's first frames)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def is_websocket(self) -> bool:
        return (
            "websocket" in self.headers.get("upgrade", "").lower()
            and "upgrade" in self.headers.get("connection", "").lower()
        )

    def handshake_problem(self) -> str | None:
        """Why this upgrade cannot become a WebSocket (RFC 6455 section 4.2.1), or None.

        wsproto answers such a request with a 400 itself but then never hands the handshake over,
        so it is checked here first and refused at once instead of at the time limit.
        """
        if self.method != "GET":
            return "a WebSocket upgrade must be a GET"
        if self.headers.get("sec-websocket-version", "").strip() != "13":
            return "Sec-WebSocket-Version must be 13"
        if not self.headers.get("sec-websocket-key", "").strip():
            return "Sec-WebSocket-Key is missing"
        return None


class PrefixedStream(trio.abc.Stream):
    """A stream that first replays bytes already read from the socket (for the WS handshake)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            if max_bytes is None or max_bytes >= len(self._prefix):
                data, self._prefix = self._prefix, b""
            else:
                data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream, raw: bytearray, where: str) -> Any:
    """The next h11 event, reading from the socket as needed (``raw`` keeps every byte read)."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:  # h11's max_incomplete_event_size was passed
                raise BadRequest(431, f"{where} too large", "head_too_large") from None
            raise BadRequest(400, f"malformed {where}: {exc}") from None
        if event is not h11.NEED_DATA:
            return event
        data = bytes(await stream.receive_some(4096))
        if not data:
            raise BadRequest(400, f"connection closed in the {where}")
        raw += data
        conn.receive_data(data)


async def read_request(stream: trio.abc.Stream, limits: Limits = DEFAULT_LIMITS) -> Request:
    """Read one request head; raises BadRequest on garbage, size or time limits."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
    raw = bytearray()
    with trio.move_on_after(limits.head_timeout_s):
        event = await _next_event(conn, stream, raw, "request head")
        if not isinstance(event, h11.Request):
            raise BadRequest(400, "unexpected HTTP event")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            val = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
        req = Request(event.method.decode(), event.target.decode("latin-1"), headers, bytes(raw))
        req.trailing = conn.trailing_data[0]
        req._h11 = conn  # type: ignore[attr-defined]
        return req
    raise BadRequest(408, "request head not received in time", "head_timeout")


async def read_body(stream: trio.abc.Stream, request: Request, limits: Limits = DEFAULT_LIMITS) -> bytes:
    conn: h11.Connection = request._h11  # type: ignore[attr-defined]
    body = bytearray()
    with trio.move_on_after(limits.head_timeout_s):
        while True:
            event = await _next_event(conn, stream, bytearray(), "body")
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limits.max_body_bytes:
                    raise BadRequest(413, "request body too large", "body_too_large")
            elif isinstance(event, h11.EndOfMessage):
                request.body = bytes(body)
                return request.body
            else:
                raise BadRequest(400, "unexpected HTTP event in body")
    raise BadRequest(408, "request body not received in time", "body_timeout")


_REASONS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


def response_bytes(
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", extra: dict[str, str] | None = None
) -> bytes:
    head = [f"HTTP/1.1 {status} ".encode() + _REASONS.get(status, b"Status")]
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Connection": "close",
        "Cache-Control": "no-store",
        **(extra or {}),
    }
    for k, v in headers.items():
        head.append(f"{k}: {v}".encode("latin-1"))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def send_response(
    stream: trio.abc.Stream,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra: dict[str, str] | None = None,
) -> None:
    with trio.move_on_after(5):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(response_bytes(status, body, content_type, extra))
