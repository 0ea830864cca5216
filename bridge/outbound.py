"""Outbound HTTP from a worker: one client, connection reuse, hard limits, never an exception.

httpx runs on trio (through its anyio backend) and keeps a pool of connections per host, so a
tool called on every turn of every call reuses connections instead of paying a TLS handshake
each time; it is well kept and typed (https://www.python-httpx.org/async/). Every request has
a deadline; every failure (timeout, refused, DNS, TLS, a reset mid-answer) becomes an
:class:`~bridge.httpmsg.HttpResult` the caller can act on, because a tool server's problem must
never become a call's crash. Redirects are not followed: a signed request goes only where the
configuration says.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

import httpx
import trio

from bridge import signing
from bridge.httpmsg import Failure, HttpRequest, HttpResult

# Answers are for the model (tools) or ignored (webhooks); a few hundred KiB is plenty, and a
# tool that streams forever must not fill the worker's memory.
MAX_RESPONSE_BYTES = 512 * 1024


class Outbound:
    """The worker's HTTP client. Use as an async context manager (it owns a connection pool)."""

    def __init__(self, signing_secret: str | None = None, *, max_connections: int = 100) -> None:
        self.signing_secret = signing_secret
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
            headers={"User-Agent": "bridge"},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self._client.aclose()

    async def send(self, request: HttpRequest) -> HttpResult:
        """Send ``request``; the result says what happened. Cancellation propagates (the call ended)."""
        started = trio.current_time()
        headers = list(request.headers)
        if request.sign and self.signing_secret:
            # Signed at send time: the timestamp is the moment the request leaves.
            headers += signing.headers(self.signing_secret, int(time.time()), request.body)
        timeout = httpx.Timeout(request.timeout_s)
        with trio.move_on_after(request.timeout_s) as scope:
            try:
                async with self._client.stream(
                    request.method, request.url, headers=headers, content=request.body, timeout=timeout
                ) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_RESPONSE_BYTES:
                            break
                    return HttpResult(trio.current_time() - started, response.status_code, bytes(body))
            except httpx.TimeoutException:
                return self._failed(started, Failure.TIMEOUT, f"no answer within {request.timeout_s:g} s")
            except (httpx.HTTPError, OSError, ValueError) as exc:
                # ValueError: httpx rejects a malformed URL or header before connecting.
                return self._failed(started, Failure.UNREACHABLE, _describe(exc))
        assert scope.cancelled_caught
        return self._failed(started, Failure.TIMEOUT, f"no answer within {request.timeout_s:g} s")

    @staticmethod
    def _failed(started: float, failure: Failure, detail: str) -> HttpResult:
        return HttpResult(trio.current_time() - started, failure=failure, detail=detail)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text[:200]
