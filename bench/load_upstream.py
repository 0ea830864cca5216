"""A minimal fake Realtime server for bench/load_bench.py (its own process).

Per connection: ``session.created``; ``session.update`` is answered with ``session.updated`` echoing
the requested session (so the bridge's format check passes); every ``--answer-every`` seconds (first
at a random phase) an answer of ``--answer-ms`` of μ-law in ``--delta-ms`` deltas sent ``--speed``
times faster than real time, framed by ``response.created``, ``response.output_audio.done`` and
``response.done`` (with a usage object). Pings are answered, a close is returned.

With ``--barge-in-every K`` every K-th answer of a session is interrupted half-way, as the real
server's VAD does when the caller talks over it: ``input_audio_buffer.speech_started``, then
``response.done`` with status ``cancelled`` and no more deltas of that answer (the bridge clears
the caller's playback and truncates the item). Every delta sent therefore went out before the
barge-in and must reach the caller. The time each connection closed is recorded too, so a
reader can tell the deltas cut off by a hang-up from lost ones.

It records the arrival time of every ``input_audio_buffer.append`` (by the frame id in its audio)
and the send time of every delta (by the delta id in its audio), and writes them to ``--out``
(npz) on SIGTERM (load_bench sends it once the bridge under test has stopped) or after
``--max-seconds``.

Why not trio-websocket: this process shares a CPU with the carrier load generator and must cost
far less per message than the bridge it measures, or it would saturate first and its own queueing
would show up as latency. So it is one non-blocking ``epoll`` loop with hand-rolled framing: a
frame is split without unmasking, and only the 12 base64 characters that carry the id are
unmasked. Arrival times are read right after ``epoll`` returns.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import json
import random
import select
import signal
import socket
import sys
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import (
    ID_BYTES,
    ID_CHARS,
    MAGIC_DELTA,
    MAGIC_FRAME,
    FrameParser,
    id_payload,
    pin,
    read_id,
    tail_b64,
    unmask,
    ws_frame,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
APPEND_TYPE = b'"input_audio_buffer.append"'
AUDIO_KEY = b'"audio"'
MAX_PENDING = 4 << 20
FRAME_BYTES = 160  # one 20 ms caller frame of μ-law
ONE_FRAME_CHARS = 4 * ((FRAME_BYTES + 2) // 3) + 2  # its base64 and the closing '"}'
USAGE = {
    "total_tokens": 180,
    "input_tokens": 120,
    "output_tokens": 60,
    "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "cached_tokens": 0},
    "output_token_details": {"text_tokens": 10, "audio_tokens": 50},
}


def audio_start(head: bytes) -> int:
    """Where the audio of an ``input_audio_buffer.append`` begins in the first bytes of its JSON, or -1.

    Cheap (no JSON parse) but tolerant of key order and of the spaces ``json.dumps`` puts after
    ``:`` and ``,`` by default (the baseline bridge sends those; bridge sends compact JSON).
    """
    if APPEND_TYPE not in head:
        return -1
    i = head.find(AUDIO_KEY)
    if i < 0:
        return -1
    j = head.find(b'"', i + len(AUDIO_KEY))
    return -1 if j < 0 else j + 1


class Recorder:
    def __init__(self) -> None:
        self.frame_ids = array("Q")
        self.frame_t = array("d")
        self.delta_ids = array("Q")
        self.delta_t = array("d")
        self.close_ids = array("Q")  # connection index ...
        self.close_t = array("d")  # ... and when it closed (monotonic)
        self.barge_ins = 0
        self.connections = 0
        self.sessions = 0  # connections that completed the WebSocket handshake
        self.bad = 0

    def save(self, out: Path) -> None:
        import numpy as np

        np.savez(
            out,
            frame_ids=np.frombuffer(self.frame_ids, dtype=np.uint64),
            frame_t=np.frombuffer(self.frame_t, dtype=np.float64),
            delta_ids=np.frombuffer(self.delta_ids, dtype=np.uint64),
            delta_t=np.frombuffer(self.delta_t, dtype=np.float64),
            close_ids=np.frombuffer(self.close_ids, dtype=np.uint64),
            close_t=np.frombuffer(self.close_t, dtype=np.float64),
            summary=json.dumps(
                {
                    "connections": self.connections,
                    "sessions": self.sessions,
                    "bad": self.bad,
                    "barge_ins": self.barge_ins,
                }
            ),
        )


class Conn:
    """One bridge → model WebSocket."""

    def __init__(self, server: Server, sock: socket.socket, index: int) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.index = index
        self.inbuf = b""
        self.upgraded = False
        self.parser = FrameParser()
        self.pending = b""
        self.closed = False
        self.answering = False
        self.seq = 0
        # answer state: ``step`` counts the events of the answer in progress
        self.answer_no = 0
        self.step = 0
        self.next_answer = 0.0
        self.head = ""

    # --- output ----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.pending:
            self.pending += data
            if len(self.pending) > MAX_PENDING:
                self.close()
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.close()
            return
        if n < len(data):
            self.pending = data[n:]
            self.server.want_write(self, True)

    def on_writable(self) -> None:
        try:
            n = self.sock.send(self.pending)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        self.pending = self.pending[n:]
        if not self.pending:
            self.server.want_write(self, False)

    def text(self, obj: dict[str, Any]) -> None:
        self.write(ws_frame(json.dumps(obj, separators=(",", ":")).encode()))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.rec.close_ids.append(self.index)
            self.server.rec.close_t.append(time.monotonic())
            self.server.drop(self)

    # --- input -----------------------------------------------------------------------------
    def on_readable(self, t: float) -> None:
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        if not self.upgraded:
            self.inbuf += data
            if b"\r\n\r\n" not in self.inbuf:
                if len(self.inbuf) > 65536:
                    self.close()
                return
            head, _, data = self.inbuf.partition(b"\r\n\r\n")
            self.inbuf = b""
            self._handshake(head)
        rec = self.server.rec
        for opcode, payload, key, _fin in self.parser.feed(data):
            if opcode == 0x1:
                head = unmask(payload[:80], key)
                start = audio_start(head)
                if start >= 0:
                    if len(payload) - start > ONE_FRAME_CHARS:
                        self._joined_frames(unmask(payload, key), start, t)  # append_interval_ms joined several
                        continue
                    ident = read_id(head[start : start + ID_CHARS], MAGIC_FRAME)
                    if ident is None:
                        rec.bad += 1
                    else:
                        rec.frame_ids.append(ident)
                        rec.frame_t.append(t)
                    continue
                self._client_event(unmask(payload, key), t)
            elif opcode == 0x9:
                self.write(ws_frame(unmask(payload, key), 0xA))
            elif opcode == 0x8:
                self.write(ws_frame(unmask(payload, key)[:2], 0x8))
                self.close()
                return

    def _joined_frames(self, text: bytes, start: int, t: float) -> None:
        """An append carrying several caller frames: every frame's id, at each 160-byte boundary."""
        rec = self.server.rec
        end = text.find(b'"', start)
        try:
            audio = base64.b64decode(text[start:end])
        except ValueError:
            rec.bad += 1
            return
        for offset in range(0, len(audio) - ID_BYTES + 1, FRAME_BYTES):
            raw = audio[offset : offset + ID_BYTES]
            if raw[0] != MAGIC_FRAME:
                rec.bad += 1
                continue
            rec.frame_ids.append(int.from_bytes(raw[1:], "big"))
            rec.frame_t.append(t)

    def _handshake(self, head: bytes) -> None:
        key = b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.upgraded = True
        self.server.rec.sessions += 1
        self.text({"type": "session.created", "event_id": "ev0", "session": {"type": "realtime"}})

    def _client_event(self, text: bytes, t: float) -> None:
        try:
            ev = json.loads(text)
        except ValueError:
            self.server.rec.bad += 1
            return
        if ev.get("type") == "input_audio_buffer.append":  # one the fast path in on_readable missed
            rec = self.server.rec
            ident = read_id(str(ev.get("audio", ""))[:ID_CHARS].encode(), MAGIC_FRAME)
            if ident is None:
                rec.bad += 1
            else:
                rec.frame_ids.append(ident)
                rec.frame_t.append(t)
            return
        if ev.get("type") == "session.update" and not self.answering:
            session = dict(ev.get("session") or {})
            session["id"] = f"sess_{self.index}"
            self.text({"type": "session.updated", "event_id": "ev1", "session": session})
            self.answering = True
            self.next_answer = t + random.uniform(0.5, self.server.args.answer_every)
            self.server.schedule(self.next_answer, self)

    # --- the model's answers ---------------------------------------------------------------
    def on_timer(self, now: float) -> None:
        """One event of the current answer; schedules the next."""
        if self.closed:
            return
        a = self.server.args
        per_answer = max(1, a.answer_ms // a.delta_ms)
        n = self.answer_no
        rid, iid = f"resp_{self.index}_{n}", f"item_{self.index}_{n}"
        if self.step == 0:
            self.text({"type": "response.created", "event_id": f"e{n}c",
                       "response": {"id": rid, "object": "realtime.response", "status": "in_progress"}})  # fmt: skip
            self.head = (
                '{"type":"response.output_audio.delta","event_id":"e","response_id":"' + rid
                + '","item_id":"' + iid + '","output_index":0,"content_index":0,"delta":"'
            )  # fmt: skip
        every = a.barge_in_every
        if every and self.step == per_answer // 2 and self.answer_no % every == every - 1:
            self.text({"type": "input_audio_buffer.speech_started", "event_id": f"e{n}s", "audio_start_ms": 0,
                       "item_id": f"item_in_{self.index}_{n}"})  # fmt: skip
            self.text({"type": "response.done", "event_id": f"e{n}d",
                       "response": {"id": rid, "object": "realtime.response", "status": "cancelled",
                                    "output": [], "usage": USAGE}})  # fmt: skip
            self.server.rec.barge_ins += 1
            self._next_answer()
            return
        if self.step < per_answer:
            self.seq += 1
            ident = (self.index << 32) | self.seq
            frame = ws_frame((self.head + id_payload(MAGIC_DELTA, ident, self.server.tail) + '"}').encode())
            rec = self.server.rec
            rec.delta_ids.append(ident)
            rec.delta_t.append(time.monotonic())
            self.write(frame)
            self.step += 1
            self.server.schedule(self.next_answer + self.step * a.delta_ms / 1000.0 / a.speed, self)
            return
        self.text({"type": "response.output_audio.done", "event_id": f"e{n}a", "response_id": rid,
                   "item_id": iid, "output_index": 0, "content_index": 0})  # fmt: skip
        self.text({"type": "response.done", "event_id": f"e{n}d",
                   "response": {"id": rid, "object": "realtime.response", "status": "completed",
                                "output": [], "usage": USAGE}})  # fmt: skip
        self._next_answer()

    def _next_answer(self) -> None:
        self.answer_no += 1
        self.step = 0
        self.next_answer += self.server.args.answer_every
        self.server.schedule(self.next_answer, self)


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rec = Recorder()
        self.tail = tail_b64(8 * args.delta_ms)
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.timers: list[tuple[float, int, Conn]] = []
        self.timer_seq = 0
        self.stop = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", args.port))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.ep.register(self.listener.fileno(), select.EPOLLIN)

    def schedule(self, at: float, conn: Conn) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, (at, self.timer_seq, conn))

    def want_write(self, conn: Conn, on: bool) -> None:
        mask = select.EPOLLIN | (select.EPOLLOUT if on else 0)
        try:
            self.ep.modify(conn.fd, mask)
        except OSError:
            pass

    def drop(self, conn: Conn) -> None:
        self.conns.pop(conn.fd, None)
        try:
            self.ep.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    def accept(self) -> None:
        for _ in range(1024):
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.rec.connections += 1
            conn = Conn(self, sock, self.rec.connections)
            self.conns[conn.fd] = conn
            self.ep.register(conn.fd, select.EPOLLIN)

    def run(self) -> None:
        deadline = time.monotonic() + self.args.max_seconds
        lfd = self.listener.fileno()
        timers = self.timers
        while not self.stop:
            now = time.monotonic()
            if now > deadline:
                break
            timeout = min(0.1, max(0.0, timers[0][0] - now)) if timers else 0.1
            events = self.ep.poll(timeout)
            t = time.monotonic()
            for fd, ev in events:
                if fd == lfd:
                    self.accept()
                    continue
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                if ev & select.EPOLLOUT and conn.pending:
                    conn.on_writable()
                if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and not conn.closed:
                    conn.on_readable(t)
            now = time.monotonic()
            for _ in range(10_000):
                if not timers or timers[0][0] > now:
                    break
                _, _, conn = heapq.heappop(timers)
                conn.on_timer(now)


def main() -> int:
    p = argparse.ArgumentParser(description="fake Realtime server for load_bench")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--delta-ms", type=int, default=100)
    p.add_argument("--answer-ms", type=int, default=2000)
    p.add_argument("--answer-every", type=float, default=4.0)
    p.add_argument("--speed", type=float, default=4.0)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--barge-in-every", type=int, default=0, help="interrupt every K-th answer half-way (0: never)")
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU (load_bench pins it already)")
    args = p.parse_args()
    pin(args.cpu)
    server = Server(args)

    def on_signal(signum: int, frame: object) -> None:
        server.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.run()
    finally:
        server.rec.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
