"""The public port: each carrier's voice webhook and media WebSocket, on one port.

Routes (:mod:`bridge.server.routes`): ``/{carrier}/answer`` and ``/{carrier}/media`` for every
carrier the configuration answers (``/twiml`` and ``/media`` stay Twilio's). What a carrier
expects in answer, and how it authenticates its requests and stream upgrades, is its dialect's
business (:class:`~bridge.carrier.base.Carrier`); the front door only asks.

Each TCP connection gets its own task and its own try/except: trio's ``serve_listeners`` and
trio-websocket both let one handler's exception end the whole server, and here a bad request
must only ever cost its own connection.

What this module decides it asks pure functions about (authentication and documents in the
carrier's dialect, room in :mod:`bridge.server.occupancy`, routes in :mod:`bridge.server.routes`);
it only carries the answers out. Every refusal is counted in ``bridge_refused_total`` with its
route (``answer``, ``media`` or ``other``) and reason, and logged once.

Bounds on bad traffic, per worker:

* a connection is *pending* from accept until it is answered or becomes a call; beyond
  ``server.max_pending_connections`` new connections get a 503 at once, before a byte is read;
* the request head (and the webhook's body) must arrive within ``server.head_timeout_s`` and
  ``server.max_head_bytes`` (:mod:`bridge.server.http`);
* a carrier WebSocket message above ``server.max_message_bytes`` closes that call with 1009
  (trio-websocket's ``max_message_size``; once the bridge has sent its own close, such a message
  is dropped instead, see :mod:`bridge.server.wsserver`);
* live calls are capped at ``server.max_calls_per_worker``: beyond it an upgrade gets 503, and
  when every worker is full the voice webhook answers with the overflow document (Twilio's
  TwiML; other carriers get 503, which their own failover handles).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

import structlog
import trio

from bridge import metrics
from bridge.call.runner import CallRunner, WorkerContext
from bridge.carrier import twiml
from bridge.carrier.base import Carrier, InboundRequest
from bridge.carrier.twilio_signature import request_url
from bridge.config import DEFAULT_OVERFLOW_MESSAGE
from bridge.server.http import (
    BadRequest,
    Limits,
    PrefixedStream,
    Request,
    read_body,
    read_request,
    send_response,
)
from bridge.server.occupancy import (
    CLOSED,
    MemoryOccupancy,
    Occupancy,
    anyone_has_room,
    calls_ahead,
    has_room,
    takes_new_connections,
)
from bridge.server.routes import choose_profile, media_url, route, stream_path
from bridge.server.wsserver import wrap_server_stream
from bridge.websocket import CallSocket
from bridge.websocket.adapter import TrioWebSocket
from bridge.websocket.direct import DirectWebSocket, SocketTransport, accept_response

log = structlog.get_logger("bridge.frontdoor")

FORM = "application/x-www-form-urlencoded"


class _Pending:
    """A connection counted as pending until it is answered or becomes a call."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._counted = True
        door.pending += 1

    def release(self) -> None:
        if self._counted:
            self._counted = False
            self._door.pending -= 1


class FrontDoor:
    def __init__(self, ctx: WorkerContext, occupancy: Occupancy | None = None) -> None:
        self.ctx = ctx
        self.slot = ctx.worker_id or 0
        self.occupancy = occupancy if occupancy is not None else MemoryOccupancy(self.slot + 1)
        self.live = 0  # calls accepted here and not yet finalised
        self.pending = 0  # connections not yet answered or turned into a call
        # Called after every change of this worker's count (the accept gate re-decides).
        self.on_change: Callable[[], None] | None = None
        self.publish()

    # --- this worker's count, as the others see it ----------------------------------------
    def publish(self) -> None:
        """Write this worker's live calls (or CLOSED while draining) to the shared view."""
        self.occupancy.set(self.slot, CLOSED if self.ctx.draining else self.live)
        if self.on_change is not None:
            self.on_change()

    def takes_new_connections(self) -> bool:
        """Whether to accept from the shared socket now (see :func:`takes_new_connections`)."""
        limit = self.ctx.settings.server.max_calls_per_worker
        return takes_new_connections(self.occupancy.counts(), self.slot, limit)

    def has_room(self) -> bool:
        return not self.ctx.draining and has_room(self.live, self.ctx.settings.server.max_calls_per_worker)

    def calls_ahead(self) -> int:
        """How many more calls this worker has than the least busy other worker with room."""
        return calls_ahead(self.occupancy.counts(), self.slot, self.ctx.settings.server.max_calls_per_worker)

    # --- connections ----------------------------------------------------------------------
    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            if self.pending >= self.ctx.settings.server.max_pending_connections:
                # Refused before reading anything: slow or idle clients cannot pile up.
                self._refuse("other", "too_many_pending")
                await send_response(stream, 503, b"too many connections in progress\n", extra={"Retry-After": "1"})
                return
            pending = _Pending(self)
            try:
                await self._handle(stream, pending.release)
            finally:
                pending.release()
        except Exception as exc:  # never let one connection take the listener down
            log.error("connection_failed", error=repr(exc), exc_info=exc)
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await stream.aclose()

    def _remote(self, stream: trio.SocketStream) -> str:
        try:
            host, port = stream.socket.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "?"

    def _limits(self) -> Limits:
        server = self.ctx.settings.server
        return Limits(head_timeout_s=server.head_timeout_s, max_head_bytes=server.max_head_bytes)

    def _refuse(self, route: str, reason: str, **fields: object) -> None:
        metrics.refused_total.labels(route=route, reason=reason).inc()
        # A flood of connections must not become a flood of log lines: the metric counts those.
        level = log.debug if reason == "too_many_pending" else log.info
        level("request_refused", route=route, reason=reason, **fields)

    async def _handle(self, stream: trio.SocketStream, became_call: Callable[[], None]) -> None:
        try:
            request = await read_request(stream, self._limits())
        except BadRequest as exc:
            self._refuse("other", exc.kind, detail=exc.reason, remote=self._remote(stream))
            await send_response(stream, exc.status, exc.reason.encode() + b"\n")
            return
        target = route(request.path)
        if request.is_websocket:
            await self._websocket(stream, request, target[0] if target and target[1] == "media" else None, became_call)
        elif target is not None and target[1] == "answer":
            await self._answer(stream, request, target[0])
        elif request.path in ("/healthz", "/"):
            await send_response(stream, 200, b"ok\n")
        else:
            self._refuse("other", "not_found", path=request.path[:200])
            await send_response(stream, 404, b"not found\n")

    # --- the carrier's view of a request -----------------------------------------------------
    def _inbound(self, request: Request, *, websocket: bool, body: bytes = b"") -> InboundRequest:
        """The request as the carrier sent (and signed) it: public URL, headers, form, arrival."""
        url = request_url(self.ctx.settings.server.public_url, request.headers, request.target, websocket=websocket)
        form: list[tuple[str, str]] = []
        if request.method == "POST" and request.headers.get("content-type", FORM).split(";")[0].strip() == FORM:
            # Every repeated name kept, in order: carriers sign the form as sent.
            form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return InboundRequest(request.method, url, request.headers, body, form, received_at=time.time())

    def _carrier(self, name: str) -> Carrier | None:
        return self.ctx.carriers.get(name)

    # --- the voice webhook ----------------------------------------------------------------
    async def _answer(self, stream: trio.SocketStream, request: Request, name: str) -> None:
        carrier = self._carrier(name)
        if carrier is None:
            self._refuse("answer", "not_configured", carrier=name)
            await send_response(stream, 404, f"carrier {name} is not configured ([carriers.{name}])\n".encode())
            return
        if request.method not in ("POST", "GET"):
            self._refuse("answer", "method_not_allowed", method=request.method[:16])
            await send_response(stream, 405, b"use POST\n", extra={"Allow": "POST, GET"})
            return
        try:
            body = await read_body(stream, request, self._limits()) if request.method == "POST" else b""
        except BadRequest as exc:
            self._refuse("answer", exc.kind, detail=exc.reason)
            await send_response(stream, exc.status, exc.reason.encode() + b"\n")
            return
        inbound = self._inbound(request, websocket=False, body=body)
        if not carrier.verify_request(inbound):
            self._refuse("answer", "bad_signature", carrier=name)
            await send_response(stream, 403, b"request not authenticated\n")
            return
        details = carrier.call_details(inbound)
        settings = self.ctx.settings
        if not anyone_has_room(self.occupancy.counts(), settings.server.max_calls_per_worker):
            self._refuse("answer", "draining" if self.ctx.draining else "at_capacity", to=details.to_number)
            if name == "twilio":
                await send_response(stream, 200, self._overflow_document(), "text/xml; charset=utf-8")
            else:
                await send_response(stream, 503, b"at capacity\n", extra={"Retry-After": "5"})
            return
        routes = [(r.to, r.from_, r.profile) for r in settings.routes]
        params: dict[str, str] = {}
        profile = choose_profile(routes, details.to_number, details.from_number)
        if profile is not None:
            params["profile"] = profile
        for key, value in (("from", details.from_number), ("to", details.to_number), ("call_sid", details.call_sid)):
            if value:
                params[key] = value
        host = request.headers.get("x-forwarded-host") or request.headers.get("host")
        url = media_url(settings.server.public_url, host, stream_path(request.path, name))
        answer = carrier.answer(url, params)
        log.info("answer", carrier=name, to=details.to_number, profile=profile or "default", stream_url=url)
        await send_response(stream, answer.status, answer.body, answer.content_type)

    def _overflow_document(self) -> bytes:
        overflow = self.ctx.settings.server.overflow
        if overflow.redirect_url is not None:
            return twiml.redirect(overflow.redirect_url).encode()
        return twiml.say_and_hang_up(overflow.message or DEFAULT_OVERFLOW_MESSAGE).encode()

    # --- the media stream -----------------------------------------------------------------
    async def _websocket(
        self, stream: trio.SocketStream, request: Request, name: str | None, became_call: Callable[[], None]
    ) -> None:
        carrier = self._carrier(name) if name is not None else None
        async with trio.open_nursery() as nursery:
            ws = await self._handshake(nursery, stream, request, carrier)
            if ws is not None:
                assert carrier is not None
                became_call()
                self.live += 1
                self.publish()
                try:
                    await CallRunner(self.ctx, ws, self._remote(stream), carrier).run()
                finally:
                    self.live -= 1
                    self.publish()
            nursery.cancel_scope.cancel()

    async def _handshake(
        self, nursery: trio.Nursery, stream: trio.SocketStream, request: Request, carrier: Carrier | None
    ) -> CallSocket | None:
        """The upgrade, admitted (the call's WebSocket) or refused (None). It is part of the
        request phase and shares its time limit."""
        server = self.ctx.settings.server
        route = "media" if carrier is not None else "other"
        problem = request.handshake_problem()
        if problem is not None:
            self._refuse(route, "bad_request", detail=problem)
            await send_response(stream, 400, problem.encode() + b"\n", extra={"Sec-WebSocket-Version": "13"})
            return None
        if server.websocket == "direct":
            status, reason, why = self._admit(request, carrier)
            if status != 101:
                self._refuse(route, reason, status=status, path=request.path[:200])
                await send_response(stream, status, why.encode())
                return None
            with trio.move_on_after(server.head_timeout_s):
                await stream.send_all(accept_response(request.headers["sec-websocket-key"]))
                # Carrier messages are small; a bigger one closes the call with 1009.
                transport = SocketTransport(stream)
                return DirectWebSocket(transport, client=False, max_message=server.max_message_bytes,
                                       received=request.trailing)  # fmt: skip
            self._refuse(route, "head_timeout", detail="WebSocket handshake not completed in time")
            return None
        refused = False
        with trio.move_on_after(server.head_timeout_s):
            ws_request = await wrap_server_stream(
                nursery,
                PrefixedStream(stream, request.raw),
                # Carrier messages are small; a bigger one closes the call with 1009.
                max_message_size=server.max_message_bytes,
                # Drained continuously by the call's reader; depth absorbs scheduling jitter.
                message_queue_size=32,
            )
            status, reason, why = self._admit(request, carrier)
            if status == 101:
                return TrioWebSocket(await ws_request.accept())
            refused = True
            self._refuse(route, reason, status=status, path=request.path[:200])
            await ws_request.reject(status, body=why.encode())
            return None
        if not refused:
            self._refuse(route, "head_timeout", detail="WebSocket handshake not completed in time")
        return None

    def _admit(self, request: Request, carrier: Carrier | None) -> tuple[int, str, str]:
        """``(status, refusal reason, body)`` for an upgrade; 101 admits it.

        Authentication comes first: a client that cannot prove itself learns nothing about our state.
        """
        if carrier is None:
            return 404, "not_found", "no WebSocket here; streams go to /{carrier}/media of a configured carrier"
        if not carrier.verify_upgrade(self._inbound(request, websocket=True)):
            return 403, "bad_signature", "upgrade not authenticated"
        if self.ctx.draining:
            return 503, "draining", "draining: not accepting new calls"
        if not self.has_room():
            return 503, "at_capacity", "at capacity: server.max_calls_per_worker calls in progress"
        return 101, "", ""


def health_body(ctx: WorkerContext) -> bytes:
    return json.dumps({"calls": len(ctx.calls), "draining": ctx.draining}).encode()
