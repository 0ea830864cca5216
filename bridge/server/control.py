"""The private channel between the supervisor and one worker process.

One ``socketpair`` per worker, created by the supervisor and inherited by the worker (``pass_fds``),
carrying newline-delimited JSON objects both ways:

* worker → supervisor, unsolicited: ``{"event": "ready"}`` once its public listener accepts,
  ``{"event": "draining"}``, ``{"event": "reloaded"}`` / ``{"event": "reload_failed", "error": ...}``.
* supervisor → worker: requests ``{"id": n, "op": "ping" | "list" | "get" | "end", "key": ...}``;
  the worker answers ``{"id": n, "result": ...}`` or ``{"id": n, "error": "..."}``.

Why a socketpair rather than an admin HTTP server per worker on a Unix socket or loopback port:
nothing to name, clean up or protect on the file system, no port another local user could reach,
and one channel does readiness, liveness pings and the session queries. EOF on it tells the worker
that its supervisor is gone (it then drains) and tells the supervisor that the worker is gone.

Input on this channel comes from our own processes, but it is still parsed defensively: a bad line
is logged and skipped, an oversized one closes the channel, nothing here raises into a caller
except :class:`WorkerUnavailable` from :meth:`WorkerLink.request`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

log = structlog.get_logger("bridge.control")

# A /sessions answer of a worker with thousands of calls is a few MB; anything far beyond that is
# a bug, and unbounded buffering of it would be a memory leak in the supervisor.
MAX_LINE_BYTES = 32 * 1024 * 1024
_CHUNK = 65536

JSONObject = dict[str, Any]


class ChannelClosed(Exception):
    """The peer closed the channel (or sent something that made us close it)."""


class LineChannel:
    """Newline-delimited JSON objects over a trio stream; one writer at a time."""

    def __init__(self, stream: trio.abc.Stream, *, max_line: int = MAX_LINE_BYTES) -> None:
        self.stream = stream
        self.max_line = max_line
        self._buffer = bytearray()
        self._send_lock = trio.Lock()
        self.closed = False

    async def send(self, message: JSONObject) -> None:
        data = json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"
        try:
            async with self._send_lock:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.closed = True
            raise ChannelClosed(repr(exc)) from None

    async def receive(self) -> JSONObject:
        """The next well-formed object. Raises ChannelClosed at EOF; skips malformed lines."""
        while True:
            line = await self._next_line()
            try:
                message = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                log.warning("control_bad_line", error=str(exc), line=line[:200].decode("utf-8", "replace"))
                continue
            if not isinstance(message, dict):
                log.warning("control_bad_line", error="not a JSON object")
                continue
            return message

    async def _next_line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > self.max_line:
                self.closed = True
                raise ChannelClosed(f"line longer than {self.max_line} bytes")
            try:
                chunk = await self.stream.receive_some(_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.closed = True
                raise ChannelClosed(repr(exc)) from None
            if not chunk:
                self.closed = True
                raise ChannelClosed("end of stream")
            self._buffer += chunk

    async def aclose(self) -> None:
        self.closed = True
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await self.stream.aclose()


class WorkerUnavailable(Exception):
    """The worker did not answer in time, or its channel is closed."""


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    reply: JSONObject | None = None


class WorkerLink:
    """The supervisor's end of one worker's channel: requests with timeouts, events to a callback.

    :meth:`run` must be running (it reads replies and events) for :meth:`request` to complete.
    """

    def __init__(self, channel: LineChannel, on_event: Callable[[JSONObject], None]) -> None:
        self.channel = channel
        self.on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}

    async def run(self) -> None:
        """Read until the channel closes; then fail every request still waiting."""
        try:
            while True:
                message = await self.channel.receive()
                reply_to = message.get("id")
                if isinstance(reply_to, int) and not isinstance(reply_to, bool):
                    pending = self._pending.get(reply_to)
                    if pending is not None:  # a reply that came after its timeout is dropped
                        pending.reply = message
                        pending.done.set()
                    continue
                if isinstance(message.get("event"), str):
                    try:
                        self.on_event(message)
                    except Exception as exc:  # a supervisor bug must not cut the channel
                        log.error("control_event_failed", error=repr(exc), exc_info=exc)
        except ChannelClosed:
            pass
        finally:
            for pending in self._pending.values():
                pending.done.set()

    async def request(self, op: str, key: str | None = None, *, timeout: float = 1.0) -> Any:
        if self.channel.closed:
            raise WorkerUnavailable("channel closed")
        request_id = next(self._ids)
        pending = _Pending()
        self._pending[request_id] = pending
        try:
            message: JSONObject = {"id": request_id, "op": op}
            if key is not None:
                message["key"] = key
            with trio.move_on_after(timeout) as scope:
                await self.channel.send(message)
                await pending.done.wait()
            if scope.cancelled_caught:
                raise WorkerUnavailable(f"no answer to {op!r} within {timeout} s")
            reply = pending.reply
            if reply is None:
                raise WorkerUnavailable("channel closed")
            if "error" in reply:
                raise WorkerUnavailable(f"worker error: {reply['error']}")
            return reply.get("result")
        except ChannelClosed as exc:
            raise WorkerUnavailable(str(exc)) from None
        finally:
            self._pending.pop(request_id, None)
