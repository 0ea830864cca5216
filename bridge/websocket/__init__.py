"""WebSocket connections for a call: the interface the call runner reads and writes through.

Two implementations (``server.websocket``): :mod:`bridge.websocket.direct`, read and written by
the call's own tasks with this package's framing (the default), and
:mod:`bridge.websocket.adapter`, trio-websocket behind the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["CallSocket", "Closed"]


class Closed(Exception):
    """The connection is closed or closing: the close code and reason (None, None: no close frame)."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"WebSocket closed ({code}: {reason})")
        self.code = code
        self.reason = reason


class CallSocket(Protocol):
    """A WebSocket as a call uses it. Every method raises :class:`Closed` once the socket is closed."""

    async def receive(self) -> list[str | bytes]:
        """Every message that has arrived, at least one (waits for it): ``str`` for text frames."""
        ...

    async def send(self, messages: Sequence[str | bytes]) -> None:
        """Send ``messages`` in order; no other send on this socket comes between them."""
        ...

    async def ping(self) -> None:
        """Send a ping and wait for its pong (which another task's :meth:`receive` may read)."""
        ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close: send a close frame, wait (as long as the caller lets it) for the peer's, then
        close the transport. Safe to call twice."""
        ...
