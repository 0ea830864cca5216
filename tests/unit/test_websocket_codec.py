"""bridge.websocket.codec against wsproto, the kept library it replaces on the hot path.

Every frame our writer builds, wsproto's reader must read as the same message (and the other way
round), for both roles and every size class of the length field; the reader must refuse what
RFC 6455 forbids with the close code the RFC prescribes, as wsproto does.
"""

from __future__ import annotations

import random
import struct

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage

from bridge.websocket import codec
from bridge.websocket.codec import Close, FrameReader, FrameWriter, ProtocolError

SIZES = [0, 1, 3, 4, 5, 125, 126, 127, 300, 65535, 65536, 70000]
TEXTS = ["", "a", '{"event":"media"}', "é€😀", "x" * 125, "y" * 126, "z" * 65535, "w" * 65536]


def _wsproto_messages(conn: Connection, data: bytes) -> list[object]:
    conn.receive_data(data)
    out: list[object] = []
    parts: list[object] = []
    for event in conn.events():
        if isinstance(event, Message):
            parts.append(event.data)
            if event.message_finished:
                out.append("".join(parts) if isinstance(event, TextMessage) else b"".join(parts))  # type: ignore[arg-type]
                parts = []
        else:
            out.append(event)
    return out


@pytest.mark.parametrize("client", [True, False])
def test_every_frame_we_write_is_read_by_wsproto_as_the_same_message(client: bool) -> None:
    writer = FrameWriter(masked=client)
    peer = Connection(ConnectionType.SERVER if client else ConnectionType.CLIENT)
    for text in TEXTS:
        assert _wsproto_messages(peer, writer.message(text)) == [text]
    for size in SIZES:
        payload = random.Random(size).randbytes(size)
        assert _wsproto_messages(peer, writer.message(payload)) == [payload]
    (ping,) = _wsproto_messages(peer, writer.frame(codec.OP_PING, b"abcd"))
    assert isinstance(ping, Ping) and ping.payload == b"abcd"
    (close,) = _wsproto_messages(peer, writer.close(1011, "bye"))
    assert isinstance(close, CloseConnection) and (close.code, close.reason) == (1011, "bye")


@pytest.mark.parametrize("client", [True, False])
def test_every_frame_wsproto_writes_is_read_by_us_as_the_same_message(client: bool) -> None:
    # We read what the other role writes: a server reads masked client frames.
    peer = Connection(ConnectionType.CLIENT if not client else ConnectionType.SERVER)
    reader = FrameReader(masked=not client, max_message=1 << 20)
    for text in TEXTS:
        assert reader.feed(peer.send(TextMessage(text))) == [text]
    for size in SIZES:
        payload = random.Random(size).randbytes(size)
        assert reader.feed(peer.send(BytesMessage(payload))) == [payload]
    (ping,) = reader.feed(peer.send(Ping(b"xy")))
    assert isinstance(ping, codec.Ping) and ping.payload == b"xy"
    (pong,) = reader.feed(peer.send(Pong(b"xy")))
    assert isinstance(pong, codec.Pong) and pong.payload == b"xy"
    (close,) = reader.feed(peer.send(CloseConnection(1001, "going")))
    assert isinstance(close, Close) and (close.code, close.reason) == (1001, "going")


def test_a_stream_cut_anywhere_gives_the_same_messages_and_fragments_are_joined() -> None:
    peer = Connection(ConnectionType.CLIENT)
    wire = b"".join(
        [
            peer.send(TextMessage("first ")),
            peer.send(TextMessage("frag", message_finished=False)),
            peer.send(Ping(b"p")),  # control frames may come between fragments
            peer.send(TextMessage("mented é", message_finished=True)),
            peer.send(BytesMessage(b"\x00\x01" * 200)),
            peer.send(TextMessage("z" * 70000)),
        ]
    )
    whole = FrameReader(masked=True, max_message=1 << 20).feed(wire)
    messages = [m for m in whole if not isinstance(m, codec.Ping)]
    assert messages == ["first ", "fragmented é", b"\x00\x01" * 200, "z" * 70000]
    rng = random.Random(7)
    for _ in range(40):
        reader = FrameReader(masked=True, max_message=1 << 20)
        cuts = sorted(rng.sample(range(1, len(wire)), 12))
        got: list[object] = []
        for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
            got += reader.feed(wire[a:b])
        assert [type(x) for x in got] == [type(x) for x in whole]
        assert [x for x in got if not isinstance(x, codec.Ping)] == [x for x in whole if not isinstance(x, codec.Ping)]


def _masked(opcode_byte: int, payload: bytes, length_byte: int | None = None, ext: bytes = b"") -> bytes:
    key = b"\x01\x02\x03\x04"
    n = len(payload) if length_byte is None else length_byte
    return bytes((opcode_byte, 0x80 | n)) + ext + key + codec.mask(payload, key)


BAD = [
    ("reserved bits", _masked(0x81 | 0x40, b"hi"), 1002),
    ("reserved opcode", _masked(0x83, b"hi"), 1002),
    ("reserved control opcode", _masked(0x8B, b""), 1002),
    ("unmasked client frame", bytes((0x81, 2)) + b"hi", 1002),
    ("fragmented ping", _masked(0x09, b"p"), 1002),
    ("control frame over 125 bytes", _masked(0x89, b"p" * 126, 126, struct.pack("!H", 126)), 1002),
    ("continuation without a message", _masked(0x80, b"x"), 1002),
    ("new message before the final fragment", _masked(0x01, b"a") + _masked(0x81, b"b"), 1002),
    ("16-bit length for a small payload", _masked(0x81, b"hi", 126, struct.pack("!H", 2)), 1002),
    ("64-bit length for a medium payload", _masked(0x81, b"hi", 127, struct.pack("!Q", 2)), 1002),
    ("invalid UTF-8 text", _masked(0x81, b"\xff\xfe"), 1007),
    ("invalid UTF-8 across fragments", _masked(0x01, b"\xe2\x82") + _masked(0x80, b"\x28"), 1007),
    ("close with one byte", _masked(0x88, b"\x03"), 1002),
    ("close with code 1005", _masked(0x88, struct.pack("!H", 1005)), 1002),
    ("close with code 999", _masked(0x88, struct.pack("!H", 999)), 1002),
    ("close with a reason that is not UTF-8", _masked(0x88, struct.pack("!H", 1000) + b"\xff"), 1007),
]


@pytest.mark.parametrize(("name", "wire", "code"), BAD, ids=[b[0] for b in BAD])
def test_protocol_violations_are_refused_with_the_rfc_close_code(name: str, wire: bytes, code: int) -> None:
    reader = FrameReader(masked=True, max_message=1 << 20)
    with pytest.raises(ProtocolError) as info:
        reader.feed(wire)
    assert info.value.code == code and info.value.reason
    assert reader.feed(_masked(0x81, b"after")) == []  # a failed reader reads nothing more
    # wsproto (the server side of it) refuses the same bytes too.
    peer = Connection(ConnectionType.SERVER)
    peer.receive_data(wire)
    events = list(peer.events())
    assert any(isinstance(e, CloseConnection) and e.code == code for e in events), (name, events)


def test_a_client_refuses_masked_frames_and_reads_unmasked_ones() -> None:
    reader = FrameReader(masked=False, max_message=100)
    assert reader.feed(bytes((0x81, 2)) + b"hi") == ["hi"]
    with pytest.raises(ProtocolError) as info:
        reader.feed(_masked(0x81, b"hi"))
    assert info.value.code == 1002


def test_a_message_over_the_limit_is_refused_with_1009_before_it_has_arrived() -> None:
    reader = FrameReader(masked=True, max_message=1000)
    assert reader.feed(_masked(0x81, b"x" * 1000, 126, struct.pack("!H", 1000))) == ["x" * 1000]
    header_only = bytes((0x81, 0x80 | 127)) + struct.pack("!Q", 1 << 40)  # 1 TiB announced
    with pytest.raises(ProtocolError) as info:
        reader.feed(header_only)
    assert info.value.code == 1009
    # Across fragments too.
    reader = FrameReader(masked=True, max_message=1000)
    part = _masked(0x01, b"x" * 600, 126, struct.pack("!H", 600))
    assert reader.feed(part) == []
    with pytest.raises(ProtocolError) as info:
        reader.feed(_masked(0x80, b"y" * 600, 126, struct.pack("!H", 600)))
    assert info.value.code == 1009


def test_close_frames_without_a_code_and_what_follows_a_close() -> None:
    reader = FrameReader(masked=True, max_message=100)
    (close,) = reader.feed(_masked(0x88, b"") + _masked(0x81, b"late"))
    assert isinstance(close, Close) and close.code is None and close.reason == ""
    assert reader.feed(_masked(0x81, b"later")) == []


def test_client_mask_keys_differ_and_the_writer_cuts_long_close_reasons() -> None:
    writer = FrameWriter(masked=True)
    keys = {writer.message("x")[2:6] for _ in range(2000)}
    assert len(keys) > 1990  # fresh random keys (os.urandom), not a constant
    close = writer.close(1000, "é" * 100)  # 200 bytes of UTF-8: cut to fit 125, on a character boundary
    reader = FrameReader(masked=True, max_message=10)
    (event,) = reader.feed(close)
    assert isinstance(event, Close) and event.code == 1000 and event.reason == "é" * 61


def test_mask_is_its_own_inverse() -> None:
    rng = random.Random(3)
    for n in (0, 1, 2, 3, 4, 5, 17, 300):
        data, key = rng.randbytes(n), rng.randbytes(4)
        masked = codec.mask(data, key)
        assert codec.mask(masked, key) == data
        assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(data))
