"""The server side of a carrier WebSocket: trio-websocket's, minus one way a peer can crash it.

trio-websocket 0.12 answers a message longer than ``max_message_size`` by sending a close frame
(1009), whatever state the connection is in. When the bridge has already sent its own close
(wsproto state ``LOCAL_CLOSING``: the call is ending and the close handshake is under way) and
the caller's next message is an oversized one, wsproto refuses to send a second close and raises
``LocalProtocolError`` out of trio-websocket's reader task, which takes down the nursery the
connection lives in. A caller that streams a big message while the bridge hangs up therefore
turned a normal end into a crash (found by bench/fuzz_bench.py). The wsproto states are
https://python-hyper.org/projects/wsproto/en/stable/api.html#wsproto.connection.ConnectionState;
the close handshake is RFC 6455 §7 (https://www.rfc-editor.org/rfc/rfc6455#section-7).

Here an oversized message that arrives after the close was sent is dropped: the connection is
closing anyway, the close frame that 1009 would say has already gone, and the peer's answer to it
ends the handshake as usual. Anything else behaves exactly as in trio-websocket.
"""

from __future__ import annotations

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, TextMessage


class CarrierWebSocket(WebSocketConnection):
    async def _handle_message_event(self, event: BytesMessage | TextMessage) -> None:
        too_big = self._message_size + len(event.data) > self._max_message_size
        if too_big and self._wsproto.state is not ConnectionState.OPEN:
            self._message_size = 0
            self._message_parts = []
            return
        await super()._handle_message_event(event)


async def wrap_server_stream(
    nursery: trio.Nursery, stream: trio.abc.Stream, *, max_message_size: int, message_queue_size: int
) -> WebSocketRequest:
    """:func:`trio_websocket.wrap_server_stream` with :class:`CarrierWebSocket` as the connection."""
    connection = CarrierWebSocket(
        stream,
        WSConnection(ConnectionType.SERVER),
        message_queue_size=message_queue_size,
        max_message_size=max_message_size,
    )
    nursery.start_soon(connection._reader_task)
    request: WebSocketRequest = await connection._get_request()
    return request
