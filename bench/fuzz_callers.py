"""The callers of bench/fuzz_bench.py (its own process, trio, hand-made WebSocket frames).

Four kinds of client on the bridge's public port, all at once:

* **good calls** (``good-N``): Twilio, Telnyx, Plivo and SignalWire streams whose audio reaches a
  ``pcmu`` session unchanged. Each sends a fresh random 20 ms μ-law frame every 20 ms for
  ``--good-seconds``, echoes marks, waits for the answers the model sends (their count is known),
  then sends ``stop``. Every payload sent and received is recorded for the byte-exact check.
* **carrier fuzzers** (``fuzzc-N``): one call after another on all six carriers' routes, each a
  sequence of mutated messages (bench/fuzz_mutations.py) mixed with valid ones: truncated JSON,
  wrong types, invalid base64, binary where text is expected, media before start, a second start,
  echoes of marks never sent, events after stop, huge messages; some end with a message that
  ends the call by design (a message over the size cap, a text frame that is not UTF-8, an
  unusable start). Until ``--carrier-messages`` mutated messages are sent.
* **model-fuzz calls** (``fuzzm-N``): valid streams whose model session is the hostile one of
  bench/fuzz_upstream.py; they run until its progress file says ``--model-messages`` mutated events
  were sent.
* **junk HTTP** requests: mutated request heads and webhook requests with odd Host headers.

Each connection binds its own loopback source address (127.x.y.z), so the bridge's
``call_connected`` log line (``remote``) names the call's record. Every connection's outcome (HTTP
status, close code and reason received, who closed first, messages by kind) goes to ``--out``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_mutations import (
    CARRIER_KINDS,
    DIALECTS,
    ENDING_CARRIER_KINDS,
    Dialect,
    Frame,
    b64,
    is_text,
    mutate_carrier,
    valid_message,
    weighted,
)
from load_bench import FrameParser, ws_frame

GOOD_DIALECTS = [d for d in DIALECTS.values() if d.passthrough]


@dataclass
class Outcome:
    """One connection, as the caller saw it."""

    role: str  # good, fuzzc, fuzzm, http
    tag: str
    dialect: str
    source: str  # ip:port the bridge logs as "remote"
    status: int | None = None  # HTTP status of the upgrade (101) or of the request
    close_code: int | None = None
    close_reason: str | None = None
    closed_first: bool = False  # the caller sent the first close frame
    tcp_closed_without_close_frame: bool = False
    sent: dict[str, int] = field(default_factory=dict)  # mutated messages by kind
    ending: str | None = None  # the call-ending mutation it finished with, if any
    valid_sent: int = 0
    received_media: int = 0
    error: str | None = None
    sent_audio: list[str] = field(default_factory=list)  # good calls only
    received_audio: list[str] = field(default_factory=list)


class Sources:
    """A distinct loopback address for every connection."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        self.n += 1
        n = self.n
        return f"127.{10 + n // 62_500}.{(n // 250) % 250}.{n % 250 + 1}"


class Client:
    """A WebSocket client speaking raw frames (client frames masked with the zero key)."""

    def __init__(self, outcome: Outcome) -> None:
        self.o = outcome
        self.stream: trio.SocketStream | None = None
        self.open = False
        self.closed = trio.Event()
        self.lock = trio.Lock()
        self.on_frame: Any = None

    async def connect(self, port: int, path: str, source: str, headers: bytes = b"") -> bool:
        try:
            self.stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
        except OSError as exc:
            self.o.error = f"connect: {exc!r}"
            return False
        addr = self.stream.socket.getsockname()
        self.o.source = f"{addr[0]}:{addr[1]}"
        key = base64.b64encode(os.urandom(16))
        await self.stream.send_all(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
            + b"\r\nSec-WebSocket-Version: 13\r\n" + headers + b"\r\n"
        )  # fmt: skip
        head = b""
        with trio.move_on_after(15):
            while b"\r\n\r\n" not in head:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                head += data
        line = head.split(b"\r\n", 1)[0]
        parts = line.split()
        self.o.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        if self.o.status != 101:
            await self.stream.aclose()
            return False
        self.open = True
        self._rest = head.partition(b"\r\n\r\n")[2]
        return True

    async def reader(self) -> None:
        assert self.stream is not None
        parser = FrameParser()
        data = self._rest
        pending = b""
        try:
            while True:
                for opcode, payload, _key, fin in parser.feed(data):
                    if opcode == 0x9:
                        await self.send(payload, 0xA)
                    elif opcode == 0x8:
                        self.o.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                        self.o.close_reason = payload[2:].decode("utf-8", "replace")
                        if not self.o.closed_first:
                            await self.send(payload[:2], 0x8)
                        self.open = False
                        return
                    elif opcode in (0x0, 0x1, 0x2):
                        pending += payload
                        if fin:
                            frame: Frame = pending if opcode == 0x2 else pending.decode("utf-8", "replace")
                            pending = b""
                            if self.on_frame is not None:
                                await self.on_frame(frame)
                data = await self.stream.receive_some(262144)
                if not data:
                    self.o.tcp_closed_without_close_frame = self.o.close_code is None
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
            if self.o.close_code is None:
                self.o.tcp_closed_without_close_frame = True
                self.o.error = self.o.error or repr(exc)
        finally:
            self.open = False
            self.closed.set()

    async def send(self, payload: bytes, opcode: int) -> bool:
        if self.stream is None:
            return False
        async with self.lock:
            try:
                await self.stream.send_all(ws_frame(payload, opcode, mask=True))
                return True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.open = False
                return False

    async def message(self, frame: Frame, text: bool | None = None) -> bool:
        """Send one message; ``text`` overrides the frame type (a bytes frame sent as text)."""
        if not self.open:
            return False
        as_text = isinstance(frame, str) if text is None else text
        data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
        return await self.send(data, 0x1 if as_text else 0x2)

    async def close(self, code: int = 1000) -> None:
        if self.open:
            self.o.closed_first = self.o.close_code is None
            await self.send(code.to_bytes(2, "big"), 0x8)

    async def finish(self, wait: float = 5.0) -> None:
        with trio.move_on_after(wait):
            await self.closed.wait()
        if self.stream is not None:
            with trio.move_on_after(1):
                await self.stream.aclose()


class Callers:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sources = Sources()
        self.outcomes: list[Outcome] = []
        self.carrier_mutated = 0
        self.model_target_reached = False
        self.carrier_done = False
        self.rng = random.Random(args.seed)
        self.n = Counter[str]()

    def tag(self, role: str) -> str:
        self.n[role] += 1
        return f"{role}-{self.n[role]}"

    async def _call(self, role: str, dialect: Dialect) -> tuple[Client, Outcome] | None:
        outcome = Outcome(role, self.tag(role), dialect.name, "")
        self.outcomes.append(outcome)
        client = Client(outcome)
        if not await client.connect(self.args.port, dialect.route, self.sources.next()):
            return None
        return client, outcome

    # --- good calls ------------------------------------------------------------------------------
    async def good_loop(self) -> None:
        while not (self.carrier_done and self.model_target_reached):
            await self.good_call(GOOD_DIALECTS[self.n["good"] % len(GOOD_DIALECTS)])

    async def good_call(self, dialect: Dialect) -> None:
        a = self.args
        got = await self._call("good", dialect)
        if got is None:
            return
        client, o = got
        rng = random.Random(zlib.crc32(o.tag.encode()) ^ a.seed)
        sid, call = f"MZ{o.tag}", f"CA{o.tag}"
        expected = a.good_answers * a.good_deltas
        progress = trio.Event()

        async def on_frame(frame: Frame) -> None:
            seen = dialect.read(frame)
            if seen is None:
                return
            kind, value = seen
            if kind == "media":
                o.received_audio.append(value)
                o.received_media += 1
                if len(o.received_audio) >= expected:
                    progress.set()
            elif kind == "mark":
                await client.message(dialect.mark_echo(value, sid))

        client.on_frame = on_frame
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.reader)
            await client.message(dialect.start(sid, call, {"bench_call": o.tag}))
            started = trio.current_time()
            seq = 0
            while trio.current_time() - started < a.good_seconds and client.open:
                seq += 1
                payload = b64(rng.randbytes(dialect.frame_bytes))
                if await client.message(dialect.media(payload, seq, sid)):
                    o.sent_audio.append(payload)
                await trio.sleep_until(started + seq * 0.020)
            with trio.move_on_after(10):
                await progress.wait()  # every answer heard before hanging up
            stop = dialect.stop(sid, call)
            if stop is not None:
                await client.message(stop)
            else:
                await client.close()
            await client.finish()
            nursery.cancel_scope.cancel()

    # --- carrier fuzzing -----------------------------------------------------------------------
    async def fuzz_loop(self) -> None:
        a = self.args
        interval = a.fuzz_calls / a.rate  # each of the fuzz_calls slots sends at rate / fuzz_calls
        names = list(DIALECTS)
        while self.carrier_mutated < a.carrier_messages:
            await self.fuzz_call(DIALECTS[names[self.n["fuzzc"] % len(names)]], interval)
        self.carrier_done = True

    async def fuzz_call(self, dialect: Dialect, interval: float) -> None:
        a = self.args
        got = await self._call("fuzzc", dialect)
        if got is None:
            return
        client, o = got
        rng = random.Random(zlib.crc32(o.tag.encode()) ^ (a.seed << 8))
        sid, call = f"MZ{o.tag}", f"CA{o.tag}"
        sent: Counter[str] = Counter()

        async def on_frame(frame: Frame) -> None:
            seen = dialect.read(frame)
            if seen is not None and seen[0] == "mark" and rng.random() < 0.5:
                await client.message(dialect.mark_echo(seen[1], sid))  # some echoes, in any order

        async def mutated(kind: str, label: str | None = None) -> bool:
            frame = mutate_carrier(rng, dialect, kind, sid, call, seq)
            ok = await client.message(frame, text=is_text(frame, kind))
            if ok:
                sent[label or kind] += 1
                self.carrier_mutated += 1
            await trio.sleep(interval)
            return ok

        client.on_frame = on_frame
        seq = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.reader)
            for _ in range(rng.choice([0, 0, 0, 1, 3])):
                await mutated("media_before_start")
            if rng.random() < 0.9:
                await client.message(dialect.start(sid, call, {"bench_call": o.tag}))
            length = rng.randint(40, 400)
            ending = rng.choice(sorted(ENDING_CARRIER_KINDS)) if rng.random() < 0.25 else None
            for _ in range(length):
                if not client.open or self.carrier_mutated >= a.carrier_messages:
                    break
                seq += 1
                if rng.random() < 0.3:
                    if await client.message(valid_message(rng, dialect, sid, call, seq)):
                        o.valid_sent += 1
                    await trio.sleep(interval)
                    continue
                kind = weighted(rng, CARRIER_KINDS)
                if kind == "text_for_binary" and not dialect.binary_audio:
                    kind = "not_json"
                if kind == "second_start" or rng.random() < 0.02:
                    kind = "second_start"
                await mutated(kind)
            if ending is not None and client.open:
                await mutated(ending)
                o.ending = ending
                with trio.move_on_after(3):  # the bridge ends the call (most starts are refused as a
                    await client.closed.wait()  # second start, which does not end it: then hang up)
            if client.open:
                stop = dialect.stop(sid, call)
                if stop is not None:
                    await client.message(stop)
                    for _ in range(rng.choice([0, 0, 1, 3])):  # events after stop
                        await mutated(rng.choice(["truncated", "invalid_base64", "unknown_mark"]), "after_stop")
                else:
                    await client.close()
                await client.finish()
            else:
                await client.finish()
            nursery.cancel_scope.cancel()
        o.sent = dict(sent)

    # --- calls whose model is hostile -------------------------------------------------------------
    async def model_fuzz_loop(self) -> None:
        dialects = list(DIALECTS.values())
        while not self.model_target_reached:
            await self.model_fuzz_call(dialects[self.n["fuzzm"] % len(dialects)])

    async def model_fuzz_call(self, dialect: Dialect) -> None:
        a = self.args
        got = await self._call("fuzzm", dialect)
        if got is None:
            await trio.sleep(0.5)
            return
        client, o = got
        rng = random.Random(zlib.crc32(o.tag.encode()) ^ (a.seed << 16))
        sid, call = f"MZ{o.tag}", f"CA{o.tag}"

        async def on_frame(frame: Frame) -> None:
            seen = dialect.read(frame)
            if seen is None:
                return
            if seen[0] == "media":
                o.received_media += 1
            elif seen[0] == "mark" and rng.random() < 0.9:
                await client.message(dialect.mark_echo(seen[1], sid))

        client.on_frame = on_frame
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.reader)
            await client.message(dialect.start(sid, call, {"bench_call": o.tag}))
            started = trio.current_time()
            seq = 0
            while (
                client.open and not self.model_target_reached and trio.current_time() - started < a.model_call_seconds
            ):
                seq += 1
                if await client.message(dialect.media(b64(rng.randbytes(dialect.frame_bytes)), seq, sid)):
                    o.valid_sent += 1
                await trio.sleep_until(started + seq * 0.020)
            if client.open:
                stop = dialect.stop(sid, call)
                if stop is not None:
                    await client.message(stop)
                else:
                    await client.close()
            await client.finish()
            nursery.cancel_scope.cancel()

    async def watch_model_progress(self) -> None:
        a = self.args
        while not self.model_target_reached:
            await trio.sleep(0.5)
            try:
                count = json.loads(a.upstream_progress.read_text())["model_mutated"]
            except (OSError, ValueError, KeyError):
                continue
            if count >= a.model_messages:
                self.model_target_reached = True

    # --- junk HTTP ------------------------------------------------------------------------------
    async def junk_http(self) -> None:
        """``--http-requests`` junk requests over ``--http-lanes`` connections at a time (a request
        the bridge answers only at its head timeout must not hold the others up)."""
        numbers = iter(range(self.args.http_requests))
        async with trio.open_nursery() as nursery:
            for _ in range(self.args.http_lanes):
                nursery.start_soon(self._junk_lane, numbers)

    async def _junk_lane(self, numbers: Iterator[int]) -> None:
        a = self.args
        for i in numbers:
            o = Outcome("http", f"http-{i + 1}", "", "")
            self.outcomes.append(o)
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", a.port, local_address=self.sources.next())
            except OSError as exc:
                o.error = repr(exc)
                continue
            addr = stream.socket.getsockname()
            o.source = f"{addr[0]}:{addr[1]}"
            kind, request = junk_request(random.Random(a.seed * 1_000_003 + i))  # repeatable per request
            o.sent = {kind: 1}
            head = b""
            try:
                await stream.send_all(request)
                with trio.move_on_after(10):
                    while True:
                        data = await stream.receive_some(65536)
                        if not data:
                            break
                        head += data
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                o.error = repr(exc)
            parts = head.split(b"\r\n", 1)[0].split()
            o.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
            with trio.move_on_after(1):
                await stream.aclose()
            await trio.sleep(0.01)

    async def main(self) -> None:
        a = self.args
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watch_model_progress)
            for _ in range(a.good_calls):
                nursery.start_soon(self.good_loop)
            for _ in range(a.model_calls):
                nursery.start_soon(self.model_fuzz_loop)
            nursery.start_soon(self.junk_http)
            async with trio.open_nursery() as fuzzers:
                for _ in range(a.fuzz_calls):
                    fuzzers.start_soon(self.fuzz_loop)
            self.carrier_done = True


def junk_request(rng: random.Random) -> tuple[str, bytes]:
    """A request that is malformed, oversized, or a webhook with an odd Host header."""
    kind = rng.choice(["garbage", "bad_line", "huge_head", "odd_host_answer", "bad_upgrade", "bad_body"])
    if kind == "garbage":
        return kind, rng.randbytes(rng.randint(1, 300)) + b"\r\n\r\n"
    if kind == "bad_line":
        return kind, rng.choice([b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"G\x00T / HTTP/1.1\r\n\r\n",
                                 b"GET / HTTP/1.1\r\nHost: a\r\nHost b\r\n\r\n", b" / HTTP/1.1\r\n\r\n"])  # fmt: skip
    if kind == "huge_head":
        return kind, b"GET / HTTP/1.1\r\nX-Junk: " + b"a" * 40_000 + b"\r\n\r\n"
    if kind == "odd_host_answer":  # the URL a dialect sees is built from this Host header
        carrier = rng.choice([*DIALECTS, "twiml"])
        path = "/twiml" if carrier == "twiml" else f"/{carrier}/answer"
        host = rng.choice([b"[", b"a\xef\xbc\x83b", b"[::1", b"h:99999", b"", b"\xff\xfe", b"h/../x", b"h?x#y"])
        body = b"CallSid=CA1&From=%2B1555&To=%01%ff"
        return kind, (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: "
                      b"application/x-www-form-urlencoded\r\nContent-Length: " + str(len(body)).encode()
                      + b"\r\n\r\n" + body)  # fmt: skip
    if kind == "bad_upgrade":
        route = rng.choice(["/media", "/twilio/media", "/vonage/media", "/nowhere"])
        version = rng.choice([b"13", b"8", b"", b"13, 8"])
        return kind, (b"GET " + route.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Version: " + version + b"\r\n\r\n")  # fmt: skip
    body = rng.randbytes(rng.randint(0, 2000))
    length = rng.choice([str(len(body)).encode(), b"-1", b"99999999", b"abc", str(len(body) + 10).encode()])
    return kind, (b"POST /twilio/answer HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n" + body)


def main() -> int:
    p = argparse.ArgumentParser(description="the callers of fuzz_bench")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--carrier-messages", type=int, default=60_000)
    p.add_argument("--model-messages", type=int, default=40_000)
    p.add_argument("--upstream-progress", type=Path, required=True)
    p.add_argument("--rate", type=float, default=2500.0, help="carrier messages per second, all fuzzers together")
    p.add_argument("--fuzz-calls", type=int, default=24)
    p.add_argument("--model-calls", type=int, default=8)
    p.add_argument("--model-call-seconds", type=float, default=20.0)
    p.add_argument("--good-calls", type=int, default=6)
    p.add_argument("--good-seconds", type=float, default=6.0)
    p.add_argument("--good-answers", type=int, default=3)
    p.add_argument("--good-deltas", type=int, default=6)
    p.add_argument("--http-requests", type=int, default=300)
    p.add_argument("--http-lanes", type=int, default=8)
    args = p.parse_args()
    callers = Callers(args)
    started = time.monotonic()
    trio.run(callers.main)
    out = {
        "seconds": time.monotonic() - started,
        "carrier_mutated": callers.carrier_mutated,
        "outcomes": [asdict(o) for o in callers.outcomes],
    }
    args.out.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
