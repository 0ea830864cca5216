"""The admin port: live calls, ending a call, health, readiness, metrics and the live page.

The same app runs in two places: in a worker (its own calls, on a private socket the supervisor
queries) and in the supervisor (all workers' calls merged, on ``admin.host:admin.port``). What
differs is the :class:`Sessions` source.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol

import structlog
import trio

from bridge import metrics
from bridge.call.runner import WorkerContext
from bridge.config import Secrets, Settings, check_startup
from bridge.server.http import BadRequest, Request, read_request, send_response
from bridge.vocabulary import EndReason

log = structlog.get_logger("bridge.admin")

JSON = "application/json"
# The page is self-contained: inline script and style, requests to its own origin only.
_PAGE_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"


class Sessions(Protocol):
    async def list(self) -> list[dict[str, Any]]: ...
    async def get(self, key: str) -> dict[str, Any] | None: ...
    async def end(self, key: str) -> dict[str, Any] | None: ...


class LocalSessions:
    """The calls of this process."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def _find(self, key: str) -> Any:
        call = self.ctx.calls.get(key)
        if call is not None:
            return call
        for c in self.ctx.calls.values():
            if key in (c.core.call_sid, c.core.stream_sid):
                return c
        return None

    async def list(self) -> list[dict[str, Any]]:
        return [c.snapshot() for c in list(self.ctx.calls.values())]

    async def get(self, key: str) -> dict[str, Any] | None:
        call = self._find(key)
        return None if call is None else call.snapshot()

    async def end(self, key: str) -> dict[str, Any] | None:
        call = self._find(key)
        if call is None:
            return None
        snap: dict[str, Any] = call.snapshot()
        call.request_end(EndReason.OPERATOR, "ended by an operator")
        snap["state"] = "closing"
        return snap


def _page() -> bytes:
    try:
        return resources.files("bridge").joinpath("server", "static", "index.html").read_bytes()
    except (FileNotFoundError, OSError):
        return b"<!doctype html><title>bridge</title><p>live page missing from the install</p>"


class AdminApp:
    def __init__(
        self,
        settings: Settings,
        secrets: Secrets,
        sessions: Sessions,
        *,
        ready: Callable[[], bool],
        require_token: bool = True,
        render_metrics: Callable[[], tuple[bytes, str]] | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.sessions = sessions
        self.ready = ready
        self.token = secrets.admin_token.get_secret_value() if (secrets.admin_token and require_token) else None
        self.render_metrics = render_metrics or metrics.render_latest
        self._page = _page()

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            try:
                request = await read_request(stream)
            except BadRequest as exc:
                await send_response(stream, exc.status, exc.reason.encode())
                return
            status, body, ctype, extra = await self.respond(request)
            path = request.path if request.path in ("/", "/sessions", "/metrics", "/healthz", "/readyz") else "other"
            try:
                metrics.admin_requests_total.labels(path=path, status=str(status)).inc()
            except Exception:
                pass
            await send_response(stream, status, body, ctype, extra)
        except Exception as exc:  # one bad request never takes the admin port down
            log.error("admin_request_failed", error=repr(exc), exc_info=exc)
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await stream.aclose()

    def _authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    async def respond(self, request: Request) -> tuple[int, bytes, str, dict[str, str] | None]:
        path = request.path.rstrip("/") or "/"
        method = request.method
        if not self._authorised(request):
            return 401, b'{"error":"unauthorized"}', JSON, {"WWW-Authenticate": 'Bearer realm="bridge"'}
        if path == "/healthz":
            return 200, b'{"status":"ok"}', JSON, None
        if path == "/readyz":
            ok = self.ready()
            readiness: dict[str, Any] = {"ready": ok}
            # Ready, but open to anyone: say so where health checks and operators look.
            warnings = check_startup(self.settings, self.secrets).warnings
            if warnings:
                readiness["warnings"] = list(warnings)
            return (200 if ok else 503), json.dumps(readiness).encode(), JSON, None
        if path == "/metrics":
            body, ctype = await trio.to_thread.run_sync(self.render_metrics)
            return 200, body, ctype, None
        if path == "/":
            return 200, self._page, "text/html; charset=utf-8", {"Content-Security-Policy": _PAGE_CSP}
        if path == "/sessions":
            if method != "GET":
                return 405, b'{"error":"use GET"}', JSON, {"Allow": "GET"}
            return 200, json.dumps({"sessions": await self.sessions.list()}).encode(), JSON, None
        if path.startswith("/sessions/"):
            key = path[len("/sessions/") :]
            if method == "GET":
                found = await self.sessions.get(key)
            elif method == "DELETE":
                found = await self.sessions.end(key)
                if found is not None:
                    log.info("operator_end", session=key)
            else:
                return 405, b'{"error":"use GET or DELETE"}', JSON, {"Allow": "GET, DELETE"}
            if found is None:
                return 404, json.dumps({"error": "no such live call", "id": key}).encode(), JSON, None
            return 200, json.dumps(found).encode(), JSON, None
        return 404, b'{"error":"not found"}', JSON, None
