"""WebSocket framing (RFC 6455 section 5), sans I/O. Pure: bytes in, messages out; text in, bytes out.

Why not wsproto's frame layer (which the handshakes still use): a call's hot path is one small
frame per message each way, and per frame wsproto costs several times this module (measured in
BENCHMARKS.md, "One worker under load": receiving a 380-byte masked text frame, and sending a
masked client frame). The frames a call exchanges are the simplest kind (no extensions, small
text messages), so a reader and a writer for exactly RFC 6455 without extensions fit in one
module, and the differential tests check them against wsproto on every kind of frame.

What the reader enforces (each violation is a :class:`ProtocolError` with the close code the
RFC prescribes, for the connection to send): reserved bits unset (no extension is negotiated),
known opcodes, masking as the role requires (section 5.1: a server closes on an unmasked frame,
a client on a masked one), minimal length encoding, control frames final and at most 125 bytes,
fragments in order, messages within ``max_message`` bytes (1009), text valid UTF-8 (1007), and
close frames with a valid code and UTF-8 reason.

Masking is a big-integer XOR (one multiplication of the key, two conversions): the standard
library has no vectorised XOR, and this is the fastest pure-Python way (wsproto does the same).
A client's mask keys come from ``os.urandom`` (section 5.3 asks for a strong source of
entropy), drawn 4 KiB at a time.
"""

from __future__ import annotations

import os
import struct

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Close",
    "FrameReader",
    "FrameWriter",
    "Ping",
    "Pong",
    "ProtocolError",
    "close_payload",
    "mask",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Close codes this module puts on a protocol error (RFC 6455 section 7.4.1).
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
# A peer may send these, and 3000-4999 (section 7.4.2); 1012-1014 are registered with IANA since.
_VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")


class ProtocolError(Exception):
    """The peer broke the protocol; close the connection with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Close:
    """The peer's close frame: ``code`` None when it gave none (1005 in the RFC's terms)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason


Event = str | bytes | Ping | Pong | Close


def mask(data: bytes | bytearray | memoryview, key: bytes | bytearray | memoryview) -> bytes:
    """``data`` XOR the 4-byte ``key`` repeated (masking and unmasking are the same operation)."""
    n = len(data)
    if not n:
        return b""
    stream = (bytes(key) * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def close_payload(payload: bytes | bytearray) -> Close:
    """A close frame's payload read (section 5.5.1), or ProtocolError."""
    if not payload:
        return Close(None, "")
    if len(payload) == 1:
        raise ProtocolError(PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        raise ProtocolError(PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(INVALID_DATA, "close reason is not UTF-8") from None
    return Close(code, reason)


class FrameReader:
    """Splits received bytes into messages and control frames.

    ``masked`` is what the peer must do: True on a server (client frames are masked), False on a
    client. After a :class:`Close` or a :class:`ProtocolError` the reader is done: later bytes are
    ignored.
    """

    __slots__ = ("_buf", "_done", "_frag_op", "_frag_size", "_frags", "_masked", "_max")

    def __init__(self, *, masked: bool, max_message: int) -> None:
        self._masked = masked
        self._max = max_message
        self._buf = bytearray()  # an incomplete frame carried to the next feed
        self._frag_op = 0  # opcode of the fragmented message in progress (0: none)
        self._frags: list[bytes] = []
        self._frag_size = 0
        self._done = False

    def feed(self, data: bytes) -> list[Event]:
        """The complete messages (``str`` for text, ``bytes`` for binary) and control frames in
        ``data`` plus what was left over before, in order. Raises :class:`ProtocolError`."""
        if self._done:
            return []
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        out: list[Event] = []
        n = len(buf)
        pos = 0
        try:
            while n - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                length = b1 & 0x7F
                i = pos + 2
                if length == 126:
                    if n - i < 2:
                        break
                    length = (buf[i] << 8) | buf[i + 1]
                    if length < 126:
                        raise ProtocolError(PROTOCOL_ERROR, "payload length not minimally encoded")
                    i += 2
                elif length == 127:
                    if n - i < 8:
                        break
                    length = int.from_bytes(buf[i : i + 8], "big")
                    if length >> 63:
                        raise ProtocolError(PROTOCOL_ERROR, "payload length with the top bit set")
                    if length < 65536:
                        raise ProtocolError(PROTOCOL_ERROR, "payload length not minimally encoded")
                    i += 8
                opcode = b0 & 0x0F
                if b0 & 0x70:
                    raise ProtocolError(PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
                if bool(b1 & 0x80) is not self._masked:
                    raise ProtocolError(PROTOCOL_ERROR, "frame masked" if b1 & 0x80 else "frame not masked")
                if opcode >= 8:
                    if opcode > OP_PONG:
                        raise ProtocolError(PROTOCOL_ERROR, f"reserved opcode {opcode}")
                    if not b0 & 0x80:
                        raise ProtocolError(PROTOCOL_ERROR, "fragmented control frame")
                    if length > 125:
                        raise ProtocolError(PROTOCOL_ERROR, "control frame over 125 bytes")
                elif opcode > OP_BINARY:
                    raise ProtocolError(PROTOCOL_ERROR, f"reserved opcode {opcode}")
                elif self._frag_size + length > self._max:
                    raise ProtocolError(MESSAGE_TOO_BIG, f"message over {self._max} bytes")
                if self._masked:
                    if n - i < 4:
                        break
                    key = buf[i : i + 4]
                    i += 4
                    if n - i < length:
                        break
                    payload: bytes | bytearray = mask(buf[i : i + length], key)
                else:
                    if n - i < length:
                        break
                    payload = buf[i : i + length]
                pos = i + length
                if opcode in (OP_TEXT, OP_BINARY):
                    if self._frag_op:
                        raise ProtocolError(PROTOCOL_ERROR, "new message before the last one's final fragment")
                    if b0 & 0x80:
                        out.append(_message(opcode, payload))
                    else:
                        self._frag_op = opcode
                        self._frags = [bytes(payload)]
                        self._frag_size = length
                elif opcode == OP_CONTINUATION:
                    if not self._frag_op:
                        raise ProtocolError(PROTOCOL_ERROR, "continuation frame without a message")
                    self._frags.append(bytes(payload))
                    self._frag_size += length
                    if b0 & 0x80:
                        out.append(_message(self._frag_op, b"".join(self._frags)))
                        self._frag_op, self._frags, self._frag_size = 0, [], 0
                elif opcode == OP_PING:
                    out.append(Ping(bytes(payload)))
                elif opcode == OP_PONG:
                    out.append(Pong(bytes(payload)))
                else:  # OP_CLOSE
                    out.append(close_payload(payload))
                    self._done = True
                    self._buf = bytearray()
                    return out
        except ProtocolError:
            self._done = True
            self._buf = bytearray()
            raise
        if pos >= n:
            if self._buf:
                self._buf = bytearray()
        elif buf is self._buf:
            del self._buf[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        return out


def _message(opcode: int, payload: bytes | bytearray) -> str | bytes:
    if opcode == OP_TEXT:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_DATA, "text message is not UTF-8") from None
    return bytes(payload)


class FrameWriter:
    """Builds final, unfragmented frames; ``masked`` on a client (section 5.3)."""

    __slots__ = ("_keys", "_masked", "_next")

    def __init__(self, *, masked: bool) -> None:
        self._masked = masked
        self._keys = b""
        self._next = 0

    def _key(self) -> bytes:
        if self._next >= len(self._keys):
            self._keys = os.urandom(4096)
            self._next = 0
        key = self._keys[self._next : self._next + 4]
        self._next += 4
        return key

    def frame(self, opcode: int, payload: bytes) -> bytes:
        n = len(payload)
        if self._masked:
            if n < 126:
                head = bytes((0x80 | opcode, 0x80 | n))
            elif n < 65536:
                head = _HEAD16.pack(0x80 | opcode, 0xFE, n)
            else:
                head = _HEAD64.pack(0x80 | opcode, 0xFF, n)
            key = self._key()
            return head + key + mask(payload, key)
        if n < 126:
            return bytes((0x80 | opcode, n)) + payload
        if n < 65536:
            return _HEAD16.pack(0x80 | opcode, 126, n) + payload
        return _HEAD64.pack(0x80 | opcode, 127, n) + payload

    def message(self, message: str | bytes) -> bytes:
        """A text frame for ``str``, a binary frame for ``bytes``."""
        if isinstance(message, str):
            return self.frame(OP_TEXT, message.encode("utf-8"))
        return self.frame(OP_BINARY, message)

    def close(self, code: int | None = 1000, reason: str = "") -> bytes:
        """A close frame; the reason is cut to the 123 bytes a control frame leaves for it."""
        if code is None:
            return self.frame(OP_CLOSE, b"")
        text = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
        return self.frame(OP_CLOSE, code.to_bytes(2, "big") + text)
