"""The public port: ``POST /twiml`` (voice webhook) and the ``/media`` WebSocket on one port.

Each TCP connection gets its own task and its own try/except: trio's ``serve_listeners`` and
trio-websocket both let one handler's exception end the whole server, and here a bad request
must only ever cost its own connection.

What this module decides it asks pure functions about (the signature in
:mod:`bridge.carrier.twilio_signature`, room in :mod:`bridge.server.occupancy`, the documents in
:mod:`bridge.carrier.twiml`); it only carries the answers out. Every refusal is counted in
``bridge_refused_total`` with its route and reason and logged once.

Bounds on bad traffic, per worker:

* a connection is *pending* from accept until it is answered or becomes a call; beyond
  ``server.max_pending_connections`` new connections get a 503 at once, before a byte is read;
* the request head (and the webhook's body) must arrive within ``server.head_timeout_s`` and
  ``server.max_head_bytes`` (:mod:`bridge.server.http`);
* a carrier WebSocket message above ``server.max_message_bytes`` closes that call with 1009
  (trio-websocket's ``max_message_size``);
* live calls are capped at ``server.max_calls_per_worker``: beyond it an upgrade gets 503, and
  when every worker is full ``/twiml`` answers with the overflow document.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qsl

import structlog
import trio
from trio_websocket import WebSocketConnection, wrap_server_stream

from bridge import metrics
from bridge.call.runner import CallRunner, WorkerContext
from bridge.carrier import twilio, twiml
from bridge.carrier.twilio_signature import request_url, signature_valid
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
    has_room,
    takes_new_connections,
)

log = structlog.get_logger("bridge.frontdoor")

MEDIA_PATH = "/media"
TWIML_PATH = "/twiml"
SIGNATURE_HEADER = "x-twilio-signature"


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
        if request.is_websocket:
            await self._websocket(stream, request, became_call)
        elif request.path == TWIML_PATH:
            await self._twiml(stream, request)
        elif request.path in ("/healthz", "/"):
            await send_response(stream, 200, b"ok\n")
        else:
            self._refuse("other", "not_found", path=request.path[:200])
            await send_response(stream, 404, b"not found\n")

    # --- signatures -----------------------------------------------------------------------
    def _signed(self, request: Request, params: list[tuple[str, str]], *, websocket: bool) -> bool:
        """True when signature checking is off or the request carries Twilio's signature."""
        if not self.ctx.settings.twilio.validate_signature:
            return True
        token = self.ctx.secrets.twilio_auth_token
        if token is None:  # serve refuses this configuration; an embedding must not get through
            log.error("no_twilio_auth_token", detail="twilio.validate_signature is on without a token")
            return False
        url = request_url(self.ctx.settings.server.public_url, request.headers, request.target, websocket=websocket)
        return signature_valid(token.get_secret_value(), url, params, request.headers.get(SIGNATURE_HEADER))

    # --- the voice webhook ----------------------------------------------------------------
    async def _twiml(self, stream: trio.SocketStream, request: Request) -> None:
        if request.method not in ("POST", "GET"):
            self._refuse("twiml", "method_not_allowed", method=request.method[:16])
            await send_response(stream, 405, b"use POST\n", extra={"Allow": "POST, GET"})
            return
        try:
            body = await read_body(stream, request, self._limits()) if request.method == "POST" else b""
        except BadRequest as exc:
            self._refuse("twiml", exc.kind, detail=exc.reason)
            await send_response(stream, exc.status, exc.reason.encode() + b"\n")
            return
        # Twilio signs the URL (query included) plus the POST body's parameters only; every
        # repeated name is kept. A GET's parameters are in the URL, so it signs no others.
        posted = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        form = dict(posted if request.method == "POST" else parse_qsl(request.query, keep_blank_values=True))
        if not self._signed(request, posted, websocket=False):
            self._refuse("twiml", "bad_signature", has_signature=SIGNATURE_HEADER in request.headers)
            await send_response(stream, 403, b"invalid X-Twilio-Signature\n")
            return
        settings = self.ctx.settings
        if not anyone_has_room(self.occupancy.counts(), settings.server.max_calls_per_worker):
            self._refuse("twiml", "draining" if self.ctx.draining else "at_capacity", to=form.get("To"))
            await send_response(stream, 200, self._overflow_document(), "text/xml; charset=utf-8")
            return
        routes = [(r.to, r.from_, r.profile) for r in settings.routes]
        params: dict[str, str] = {}
        profile = twiml.choose_profile(routes, form.get("To"), form.get("From"))
        if profile is not None:
            params["profile"] = profile
        for key in ("From", "To", "CallSid"):
            if form.get(key):
                params[key.lower() if key != "CallSid" else "call_sid"] = form[key]
        host = request.headers.get("x-forwarded-host") or request.headers.get("host")
        url = twiml.media_url(settings.server.public_url, host, MEDIA_PATH)
        body_xml = twiml.connect_stream(url, params).encode()
        log.info("twiml", to=form.get("To"), profile=profile or "default", stream_url=url)
        await send_response(stream, 200, body_xml, "text/xml; charset=utf-8")

    def _overflow_document(self) -> bytes:
        overflow = self.ctx.settings.server.overflow
        if overflow.redirect_url is not None:
            return twiml.redirect(overflow.redirect_url).encode()
        return twiml.say_and_hang_up(overflow.message or DEFAULT_OVERFLOW_MESSAGE).encode()

    # --- the media stream -----------------------------------------------------------------
    async def _websocket(self, stream: trio.SocketStream, request: Request, became_call: Callable[[], None]) -> None:
        async with trio.open_nursery() as nursery:
            ws = await self._handshake(nursery, stream, request)
            if ws is not None:
                became_call()
                self.live += 1
                self.publish()
                try:
                    dialect = twilio.from_settings(self.ctx.settings, self.ctx.secrets)
                    await CallRunner(self.ctx, ws, self._remote(stream), dialect).run()
                finally:
                    self.live -= 1
                    self.publish()
            nursery.cancel_scope.cancel()

    async def _handshake(
        self, nursery: trio.Nursery, stream: trio.SocketStream, request: Request
    ) -> WebSocketConnection | None:
        """The upgrade, admitted (the call's WebSocket) or refused (None). It is part of the
        request phase and shares its time limit."""
        server = self.ctx.settings.server
        route = "media" if request.path == MEDIA_PATH else "other"
        problem = request.handshake_problem()
        if problem is not None:
            self._refuse(route, "bad_request", detail=problem)
            await send_response(stream, 400, problem.encode() + b"\n", extra={"Sec-WebSocket-Version": "13"})
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
            status, reason, why = self._admit(request)
            if status == 101:
                return await ws_request.accept()
            refused = True
            self._refuse(route, reason, status=status, path=request.path[:200])
            await ws_request.reject(status, body=why.encode())
            return None
        if not refused:
            self._refuse(route, "head_timeout", detail="WebSocket handshake not completed in time")
        return None

    def _admit(self, request: Request) -> tuple[int, str, str]:
        """``(status, refusal reason, body)`` for an upgrade; 101 admits it.

        The signature comes first: a client that cannot sign learns nothing about our state.
        """
        if request.path != MEDIA_PATH:
            return 404, "not_found", "no WebSocket here; the media stream is at /media"
        if not self._signed(request, [], websocket=True):
            return 403, "bad_signature", "invalid X-Twilio-Signature"
        if self.ctx.draining:
            return 503, "draining", "draining: not accepting new calls"
        if not self.has_room():
            return 503, "at_capacity", "at capacity: server.max_calls_per_worker calls in progress"
        return 101, "", ""


def health_body(ctx: WorkerContext) -> bytes:
    return json.dumps({"calls": len(ctx.calls), "draining": ctx.draining}).encode()
