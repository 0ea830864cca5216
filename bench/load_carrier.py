"""N Twilio-style calls from one trio process, for bench/load_bench.py.

Each call: WebSocket to ``/media``, ``connected``, ``start`` (μ-law 8 kHz), then a 160-byte μ-law
``media`` frame every 20 ms in real time whose payload carries a frame id in its first 9 bytes.
Marks are echoed when the audio before them would have finished playing (as Twilio does). The
calls' 20 ms phases are spread evenly, as independent calls are; one pacer task wakes every
millisecond and sends the frames that are due with a non-blocking ``send`` (a frame's send time
is read just before it). One reader task per call records when each model delta arrives.

Timeline (seconds from start): calls connect spread over ``--ramp``; after ``--warmup`` more the
measuring window of ``--window`` s begins. Only frames sent in the window are kept; the CPU time
of the ``--watch`` processes is read at its two ends. Then every call sends ``stop``, closes, and
the results go to ``--out`` (npz).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import time
from array import array
from collections import deque
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import (
    ID_CHARS,
    MAGIC_DELTA,
    MAGIC_FRAME,
    FrameParser,
    cpu_busy,
    cpu_seconds,
    id_payload,
    pin,
    read_id,
    rss_mib,
    tail_b64,
    ws_frame,
)

FRAME_S = 0.020
SLOTS = 20  # 1 ms pacer slots per 20 ms frame period
PAYLOAD_KEY = b'"payload":"'
MAX_PENDING = 1 << 20
TAIL = tail_b64(160)


class Call:
    def __init__(self, index: int, port: int) -> None:
        self.index = index
        self.port = port
        self.sid = f"MZ{index:032x}"
        self.call_sid = f"CA{index:032x}"
        self.sock: trio.socket.SocketType | None = None  # for the async connect and recv
        self.raw: socket.socket | None = None  # the same socket, for synchronous non-blocking sends
        self.parser = FrameParser()
        self.pending = b""
        self.seq = 0
        self.frame_no = 0
        self.active = False
        self.play_end = 0.0
        self.marks: deque[tuple[float, str]] = deque()
        self.closed = False
        self.media_head = '{"event":"media","sequenceNumber":"'
        self.media_tail = '"},"streamSid":"' + self.sid + '"}'

    # --- writing (synchronous, non-blocking: no other task can interleave a frame) ------------
    def write(self, data: bytes) -> bool:
        """Send now; whatever the kernel does not take waits in ``pending``. True if all went."""
        if self.closed or self.raw is None:
            return False
        if self.pending:
            self.pending += data
            return self.flush()
        try:
            n = self.raw.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.closed = True
            return False
        if n < len(data):
            self.pending = data[n:]
            return False
        return True

    def flush(self) -> bool:
        if not self.pending or self.raw is None:
            return True
        try:
            n = self.raw.send(self.pending)
        except BlockingIOError:
            return False
        except OSError:
            self.closed = True
            return False
        self.pending = self.pending[n:]
        if len(self.pending) > MAX_PENDING:
            self.closed = True  # the bridge stopped reading this call
        return not self.pending

    def text(self, obj: dict[str, object]) -> bool:
        self.seq += 1
        obj["sequenceNumber"] = str(self.seq)
        return self.write(ws_frame(json.dumps(obj, separators=(",", ":")).encode(), mask=True))

    def media_frame(self) -> bytes:
        self.seq += 1
        self.frame_no += 1
        ident = (self.index << 32) | self.frame_no
        ts = (self.frame_no - 1) * 20
        text = (
            self.media_head + str(self.seq) + '","media":{"track":"inbound","chunk":"' + str(self.frame_no)
            + '","timestamp":"' + str(ts) + '","payload":"' + id_payload(MAGIC_FRAME, ident, TAIL) + self.media_tail
        )  # fmt: skip
        return ws_frame(text.encode(), mask=True)

    def frame_id(self) -> int:
        return (self.index << 32) | self.frame_no


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.calls = [Call(i + 1, args.port) for i in range(args.calls)]
        self.slots: list[list[Call]] = [[] for _ in range(SLOTS)]
        self.frame_ids = array("Q")
        self.frame_t = array("d")
        self.delta_ids = array("Q")
        self.delta_t = array("d")
        self.w0 = self.w1 = 0.0
        self.connected = 0
        self.failed = 0
        self.backlog_events = 0
        self.bad = 0
        self.sending = True

    async def open_call(self, call: Call, nursery: trio.Nursery) -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = trio.socket.from_stdlib_socket(raw)  # wraps the same object, now non-blocking
        try:
            with trio.fail_after(10):
                await sock.connect(("127.0.0.1", call.port))
                key = base64.b64encode(os.urandom(16))
                await sock.send(
                    b"GET /media HTTP/1.1\r\nHost: 127.0.0.1:" + str(call.port).encode()
                    + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
                    + b"\r\nSec-WebSocket-Version: 13\r\nUser-Agent: TwilioProxy/1.1\r\n\r\n"
                )  # fmt: skip
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = await sock.recv(16384)
                    if not chunk:
                        raise ConnectionError("closed during handshake")
                    data += chunk
        except (OSError, ConnectionError, trio.TooSlowError):
            self.failed += 1
            sock.close()
            return
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            self.failed += 1
            sock.close()
            return
        call.sock, call.raw = sock, raw
        self.connected += 1
        call.text({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        call.text(
            {
                "event": "start",
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": call.sid,
                    "callSid": call.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": {},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": call.sid,
            }
        )
        call.active = True
        self.slots[(call.index * SLOTS) // len(self.calls) % SLOTS].append(call)
        nursery.start_soon(self.reader, call, rest)

    async def reader(self, call: Call, rest: bytes) -> None:
        assert call.sock is not None
        delta_ids, delta_t = self.delta_ids, self.delta_t
        data = rest
        for _ in range(100_000_000):
            t = time.monotonic()
            try:
                frames = call.parser.feed(data)
            except ValueError:
                self.bad += 1
                call.closed = True
                return
            for opcode, payload, _key, _fin in frames:
                if opcode == 0x1:
                    i = payload.find(PAYLOAD_KEY, 0, 160)
                    if i >= 0:
                        start = i + len(PAYLOAD_KEY)
                        ident = read_id(payload[start : start + ID_CHARS], MAGIC_DELTA)
                        if ident is None:
                            self.bad += 1
                        else:
                            delta_ids.append(ident)
                            delta_t.append(t)
                        end = payload.find(b'"', start)
                        seconds = (end - start) * 3 / 4 / 8000
                        call.play_end = max(call.play_end, t) + seconds
                    elif payload.startswith(b'{"event":"mark"'):
                        j = payload.rfind(b'"name":"')
                        name = payload[j + 8 : payload.find(b'"', j + 8)].decode()
                        call.marks.append((call.play_end, name))
                    elif payload.startswith(b'{"event":"clear"'):
                        call.play_end = t
                        call.marks = deque((t, name) for _, name in call.marks)
                elif opcode == 0x9:
                    call.write(ws_frame(payload, 0xA, mask=True))
                elif opcode == 0x8:
                    call.write(ws_frame(payload[:2], 0x8, mask=True))
                    call.closed = True
                    return
            try:
                data = await call.sock.recv(262144)
            except (OSError, trio.ClosedResourceError):
                data = b""
            if not data:
                call.closed = True
                return

    async def pacer(self) -> None:
        """Every 1 ms, the frames of the calls whose phase falls in that millisecond."""
        frame_ids, frame_t = self.frame_ids, self.frame_t
        next_at = trio.current_time()
        k = 0
        for _ in range(100_000_000):
            if not self.sending:
                return
            await trio.sleep_until(next_at)
            now_trio = trio.current_time()
            while next_at <= now_trio:
                for call in self.slots[k]:
                    if call.closed or not call.active:
                        continue
                    if call.pending and not call.flush():
                        self.backlog_events += 1
                    frame = call.media_frame()
                    t = time.monotonic()
                    call.write(frame)
                    if self.w0 <= t < self.w1:
                        frame_ids.append(call.frame_id())
                        frame_t.append(t)
                    while call.marks and call.marks[0][0] <= t:
                        _, name = call.marks.popleft()
                        call.text({"event": "mark", "streamSid": call.sid, "mark": {"name": name}})
                k = (k + 1) % SLOTS
                next_at += FRAME_S / SLOTS

    async def hang_up(self, call: Call) -> None:
        if call.sock is None:
            return
        if not call.closed:
            call.text({"event": "stop", "streamSid": call.sid, "stop": {"accountSid": "AC", "callSid": call.call_sid}})
            call.write(ws_frame(b"\x03\xe8", 0x8, mask=True))
        with trio.move_on_after(3):
            while not call.closed:
                await trio.sleep(0.05)
        call.sock.close()

    async def run(self) -> dict[str, object]:
        a = self.args
        watch = {name: int(pid) for name, _, pid in (w.partition("=") for w in a.watch)}
        t0 = trio.current_time()
        mono0 = time.monotonic()
        self.w0 = mono0 + a.ramp + a.warmup
        self.w1 = self.w0 + a.window
        cpu0: dict[str, float] = {}
        cpu1: dict[str, float] = {}
        rss: dict[str, float] = {}
        busy0: dict[str, float] = {}
        busy1: dict[str, float] = {}
        active = [0, 0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.pacer)
            async with trio.open_nursery() as openers:
                for i, call in enumerate(self.calls):
                    await trio.sleep_until(t0 + a.ramp * i / len(self.calls))
                    openers.start_soon(self.open_call, call, nursery)
            await trio.sleep_until(t0 + (self.w0 - mono0))
            cpu0 = {name: cpu_seconds(pid) for name, pid in watch.items()} | {"self": cpu_seconds(os.getpid())}
            busy0 = cpu_busy()
            w0_real = time.monotonic()
            active[0] = sum(1 for c in self.calls if c.active and not c.closed)
            await trio.sleep_until(t0 + (self.w1 - mono0))
            cpu1 = {name: cpu_seconds(pid) for name, pid in watch.items()} | {"self": cpu_seconds(os.getpid())}
            busy1 = cpu_busy()
            w1_real = time.monotonic()
            active[1] = sum(1 for c in self.calls if c.active and not c.closed)
            rss = {name: rss_mib(pid) for name, pid in watch.items()}
            # Let the deltas sent near the end of the window arrive, then hang up.
            await trio.sleep(0.5)
            self.sending = False
            async with trio.open_nursery() as closers:
                for call in self.calls:
                    closers.start_soon(self.hang_up, call)
            nursery.cancel_scope.cancel()
        span = w1_real - w0_real
        return {
            "w0": self.w0,
            "w1": self.w1,
            "measured_span": span,
            "connected": self.connected,
            "failed": self.failed,
            "active_start": active[0],
            "active_end": active[1],
            "backlog_events": self.backlog_events,
            "bad": self.bad,
            # CPU seconds over the window, scaled to exactly the nominal window.
            "cpu": {k: (cpu1.get(k, 0.0) - cpu0.get(k, 0.0)) * a.window / span for k in cpu1},
            "rss": rss,
            # Busy time of each CPU over the window (all processes), for spotting other load.
            "cpu_busy": {k: (busy1[k] - busy0.get(k, 0.0)) * a.window / span for k in busy1},
        }


def main() -> int:
    p = argparse.ArgumentParser(description="Twilio-style callers for load_bench")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--ramp", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--window", type=float, default=20.0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--watch", nargs="*", default=[], help="name=pid: processes whose CPU to read")
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU (load_bench pins it already)")
    args = p.parse_args()
    pin(args.cpu)
    load = Load(args)
    summary = trio.run(load.run)
    import numpy as np

    np.savez(
        args.out,
        frame_ids=np.frombuffer(load.frame_ids, dtype=np.uint64),
        frame_t=np.frombuffer(load.frame_t, dtype=np.float64),
        delta_ids=np.frombuffer(load.delta_ids, dtype=np.uint64),
        delta_t=np.frombuffer(load.delta_t, dtype=np.float64),
        summary=json.dumps(summary),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
