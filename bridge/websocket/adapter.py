"""trio-websocket behind the :class:`~bridge.websocket.CallSocket` interface (``server.websocket =
"trio-websocket"``): its reader task, message channel and per-message sends, as before."""

from __future__ import annotations

from collections.abc import Sequence

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from bridge.websocket import Closed

__all__ = ["TrioWebSocket"]


def _closed(exc: ConnectionClosed) -> Closed:
    reason = exc.reason
    return Closed(reason.code, reason.reason) if reason is not None else Closed(None, None)


class TrioWebSocket:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        # send_message checkpoints between messages: without this lock another task's send could
        # come between two messages the call sends as one run.
        self._sending = trio.StrictFIFOLock()

    async def receive(self) -> list[str | bytes]:
        try:
            return [await self.ws.get_message()]
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def send(self, messages: Sequence[str | bytes]) -> None:
        lock = self._sending
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # uncontended: no checkpoint
        try:
            for message in messages:
                await self.ws.send_message(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        finally:
            lock.release()

    async def ping(self) -> None:
        try:
            await self.ws.ping()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.aclose(code, reason or None)
