"""The public port: ``POST /twiml`` (voice webhook) and the ``/media`` WebSocket on one port.

Each TCP connection gets its own task and its own try/except: trio's ``serve_listeners`` and
trio-websocket both let one handler's exception end the whole server, and here a bad request
must only ever cost its own connection.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import structlog
import trio
from trio_websocket import wrap_server_stream

from bridge import metrics
from bridge.call.runner import CallRunner, WorkerContext
from bridge.carrier import twilio, twiml
from bridge.server.http import (
    BadRequest,
    PrefixedStream,
    Request,
    read_body,
    read_request,
    send_response,
)

log = structlog.get_logger("bridge.frontdoor")

MEDIA_PATH = "/media"
TWIML_PATH = "/twiml"


class FrontDoor:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.rejected = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._handle(stream)
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

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            request = await read_request(stream)
        except BadRequest as exc:
            self._count_http_error(exc.reason)
            await send_response(stream, exc.status, exc.reason.encode())
            return
        if request.is_websocket:
            await self._websocket(stream, request)
            return
        if request.path == TWIML_PATH:
            await self._twiml(stream, request)
        elif request.path in ("/healthz", "/"):
            await send_response(stream, 200, b"ok\n")
        else:
            await send_response(stream, 404, b"not found\n")

    def _count_http_error(self, reason: str) -> None:
        metrics.protocol_errors_total.labels(source="http", kind="bad_request").inc()
        log.info("http_bad_request", reason=reason)

    async def _twiml(self, stream: trio.SocketStream, request: Request) -> None:
        if request.method not in ("POST", "GET"):
            await send_response(stream, 405, b"use POST\n", extra={"Allow": "POST, GET"})
            return
        try:
            body = await read_body(stream, request) if request.method == "POST" else b""
        except BadRequest as exc:
            await send_response(stream, exc.status, exc.reason.encode())
            return
        form = dict(parse_qsl(request.query, keep_blank_values=True))
        form.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        settings = self.ctx.settings
        secrets = self.ctx.secrets
        if settings.twilio.validate_signature:
            assert secrets.twilio_auth_token is not None
            url = self._public_http_url(request)
            signed = form if request.method == "POST" else {}
            if not twiml.signature_valid(
                secrets.twilio_auth_token.get_secret_value(), url, signed, request.headers.get("x-twilio-signature")
            ):
                log.warning("twiml_bad_signature", url=url)
                await send_response(stream, 403, b"invalid signature\n")
                return
        routes = [(r.to, r.from_, r.profile) for r in settings.routes]
        params: dict[str, str] = {}
        profile = twiml.choose_profile(routes, form.get("To"), form.get("From"))
        if profile is not None:
            params["profile"] = profile
        for key in ("From", "To", "CallSid"):
            if form.get(key):
                params[key.lower() if key != "CallSid" else "call_sid"] = form[key]
        url = twiml.media_url(settings.server.public_url, request.headers.get("host"), MEDIA_PATH)
        body_xml = twiml.connect_stream(url, params).encode()
        log.info("twiml", to=form.get("To"), profile=profile or "default", stream_url=url)
        await send_response(stream, 200, body_xml, "text/xml; charset=utf-8")

    def _public_http_url(self, request: Request) -> str:
        public = self.ctx.settings.server.public_url
        if public:
            return public + request.target
        proto = request.headers.get("x-forwarded-proto", "https")
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
        return f"{proto}://{host}{request.target}"

    async def _websocket(self, stream: trio.SocketStream, request: Request) -> None:
        ctx = self.ctx
        server = ctx.settings.server
        async with trio.open_nursery() as nursery:
            ws_request = await wrap_server_stream(
                nursery,
                PrefixedStream(stream, request.raw),
                # Carrier messages are small; a huge one is an attack or a bug.
                max_message_size=server.max_message_bytes,
                # Drained continuously by the call's reader; depth absorbs scheduling jitter.
                message_queue_size=32,
            )
            status, why = self._admit(request)
            if status != 101:
                self.rejected += 1
                log.info("media_rejected", status=status, reason=why, path=request.path)
                await ws_request.reject(status, body=why.encode())
                nursery.cancel_scope.cancel()
                return
            ws = await ws_request.accept()
            runner = CallRunner(ctx, ws, self._remote(stream), twilio.from_settings(ctx.settings, ctx.secrets))
            await runner.run()
            nursery.cancel_scope.cancel()

    def _admit(self, request: Request) -> tuple[int, str]:
        ctx = self.ctx
        if request.path != MEDIA_PATH:
            return 404, "no WebSocket here; the media stream is at /media"
        if ctx.draining:
            return 503, "draining: not accepting new calls"
        limit = ctx.settings.server.max_calls
        if limit and len(ctx.calls) >= limit:
            return 503, "at capacity"
        if ctx.settings.twilio.validate_signature:
            token = ctx.secrets.twilio_auth_token
            assert token is not None
            url = twiml.media_url(ctx.settings.server.public_url, request.headers.get("host"), MEDIA_PATH)
            if not twiml.signature_valid(token.get_secret_value(), url, {}, request.headers.get("x-twilio-signature")):
                return 403, "invalid X-Twilio-Signature"
        return 101, ""


def health_body(ctx: WorkerContext) -> bytes:
    return json.dumps({"calls": len(ctx.calls), "draining": ctx.draining}).encode()
