"""N Twilio-style calls from one process and one ``epoll`` loop, for bench/load_bench.py.

Each call: WebSocket to ``/media``, ``connected``, ``start`` (μ-law 8 kHz), then a 160-byte μ-law
``media`` frame every 20 ms in real time whose payload carries a frame id in its first 9 bytes.
Marks are echoed when the audio before them would have finished playing (as Twilio does). The
calls' 20 ms phases are spread evenly, as independent calls are: the loop wakes every
millisecond (``--slot-ms``) and sends the frames that are due with a non-blocking ``send`` (a
frame's send time is read just before it). A model delta's arrival time is read right after
``epoll`` returns its socket.

Why an ``epoll`` loop and not trio: the load generator must cost much less than what it measures,
and in bench/scale_bench.py it shares the cores with the bridge's workers. No task switches, no
channels: per frame, one ``bytes`` join of pre-encoded pieces and one ``send``; per readable
socket, one ``recv`` and a frame split that only looks at the first bytes of each message.
Client frames are masked with the zero key (legal on the wire; it makes masking free).

Timeline (seconds from start): calls connect spread over ``--ramp``; after ``--warmup`` more the
measuring window of ``--window`` s begins. Only frames sent in the window are kept; the CPU time
of the ``--watch`` processes is read at its two ends. Then every call sends ``stop``, closes, and
the results go to ``--out`` (npz).

With ``--hold MIN:MAX`` (bench/soak_bench.py) the calls churn: each call hangs up (``stop``, then a
close frame) after a random time in [MIN, MAX] s and a new call with a new index takes its place,
so ``--calls`` stay up at once until the window ends. A call the bridge closes before it hangs up
is counted in ``dropped``.
"""

from __future__ import annotations

import argparse
import base64
import errno
import heapq
import json
import os
import random
import select
import socket
import struct
import sys
import time
from array import array
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import (
    ID_CHARS,
    MAGIC_DELTA,
    MAGIC_FRAME,
    ZERO_KEY,
    FrameParser,
    cpu_busy,
    cpu_seconds,
    pin,
    read_id,
    rss_mib,
    tail_b64,
    ws_frame,
)

FRAME_S = 0.020
PAYLOAD_KEY = b'"payload":"'
MAX_PENDING = 1 << 20
TAIL = tail_b64(160).encode()
RECV_BYTES = 262144


def masked_text_header(n: int) -> bytes:
    """The header of a final, zero-key-masked text frame of ``n`` payload bytes (RFC 6455 §5.2)."""
    if n < 126:
        return bytes((0x81, 0x80 | n)) + ZERO_KEY
    if n < 65536:
        return struct.pack("!BBH", 0x81, 0x80 | 126, n) + ZERO_KEY
    return struct.pack("!BBQ", 0x81, 0x80 | 127, n) + ZERO_KEY


class Call:
    __slots__ = (
        "call_sid",
        "closed",
        "fd",
        "frame_no",
        "handshake",
        "hangup_at",
        "index",
        "leaving",
        "marks",
        "media_a",
        "media_z",
        "parser",
        "pending",
        "play_end",
        "seq",
        "sid",
        "sock",
        "state",
    )  # fmt: skip

    def __init__(self, index: int) -> None:
        self.index = index
        self.sid = f"MZ{index:032x}"
        self.call_sid = f"CA{index:032x}"
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = "idle"  # idle → connecting → handshake → open → closed
        self.handshake = b""
        self.parser = FrameParser()
        self.pending = b""
        self.seq = 0
        self.frame_no = 0
        self.play_end = 0.0
        self.marks: deque[tuple[float, str]] = deque()
        self.closed = False
        self.leaving = False  # it has sent its stop and close (churn): the bridge's close is expected
        self.hangup_at = 0.0
        # A media message is these pieces around its sequence number, chunk, timestamp and id.
        self.media_a = b'{"event":"media","sequenceNumber":"'
        self.media_z = b'"},"streamSid":"' + self.sid.encode() + b'"}'

    # --- writing (non-blocking; what the kernel does not take waits in ``pending``) -----------
    def write(self, data: bytes, load: Load) -> bool:
        """True if everything went to the kernel now."""
        if self.closed or self.sock is None:
            return False
        if self.pending:
            self.pending += data
            if len(self.pending) > MAX_PENDING:
                load.close(self)  # the bridge stopped reading this call
            return False
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            load.close(self)
            return False
        if n < len(data):
            self.pending = data[n:]
            load.want_write(self, True)
            return False
        return True

    def text(self, obj: dict[str, object], load: Load) -> bool:
        self.seq += 1
        obj["sequenceNumber"] = str(self.seq)
        return self.write(ws_frame(json.dumps(obj, separators=(",", ":")).encode(), mask=True), load)

    def media_frame(self) -> bytes:
        self.seq += 1
        self.frame_no += 1
        n = self.frame_no
        ident = base64.b64encode(struct.pack(">BQ", MAGIC_FRAME, (self.index << 32) | n))
        text = b"".join((
            self.media_a, str(self.seq).encode(), b'","media":{"track":"inbound","chunk":"', str(n).encode(),
            b'","timestamp":"', str((n - 1) * 20).encode(), b'","payload":"', ident, TAIL, self.media_z,
        ))  # fmt: skip
        return masked_text_header(len(text)) + text

    def goodbye(self, load: Load) -> None:
        """``stop``, then a close frame (the bridge answers with its close)."""
        stop = {"accountSid": "AC", "callSid": self.call_sid}
        self.text({"event": "stop", "streamSid": self.sid, "stop": stop}, load)
        self.write(ws_frame(b"\x03\xe8", 0x8, mask=True), load)

    def frame_id(self) -> int:
        return (self.index << 32) | self.frame_no


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.calls = [Call(i + 1) for i in range(args.calls)]
        self.hold: tuple[float, float] | None = None
        if args.hold:
            low, _, high = args.hold.partition(":")
            self.hold = (float(low), float(high or low))
        self.rng = random.Random(args.seed)
        self.hangups: list[tuple[float, int]] = []  # (when, call index), a heap, with --hold
        self.hung_up = 0
        self.opened: list[str] = []
        self.dropped = 0  # calls the bridge closed before they hung up
        self.slots_per_frame = max(1, round(FRAME_S * 1000 / args.slot_ms))
        self.slots: list[list[Call]] = [[] for _ in range(self.slots_per_frame)]
        self.ep = select.epoll()
        self.by_fd: dict[int, Call] = {}
        self.frame_ids = array("Q")
        self.frame_t = array("d")
        self.delta_ids = array("Q")
        self.delta_t = array("d")
        self.w0 = self.w1 = 0.0
        self.connected = 0
        self.failed = 0
        self.backlog_events = 0
        self.bad = 0
        self.ending = False

    # --- connections ----------------------------------------------------------------------
    def connect(self, call: Call) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", self.args.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.failed += 1
            call.closed = True
            return
        call.sock, call.fd, call.state = sock, sock.fileno(), "connecting"
        self.by_fd[call.fd] = call
        self.ep.register(call.fd, select.EPOLLOUT)

    def want_write(self, call: Call, on: bool) -> None:
        try:
            self.ep.modify(call.fd, select.EPOLLIN | (select.EPOLLOUT if on else 0))
        except OSError:
            pass

    def close(self, call: Call) -> None:
        if call.closed:
            return
        call.closed = True
        if call.state != "open":
            self.failed += 1
        elif not call.leaving and not self.ending:
            self.dropped += 1
        call.state = "closed"
        self.by_fd.pop(call.fd, None)
        try:
            self.ep.unregister(call.fd)
        except (OSError, ValueError):
            pass
        if call.sock is not None:
            call.sock.close()

    def on_writable(self, call: Call) -> None:
        assert call.sock is not None
        if call.state == "connecting":
            if call.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.close(call)
                return
            call.state = "handshake"
            key = base64.b64encode(os.urandom(16))
            port = str(self.args.port).encode()
            try:
                call.sock.send(
                    b"GET /media HTTP/1.1\r\nHost: 127.0.0.1:" + port
                    + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
                    + b"\r\nSec-WebSocket-Version: 13\r\nUser-Agent: TwilioProxy/1.1\r\n\r\n"
                )  # fmt: skip
            except OSError:
                self.close(call)
                return
            self.ep.modify(call.fd, select.EPOLLIN)
            return
        try:
            n = call.sock.send(call.pending)
        except BlockingIOError:
            return
        except OSError:
            self.close(call)
            return
        call.pending = call.pending[n:]
        if not call.pending:
            self.want_write(call, False)

    def on_open(self, call: Call, rest: bytes, t: float) -> None:
        call.state = "open"
        self.connected += 1
        self.opened.append(call.call_sid)
        call.text({"event": "connected", "protocol": "Call", "version": "1.0.0"}, self)
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
            },
            self,
        )
        self.slots[(call.index * self.slots_per_frame) // self.args.calls % self.slots_per_frame].append(call)
        if self.hold is not None:
            call.hangup_at = t + self.rng.uniform(*self.hold)
            heapq.heappush(self.hangups, (call.hangup_at, call.index))
        if rest:
            self.on_data(call, rest, t)

    def on_readable(self, call: Call, t: float) -> None:
        assert call.sock is not None
        try:
            data = call.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close(call)
            return
        if call.state == "handshake":
            call.handshake += data
            if b"\r\n\r\n" not in call.handshake:
                if len(call.handshake) > 65536:
                    self.close(call)
                return
            head, _, rest = call.handshake.partition(b"\r\n\r\n")
            call.handshake = b""
            if not head.startswith(b"HTTP/1.1 101"):
                self.close(call)
                return
            self.on_open(call, rest, t)
            return
        self.on_data(call, data, t)

    def on_data(self, call: Call, data: bytes, t: float) -> None:
        try:
            frames = call.parser.feed(data)
        except ValueError:
            self.bad += 1
            self.close(call)
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
                        self.delta_ids.append(ident)
                        self.delta_t.append(t)
                    end = payload.find(b'"', start)
                    seconds = (end - start) * 3 / 4 / 8000
                    call.play_end = max(call.play_end, t) + seconds
                elif payload.startswith(b'{"event":"mark"') or payload.startswith(b'{"event": "mark"'):
                    j = payload.rfind(b'"name":')
                    q = payload.find(b'"', j + 7)
                    name = payload[q + 1 : payload.find(b'"', q + 1)].decode()
                    call.marks.append((call.play_end, name))
                elif payload.startswith(b'{"event":"clear"') or payload.startswith(b'{"event": "clear"'):
                    call.play_end = t
                    call.marks = deque((t, name) for _, name in call.marks)
            elif opcode == 0x9:
                call.write(ws_frame(payload, 0xA, mask=True), self)
            elif opcode == 0x8:
                call.write(ws_frame(payload[:2], 0x8, mask=True), self)
                self.close(call)
                return

    # --- the pacer ------------------------------------------------------------------------
    def send_slot(self, k: int, record: bool) -> None:
        frame_ids, frame_t = self.frame_ids, self.frame_t
        for call in self.slots[k]:
            if call.closed or call.leaving:
                continue
            if call.pending:
                self.backlog_events += 1
            frame = call.media_frame()
            t = time.monotonic()
            call.write(frame, self)
            if record and self.w0 <= t < self.w1:
                frame_ids.append(call.frame_id())
                frame_t.append(t)
            while call.marks and call.marks[0][0] <= t:
                _, name = call.marks.popleft()
                call.text({"event": "mark", "streamSid": call.sid, "mark": {"name": name}}, self)

    def hang_up_one(self, call: Call) -> None:
        """Churn: this call says ``stop`` and closes; a new call (a new index) takes its place."""
        if call.state != "open" or call.closed or call.leaving:
            return
        call.goodbye(self)
        call.leaving = True
        self.hung_up += 1
        for slot in self.slots:
            if call in slot:
                slot.remove(call)
        fresh = Call(len(self.calls) + 1)
        self.calls.append(fresh)
        self.connect(fresh)

    def hang_up(self) -> None:
        self.ending = True
        for call in self.calls:
            if call.state == "open" and not call.closed and not call.leaving:
                call.goodbye(self)

    def poll(self, until: float) -> None:
        """Handle socket events until ``until`` (monotonic) or the next event, whichever is first."""
        timeout = max(0.0, until - time.monotonic())
        events = self.ep.poll(timeout)
        t = time.monotonic()
        for fd, ev in events:
            call = self.by_fd.get(fd)
            if call is None:
                continue
            if ev & select.EPOLLOUT:
                self.on_writable(call)
            if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and not call.closed:
                self.on_readable(call, t)

    def run(self) -> dict[str, object]:
        a = self.args
        watch = {name: int(pid) for name, _, pid in (w.partition("=") for w in a.watch)}
        t0 = time.monotonic()
        self.w0 = t0 + a.ramp + a.warmup
        self.w1 = self.w0 + a.window
        n = len(self.calls)
        connect_at = [t0 + a.ramp * i / n for i in range(n)]
        next_connect = 0
        slot_s = FRAME_S / self.slots_per_frame
        next_slot = t0
        k = 0
        edges = ["w0", "w1", "hangup"]
        edge_at = {"w0": self.w0, "w1": self.w1, "hangup": self.w1 + 0.5}
        cpu0: dict[str, float] = {}
        cpu1: dict[str, float] = {}
        busy0: dict[str, float] = {}
        busy1: dict[str, float] = {}
        rss: dict[str, float] = {}
        active = [0, 0]
        w0_real = w1_real = 0.0
        while edges:
            now = time.monotonic()
            while next_connect < n and connect_at[next_connect] <= now:
                self.connect(self.calls[next_connect])
                next_connect += 1
            while self.hangups and self.hangups[0][0] <= now and now < self.w1:
                _, index = heapq.heappop(self.hangups)
                self.hang_up_one(self.calls[index - 1])
            while next_slot <= now:
                self.send_slot(k, True)
                k = (k + 1) % self.slots_per_frame
                next_slot += slot_s
            if edge_at[edges[0]] <= now:
                edge = edges.pop(0)
                if edge == "w0":
                    cpu0 = {name: cpu_seconds(pid) for name, pid in watch.items()} | {"self": cpu_seconds(os.getpid())}
                    busy0 = cpu_busy()
                    w0_real = time.monotonic()
                    active[0] = sum(1 for c in self.calls if c.state == "open")
                elif edge == "w1":
                    cpu1 = {name: cpu_seconds(pid) for name, pid in watch.items()} | {"self": cpu_seconds(os.getpid())}
                    busy1 = cpu_busy()
                    w1_real = time.monotonic()
                    active[1] = sum(1 for c in self.calls if c.state == "open")
                    rss = {name: rss_mib(pid) for name, pid in watch.items()}
                # "hangup": the deltas sent near the end of the window have had 0.5 s to arrive
                continue
            until = min(next_slot, edge_at[edges[0]], connect_at[next_connect] if next_connect < n else next_slot)
            if self.hangups:
                until = min(until, self.hangups[0][0])
            self.poll(until)
        self.hang_up()
        deadline = time.monotonic() + 3.0
        while self.by_fd and time.monotonic() < deadline:
            self.poll(min(deadline, time.monotonic() + 0.05))
        for call in self.calls:
            if call.sock is not None and not call.closed:
                call.closed = True
                call.sock.close()
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
            "calls_started": len(self.calls),
            "call_sids": self.opened,  # every call that got its 101, in order
            "hung_up": self.hung_up,
            "dropped": self.dropped,
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
    p.add_argument("--slot-ms", type=float, default=1.0, help="pacer resolution: calls' phases are this far apart")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--watch", nargs="*", default=[], help="name=pid: processes whose CPU to read")
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU (load_bench pins it already)")
    p.add_argument("--hold", default="", help="MIN:MAX seconds: calls hang up after this long and are replaced")
    p.add_argument("--seed", type=int, default=1, help="for the hold times")
    args = p.parse_args()
    pin(args.cpu)
    load = Load(args)
    summary = load.run()
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
