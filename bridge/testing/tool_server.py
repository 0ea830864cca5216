"""A business's tool endpoint, faked on loopback: what bridge's webhook tools call in tests and the demo.

Each path answers as configured (:class:`Route`): text or JSON, a status, a delay, never (hang
until the client gives up), or by closing the connection. Every request is recorded byte for
byte (:attr:`ToolServer.requests`). With a ``secret`` the server checks bridge's request
signature and answers 401 to a missing, wrong or stale one, the way a tool author should:

    X-Bridge-Timestamp: <unix seconds>
    X-Bridge-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>" under the secret>

:func:`check_signature` is that check as a standalone function (stdlib only, constant-time
comparison, a tolerance window against replays), written to be shown to tool authors.

``ORDER_STATUS`` is a ready-made tool for the demo: given ``{"order_id": "..."}`` it answers a
short status text.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import trio

from bridge.testing.http_fake import FakeHttpServer, RecordedRequest, Reply

TIMESTAMP_HEADER: Final = "X-Bridge-Timestamp"
SIGNATURE_HEADER: Final = "X-Bridge-Signature"
DEFAULT_TOLERANCE_S: Final = 300.0


# ------------------------------------------------------------------------------------ signatures


def check_signature(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> str | None:
    """Check a bridge tool request's signature; returns None when it is valid, else why not.

    ``body`` is the raw request body exactly as received (before any JSON parsing),
    ``timestamp`` and ``signature`` the values of the ``X-Bridge-Timestamp`` and
    ``X-Bridge-Signature`` headers. A timestamp more than ``tolerance_s`` away from ``now``
    (default: the current time) is refused, so a captured request cannot be replayed later.
    """
    if not timestamp or not signature:
        return "missing X-Bridge-Timestamp or X-Bridge-Signature"
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "X-Bridge-Timestamp is not a whole number of seconds"
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        return "X-Bridge-Timestamp is outside the tolerance window"
    if not signature.startswith("v1="):
        return "X-Bridge-Signature is not a v1 signature"
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    # compare_digest takes the same time wherever the strings differ: no timing oracle.
    if not hmac.compare_digest(expected, signature[3:]):
        return "X-Bridge-Signature does not match"
    return None


def verify_signature(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when :func:`check_signature` finds nothing wrong."""
    return check_signature(secret, body, timestamp, signature, now=now, tolerance_s=tolerance_s) is None


def sign(secret: bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """The two headers bridge puts on a request with this body (for tests of the checker)."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: f"v1={digest}"}


# ---------------------------------------------------------------------------------------- routes

ToolHandler = Callable[[RecordedRequest], Reply]


@dataclass(frozen=True)
class Route:
    """How one path answers. ``body``: str is sent as text, anything else but bytes as JSON.

    ``handler`` (given the request, returns a :class:`Reply`) replaces the fixed answer.
    ``hang``: never answer; ``close``: close the connection without answering.
    """

    body: Any = "ok"
    status: int = 200
    delay_s: float = 0.0
    hang: bool = False
    close: bool = False
    content_type: str | None = None
    handler: ToolHandler | None = None

    def reply(self, request: RecordedRequest) -> Reply:
        handler = self.handler or (lambda _: Reply(self.status, self.body, self.content_type))
        reply = handler(request)
        if self.delay_s:
            reply.delay_s = self.delay_s
        if self.hang:
            reply.action = "hang"
        elif self.close:
            reply.action = "close"
        return reply


ORDERS: Final = {
    "A1234": "Order A1234 shipped on Monday and arrives on Thursday.",
    "B5678": "Order B5678 is being packed and ships tomorrow.",
    "C9012": "Order C9012 was delivered yesterday at 2 pm.",
}

ORDER_STATUS_TOOL: Final = {
    "name": "order_status",
    "description": "Look up the status of a customer's order by its order number.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "The order number, e.g. A1234."}},
        "required": ["order_id"],
    },
}
"""The tool's definition for bridge's configuration (add ``url``: the server's ``url("/order-status")``)."""


def order_status(request: RecordedRequest) -> Reply:
    """The demo's order lookup: bridge's documented request body in, a short status text out."""
    try:
        payload = request.json()
        order_id = payload["arguments"]["order_id"]
    except (ValueError, KeyError, TypeError):
        return Reply(400, "expected a JSON body with arguments.order_id\n")
    if not isinstance(order_id, str):
        return Reply(400, "arguments.order_id must be a string\n")
    request.notes["order_id"] = order_id
    return Reply(200, ORDERS.get(order_id.strip().upper(), f"I found no order with number {order_id}."))


ORDER_STATUS: Final = Route(handler=order_status)


# ---------------------------------------------------------------------------------------- server


class ToolServer:
    """Tool endpoints on loopback. ``routes`` maps a path to its :class:`Route` (change it at any
    time); unknown paths answer 404. ``requests`` records every request, signed or not, with
    ``notes["signature"]`` set to ``"ok"`` or to the reason it was refused when a secret is set."""

    def __init__(
        self,
        routes: Mapping[str, Route] | None = None,
        *,
        secret: bytes | str | None = None,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self.tolerance_s = tolerance_s
        self._clock = clock
        self.http = FakeHttpServer(self._handle, name="tool server")

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.http.requests

    @property
    def port(self) -> int:
        return self.http.port

    def url(self, path: str) -> str:
        return f"{self.http.base_url}{path}"

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def _handle(self, request: RecordedRequest) -> Reply:
        if self._secret is not None:
            problem = check_signature(
                self._secret,
                request.body,
                request.header(TIMESTAMP_HEADER),
                request.header(SIGNATURE_HEADER),
                now=self._clock(),
                tolerance_s=self.tolerance_s,
            )
            request.notes["signature"] = problem or "ok"
            if problem is not None:
                return Reply(401, {"error": problem})
        route = self.routes.get(request.path)
        if route is None:
            return Reply(404, {"error": f"no tool at {request.path}"})
        if request.method != "POST":
            return Reply(405, {"error": "tools are called with POST"}, headers=[("allow", "POST")])
        return route.reply(request)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.http.run(task_status=task_status)


@asynccontextmanager
async def open_tool_server(
    routes: Mapping[str, Route] | None = None,
    *,
    secret: bytes | str | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[ToolServer]:
    """``async with open_tool_server({"/order-status": ORDER_STATUS}, secret=s) as tools: tools.url(...)``."""
    server = ToolServer(routes, secret=secret, tolerance_s=tolerance_s, clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.run))
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


__all__ = [
    "ORDERS",
    "ORDER_STATUS",
    "ORDER_STATUS_TOOL",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Route",
    "ToolServer",
    "check_signature",
    "open_tool_server",
    "order_status",
    "sign",
    "verify_signature",
]
