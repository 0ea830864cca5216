"""bridge.websocket.direct over loopback against trio-websocket (a separate implementation, on
wsproto), in both roles: messages, pings, closes, protocol errors, backpressure and order."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC
from functools import partial
from pathlib import Path

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from bridge.server.http import read_request
from bridge.websocket import Closed
from bridge.websocket.direct import DirectWebSocket, HandshakeFailed, SocketTransport, accept_response, open_client

# --- the server role: a DirectWebSocket accepted on a listener, trio-websocket as the client -------


async def read_until_closed(ws: DirectWebSocket, seen: list[Closed]) -> None:
    """A server handler: read (and drop) messages until the connection ends; keep how it ended."""
    try:
        while True:
            await ws.receive()
    except Closed as exc:
        seen.append(exc)


@asynccontextmanager
async def direct_server(
    handler: Callable[[DirectWebSocket], Awaitable[None]], max_message: int = 1 << 20
) -> AsyncIterator[str]:
    """A listener whose connections become server-side DirectWebSockets; yields its ws:// URL."""

    async def connection(stream: trio.SocketStream) -> None:
        request = await read_request(stream)
        await stream.send_all(accept_response(request.headers["sec-websocket-key"]))
        ws = DirectWebSocket(SocketTransport(stream), client=False, max_message=max_message, received=request.trailing)
        try:
            await handler(ws)
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await ws.aclose()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, connection, 0, host="127.0.0.1"))
        yield f"ws://127.0.0.1:{listener.socket.getsockname()[1]}/media"
        nursery.cancel_scope.cancel()


UPGRADE = (
    b"GET /media HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(20):
            await main()

    trio.run(bounded)


def test_server_role_echoes_batches_and_answers_pings() -> None:
    async def echo(ws: DirectWebSocket) -> None:
        try:
            while True:
                batch = await ws.receive()
                await ws.send(batch)
        except Closed:
            pass

    async def main() -> None:
        async with direct_server(echo) as url, open_websocket_url(url) as client:
            for message in ["hello", "é" * 300, "x" * 70000, b"\x00\x01bin"]:
                await client.send_message(message)
                assert await client.get_message() == message
            await client.ping(b"1234")  # answered by the server's reader
            # Several messages in flight arrive in order, however the reads split them.
            for i in range(200):
                await client.send_message(f"m{i}")
            assert [await client.get_message() for _ in range(200)] == [f"m{i}" for i in range(200)]

    run(main)


def test_server_role_close_from_either_side_carries_the_code() -> None:
    seen: list[Closed] = []

    reader = partial(read_until_closed, seen=seen)

    async def closer(ws: DirectWebSocket) -> None:
        await ws.receive()
        await ws.aclose(4001, "ended by the bridge")

    async def main() -> None:
        async with direct_server(reader) as url:
            async with open_websocket_url(url) as client:
                await client.send_message("hi")
                await client.aclose(1000, "caller hung up")
            with trio.fail_after(5):
                while not seen:
                    await trio.sleep(0.01)
            assert (seen[0].code, seen[0].reason) == (1000, "caller hung up")
        async with direct_server(closer) as url, open_websocket_url(url) as client:
            await client.send_message("go")
            with pytest.raises(ConnectionClosed) as info:
                await client.get_message()
            assert (info.value.reason.code, info.value.reason.reason) == (4001, "ended by the bridge")

    run(main)


def test_server_role_closes_an_oversized_message_with_1009() -> None:
    seen: list[Closed] = []

    reader = partial(read_until_closed, seen=seen)

    async def main() -> None:
        async with direct_server(reader, max_message=4096) as url, open_websocket_url(url) as client:
            await client.send_message("small")
            with pytest.raises(ConnectionClosed) as info:
                await client.send_message("x" * 100_000)
                await client.get_message()
            assert info.value.reason.code == 1009
        assert seen and seen[0].code == 1009

    run(main)


def test_a_lost_connection_is_an_abnormal_close_and_sends_then_fail() -> None:
    seen: list[Closed] = []
    done = trio.Event()

    async def reader(ws: DirectWebSocket) -> None:
        await read_until_closed(ws, seen)
        with pytest.raises(Closed):
            await ws.send(["too late"])
        done.set()

    async def main() -> None:
        async with direct_server(reader) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            async with await trio.open_tcp_stream("127.0.0.1", port) as raw:
                await raw.send_all(UPGRADE)
                assert (await raw.receive_some(4096)).startswith(b"HTTP/1.1 101")
            with trio.fail_after(5):
                await done.wait()
            assert seen[0].code == 1006

    run(main)


def test_frames_sent_with_the_handshake_are_read_first() -> None:
    got: list[list[str | bytes]] = []

    async def reader(ws: DirectWebSocket) -> None:
        got.append(await ws.receive())

    async def main() -> None:
        async with direct_server(reader) as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            frame = bytes((0x81, 0x85)) + b"\0\0\0\0" + b"early"  # masked with the zero key
            async with await trio.open_tcp_stream("127.0.0.1", port) as raw:
                await raw.send_all(UPGRADE + frame)
                with trio.fail_after(5):
                    while not got:
                        await trio.sleep(0.01)
        assert got == [["early"]]

    run(main)


def test_backpressure_keeps_the_order_of_concurrent_senders() -> None:
    """A peer that stops reading fills the kernel's buffers: senders wait, in order, and nothing
    is lost or interleaved once it reads again."""
    sent: list[str] = []

    async def flood(ws: DirectWebSocket) -> None:
        async def sender(tag: str) -> None:
            for i in range(300):
                batch = [f"{tag}{i}-a" + "x" * 2000, f"{tag}{i}-b"]
                sent.extend(batch)  # the order of the calls is the order on the wire
                await ws.send(batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender, "p")
            nursery.start_soon(sender, "q")

    async def main() -> None:
        async with direct_server(flood) as url, open_websocket_url(url, message_queue_size=0) as client:
            await trio.sleep(0.5)  # the server blocks on full buffers meanwhile
            assert len(sent) < 1200  # (both senders are waiting)
            got = [await client.get_message() for _ in range(1200)]
            assert got == sent
            # Each batch (a run the call decided) stayed together.
            for i in range(0, 1200, 2):
                assert got[i].split("-")[0] == got[i + 1].split("-")[0]

    run(main)


# --- the client role: open_client against a trio-websocket server ---------------------------------


async def serve(handler: Callable[[WebSocketRequest], Awaitable[None]], nursery: trio.Nursery) -> int:
    server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None))
    return int(server.port)


def test_client_role_handshake_headers_messages_ping_and_close() -> None:
    headers: list[tuple[bytes, bytes]] = []
    closes: list[tuple[int, str | None]] = []

    async def handler(request: WebSocketRequest) -> None:
        headers.extend(request.headers)
        ws: WebSocketConnection = await request.accept()
        await ws.send_message("session.created")
        try:
            while True:
                message = await ws.get_message()
                await ws.ping()
                await ws.send_message(message)
        except ConnectionClosed as exc:
            closes.append((exc.reason.code, exc.reason.reason))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await serve(handler, nursery)
            url = f"ws://127.0.0.1:{port}/v1/realtime?model=m"
            async with open_client(url, extra_headers=[(b"Authorization", b"Bearer k")], ssl_context=None,
                                   connect_timeout=5, max_message=1 << 20) as ws:  # fmt: skip
                assert await ws.receive() == ["session.created"]
                await ws.send(["a", "b" * 70000])
                got: list[str | bytes] = []
                while len(got) < 2:
                    got += await ws.receive()  # pings from the server are answered meanwhile
                assert got == ["a", "b" * 70000]

                async def read_on() -> None:
                    with pytest.raises(Closed):
                        while True:
                            await ws.receive()

                async with trio.open_nursery() as reading:
                    reading.start_soon(read_on)  # the pong comes back through the reader
                    with trio.fail_after(5):
                        await ws.ping()
                    await ws.aclose(1000, "done")
            assert (b"authorization", b"Bearer k") in [(k.lower(), v) for k, v in headers]
            with trio.fail_after(5):
                while not closes:
                    await trio.sleep(0.01)
            assert closes == [(1000, "done")]
            nursery.cancel_scope.cancel()

    run(main)


def test_client_role_refused_upgrade_and_nothing_listening() -> None:
    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(403, body=b"no")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await serve(refuse, nursery)
            with pytest.raises(HandshakeFailed) as info:
                async with open_client(f"ws://127.0.0.1:{port}/", extra_headers=[], ssl_context=None,
                                       connect_timeout=5, max_message=100):  # fmt: skip
                    pass
            assert info.value.status == 403
            nursery.cancel_scope.cancel()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        with pytest.raises(OSError):
            async with open_client(f"ws://127.0.0.1:{free}/", extra_headers=[], ssl_context=None,
                                   connect_timeout=5, max_message=100):  # fmt: skip
                pass

    run(main)


def test_client_role_reads_frames_that_came_with_the_101() -> None:
    """A server may send its first event in the same segment as the handshake response."""

    async def raw_server(stream: trio.SocketStream) -> None:
        request = await read_request(stream)
        first = bytes((0x81, 5)) + b"first"
        await stream.send_all(accept_response(request.headers["sec-websocket-key"]) + first)
        await trio.sleep(1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, raw_server, 0, host="127.0.0.1"))
            port = listener.socket.getsockname()[1]
            async with open_client(f"ws://127.0.0.1:{port}/", extra_headers=[], ssl_context=None,
                                   connect_timeout=5, max_message=100, close_timeout=0.1) as ws:  # fmt: skip
                assert await ws.receive() == ["first"]
            nursery.cancel_scope.cancel()

    run(main)


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for ``localhost``, and a client context trusting it."""
    from datetime import datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp / "cert.pem").write_bytes(pem)
    (tmp / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


def test_client_role_over_tls(tmp_path: Path) -> None:
    """wss:// (the real Realtime API's scheme): the same framing over trio's SSLStream, the
    certificate checked against the host name."""
    server_ctx, client_ctx = _self_signed(tmp_path)

    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_websocket, echo, "127.0.0.1", 0, ssl_context=server_ctx))
            url = f"wss://localhost:{server.port}/v1/realtime"
            async with open_client(url, extra_headers=[], ssl_context=client_ctx,
                                   connect_timeout=5, max_message=1 << 20) as ws:  # fmt: skip
                await ws.send(["over tls", "x" * 70000])
                got: list[str | bytes] = []
                while len(got) < 2:
                    got += await ws.receive()
                assert got == ["over tls", "x" * 70000]
            # A certificate the client does not trust fails the connect, not silently.
            with pytest.raises((ssl.SSLError, trio.BrokenResourceError, HandshakeFailed)):
                async with open_client(url, extra_headers=[], ssl_context=ssl.create_default_context(),
                                       connect_timeout=5, max_message=1 << 20):  # fmt: skip
                    pass
            nursery.cancel_scope.cancel()

    trio.run(main)
