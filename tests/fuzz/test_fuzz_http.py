"""The public port's request reader (``bridge.server.http``) against any bytes a client may send.

Contract: ``read_request`` returns a ``Request`` or raises ``BadRequest`` (with a status and a
refusal kind the metrics know), whatever arrives and however it is split or paced; nothing else
escapes. ``read_body`` likewise. A well-formed request reads back as sent.
"""

from __future__ import annotations

import itertools
from typing import Any

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from bridge.server.http import BadRequest, Limits, Request, read_body, read_request

LIMITS = Limits(head_timeout_s=5.0, max_head_bytes=2048, max_body_bytes=1024)
KINDS = {"head_timeout", "head_too_large", "bad_request", "body_timeout", "body_too_large"}

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TOKEN, min_size=1, max_size=12)
# Header values as h11 keeps them: visible bytes and obs-text, inner spaces, no edge whitespace.
values = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c == 0x20 or 0x21 <= c <= 0x7E or c >= 0x80).strip(b" ")
)
targets = st.text(alphabet="".join(chr(c) for c in range(0x21, 0x7F)), min_size=1, max_size=60).map(
    lambda t: "/" + t.lstrip("/")
)


def run(fn: Any) -> Any:
    """Run on a clock that jumps ahead whenever every task waits: time limits cost no real time."""
    box: list[Any] = []

    async def main() -> None:
        box.append(await fn())

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return box[0]


async def _feed(chunks: list[bytes], close: bool, read: Any) -> Any:
    """Send ``chunks`` (then EOF or silence) to ``read(stream)``; its result or its BadRequest."""
    client, server = trio.testing.memory_stream_pair()
    result: list[Any] = []

    async def send() -> None:
        for chunk in chunks:
            await client.send_all(chunk)
            await trio.sleep(0.01)
        if close:
            await client.aclose()
        else:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        try:
            result.append(await read(server))
        except BadRequest as exc:
            result.append(exc)
        nursery.cancel_scope.cancel()
    return result[0]


def _check_refusal(value: object) -> None:
    if isinstance(value, BadRequest):
        assert value.status in (400, 408, 413, 431) and value.kind in KINDS, (value.status, value.kind)


# --- any bytes ------------------------------------------------------------------------------

HEAD_PIECES = [b"GET ", b"POST ", b"/twiml", b"/media", b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2", b"\r\n", b"\n",
               b"\r\n\r\n", b"Host: x", b"Content-Length: ", b"5", b"-1", b"99999999999999999999",
               b"Transfer-Encoding: chunked", b"Upgrade: websocket", b"Connection: Upgrade", b":", b" ", b"\t",
               b"\x00", b"\xff", b"0\r\n\r\n", b"a" * 3000]  # fmt: skip
heads = st.lists(st.sampled_from(HEAD_PIECES) | st.binary(max_size=20), max_size=30).map(b"".join)


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@given(data=st.data(), close=st.booleans())
def test_any_bytes_make_a_request_or_a_refusal(data: st.DataObject, close: bool) -> None:
    raw = data.draw(heads | st.binary(max_size=300))
    chunks = data.draw(split(raw))

    async def read(stream: trio.abc.Stream) -> Any:
        request = await read_request(stream, LIMITS)
        assert isinstance(request, Request)
        if request.method == "POST":  # the webhook path reads the body too
            body = await read_body(stream, request, LIMITS)
            assert isinstance(body, bytes) and len(body) <= LIMITS.max_body_bytes
        return request

    _check_refusal(run(lambda: _feed(chunks, close, read)))


# --- well-formed requests ---------------------------------------------------------------------


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, str, str, list[tuple[str, bytes]], bytes, str]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "OPTIONS"]) | tokens)
    target = draw(targets)
    headers = draw(st.lists(st.tuples(tokens, values), max_size=6))
    headers = [(n, v) for n, v in headers if n.lower() not in ("content-length", "transfer-encoding", "host")]
    body = draw(st.binary(max_size=1500)) if method == "POST" else b""
    framing = draw(st.sampled_from(["length", "chunked"]))
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: bridge.example"]
    lines += [n.encode() + b": " + v for n, v in headers]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}".encode() if framing == "length" else b"Transfer-Encoding: chunked")
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if method == "POST" and framing == "chunked":
        payload = (
            b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in [body[:700], body[700:]] if c) + b"0\r\n\r\n"
        )
    else:
        payload = body
    return head + payload, method, target, headers, body, framing


@given(request=requests(), data=st.data())
def test_a_well_formed_request_reads_back_as_sent(
    request: tuple[bytes, str, str, list[tuple[str, bytes]], bytes, str], data: st.DataObject
) -> None:
    raw, method, target, headers, body, _ = request
    chunks = data.draw(split(raw))

    async def read(stream: trio.abc.Stream) -> Any:
        req = await read_request(stream, LIMITS)
        got = await read_body(stream, req, LIMITS) if req.method == "POST" else b""
        return req, got

    result = run(lambda: _feed(chunks, True, read))
    head_size = raw.index(b"\r\n\r\n") + 4
    if head_size > LIMITS.max_head_bytes:
        assert isinstance(result, BadRequest) and result.kind == "head_too_large"
        return
    if len(body) > LIMITS.max_body_bytes:
        assert isinstance(result, BadRequest) and (result.status, result.kind) == (413, "body_too_large")
        return
    assert not isinstance(result, BadRequest), result.reason
    req, got = result
    assert (req.method, req.target) == (method, target)
    assert req.path == target.split("?", 1)[0]
    expected: dict[str, str] = {"host": "bridge.example"}
    for name, value in headers:
        key, text = name.lower(), value.decode("latin-1")
        expected[key] = f"{expected[key]}, {text}" if key in expected else text
    assert {k: v for k, v in req.headers.items() if k not in ("content-length", "transfer-encoding")} == expected
    assert got == body
    assert req.raw == raw[: len(req.raw)] and len(req.raw) >= head_size


@given(request=requests(), cut=st.integers(min_value=1, max_value=2000))
def test_a_request_cut_short_is_refused(
    request: tuple[bytes, str, str, list[tuple[str, bytes]], bytes, str], cut: int
) -> None:
    """A client that closes mid-request, or stops sending, gets a refusal with its kind."""
    raw = request[0]
    if cut >= len(raw):
        return
    for close in (True, False):

        async def read(stream: trio.abc.Stream) -> Any:
            req = await read_request(stream, LIMITS)
            return await read_body(stream, req, LIMITS) if req.method == "POST" else req

        result = run(lambda close=close: _feed([raw[:cut]], close, read))
        if isinstance(result, BadRequest):
            _check_refusal(result)
            if not close and result.status == 408:
                assert result.kind in ("head_timeout", "body_timeout")
        else:
            # Only a request whose head is complete and has no body to wait for can succeed.
            assert (raw.index(b"\r\n\r\n") + 4 <= cut and request[1] != "POST") or request[4] == b""
