"""The carrier WebSocket's server side (bridge.server.wsserver), against a raw wsproto client."""

from __future__ import annotations

import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from bridge.server.wsserver import wrap_server_stream

CAP = 100


async def _accepted_pair(nursery: trio.Nursery) -> tuple[WebSocketConnection, WSConnection, trio.abc.Stream]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = WSConnection(ConnectionType.CLIENT)
    await client_stream.send_all(client.send(Request(host="bridge", target="/twilio/media")))
    request = await wrap_server_stream(nursery, server_stream, max_message_size=CAP, message_queue_size=4)
    ws = await request.accept()
    client.receive_data(await client_stream.receive_some())
    assert any(isinstance(e, AcceptConnection) for e in client.events())
    return ws, client, client_stream


def test_an_oversized_message_after_the_bridge_closed_ends_the_close_handshake_not_the_nursery() -> None:
    async def scenario() -> None:
        # Before the fix trio-websocket tried to answer it with a second close frame (1009), wsproto
        # raised LocalProtocolError from trio-websocket's reader task and the connection's nursery died.
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                ws, client, client_stream = await _accepted_pair(nursery)
                closed = trio.Event()

                async def close() -> None:
                    await ws.aclose(1000, "caller_hangup")
                    closed.set()

                nursery.start_soon(close)
                close_frame = await client_stream.receive_some()  # the bridge's close is on its way...
                # ...while the caller's big message is already in flight; then the caller answers.
                await client_stream.send_all(client.send(TextMessage(data="x" * (CAP * 3))))
                client.receive_data(close_frame)
                events = list(client.events())
                assert [type(e) for e in events] == [CloseConnection]
                await client_stream.send_all(client.send(events[0].response()))
                await closed.wait()
                assert ws.closed.code == 1000

    trio.run(scenario)


def test_an_oversized_message_on_an_open_connection_still_closes_it_with_1009() -> None:
    async def scenario() -> None:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                ws, client, client_stream = await _accepted_pair(nursery)
                await client_stream.send_all(client.send(TextMessage(data="x" * (CAP + 1))))
                client.receive_data(await client_stream.receive_some())
                events = list(client.events())
                assert isinstance(events[0], CloseConnection) and events[0].code == 1009
                try:
                    await ws.get_message()
                    raise AssertionError("the connection should be closed")
                except ConnectionClosed as exc:
                    assert exc.reason.code == 1009
                nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_messages_within_the_cap_arrive_unchanged() -> None:
    async def scenario() -> None:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                ws, client, client_stream = await _accepted_pair(nursery)
                await client_stream.send_all(client.send(TextMessage(data="y" * CAP)))
                assert await ws.get_message() == "y" * CAP
                nursery.cancel_scope.cancel()

    trio.run(scenario)
