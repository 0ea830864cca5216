"""The public port's request reader: time and size limits, each refusal with its own kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from bridge.server.http import BadRequest, Limits, Request, read_body, read_request

LIMITS = Limits(head_timeout_s=5.0, max_head_bytes=2048, max_body_bytes=1024)
UPGRADE = {
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def run_with_clock(fn: Callable[[], Awaitable[None]]) -> None:
    """Run on a clock that jumps ahead whenever every task waits: time limits cost no real time."""
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def _pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    client, server = trio.testing.memory_stream_pair()
    return client, server


async def _refusal(chunks: list[bytes], pace_s: float = 0.0, *, body: bool = False) -> tuple[BadRequest, float]:
    client, server = _pair()
    started = trio.current_time()

    async def send() -> None:
        for chunk in chunks:
            await client.send_all(chunk)
            await trio.sleep(pace_s)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        with pytest.raises(BadRequest) as info:
            request = await read_request(server, LIMITS)
            if body:
                await read_body(server, request, LIMITS)
        nursery.cancel_scope.cancel()
    return info.value, trio.current_time() - started


def test_a_head_sent_one_byte_a_second_is_cut_at_the_deadline() -> None:
    async def main() -> None:
        head = b"GET /twiml HTTP/1.1\r\nHost: x\r\n\r\n"
        error, elapsed = await _refusal([head[i : i + 1] for i in range(len(head))], pace_s=1.0)
        assert (error.status, error.kind) == (408, "head_timeout")
        assert elapsed == pytest.approx(LIMITS.head_timeout_s)  # not len(head) seconds

    run_with_clock(main)


def test_a_head_that_never_comes_is_cut_at_the_deadline() -> None:
    async def main() -> None:
        error, elapsed = await _refusal([])
        assert (error.status, error.kind) == (408, "head_timeout")
        assert elapsed == pytest.approx(LIMITS.head_timeout_s)

    run_with_clock(main)


def test_an_oversized_head_is_refused_with_431() -> None:
    async def main() -> None:
        error, _ = await _refusal([b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 4096 + b"\r\n\r\n"])
        assert (error.status, error.kind) == (431, "head_too_large")
        # Refused as soon as the limit is passed, even if the head never ends.
        error, _ = await _refusal([b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 4096])
        assert error.kind == "head_too_large"

    run_with_clock(main)


@pytest.mark.parametrize(
    "garbage", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nbad header\r\n\r\n", b"\x00\x01\x02\r\n\r\n"]
)
def test_garbage_is_a_bad_request(garbage: bytes) -> None:
    async def main() -> None:
        error, _ = await _refusal([garbage])
        assert (error.status, error.kind) == (400, "bad_request")

    run_with_clock(main)


def test_a_closed_connection_is_a_bad_request() -> None:
    async def main() -> None:
        client, server = _pair()
        await client.send_all(b"GET / HT")
        await client.aclose()
        with pytest.raises(BadRequest) as info:
            await read_request(server, LIMITS)
        assert info.value.kind == "bad_request"

    run_with_clock(main)


def test_body_limits() -> None:
    async def main() -> None:
        head = b"POST /twiml HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"
        error, _ = await _refusal([head, b"a" * 2000], body=True)
        assert (error.status, error.kind) == (413, "body_too_large")
        error, elapsed = await _refusal([head, b"a" * 10], body=True)
        assert (error.status, error.kind) == (408, "body_timeout")
        assert elapsed == pytest.approx(LIMITS.head_timeout_s)  # the body has a deadline of its own

    run_with_clock(main)


def test_a_request_within_the_limits_is_read_whole() -> None:
    async def main() -> None:
        client, server = _pair()
        await client.send_all(b"POST /twiml?a=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 3\r\n\r\n")
        await client.send_all(b"abc")
        request = await read_request(server, LIMITS)
        assert (request.method, request.path, request.query) == ("POST", "/twiml", "a=1")
        assert request.headers["x-a"] == "1, 2"
        assert await read_body(server, request, LIMITS) == b"abc"

    run_with_clock(main)


@pytest.mark.parametrize(
    ("method", "drop", "change", "problem"),
    [
        ("GET", None, None, None),
        ("POST", None, None, "a WebSocket upgrade must be a GET"),
        ("GET", "sec-websocket-key", None, "Sec-WebSocket-Key is missing"),
        ("GET", "sec-websocket-version", None, "Sec-WebSocket-Version must be 13"),
        ("GET", None, ("sec-websocket-version", "8"), "Sec-WebSocket-Version must be 13"),
    ],
)
def test_handshake_problem(method: str, drop: str | None, change: tuple[str, str] | None, problem: str | None) -> None:
    headers = {k: v for k, v in UPGRADE.items() if k != drop}
    if change:
        headers[change[0]] = change[1]
    request = Request(method, "/media", headers, b"")
    assert request.is_websocket
    assert request.handshake_problem() == problem
