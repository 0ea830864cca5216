"""A fuzzing Realtime server for bench/fuzz_bench.py (its own process, trio, hand-made WebSocket frames).

Every session answers ``session.update`` with ``session.updated`` (echoing the session, so the
bridge's format check passes) and then behaves by the tag the call carried into its instructions
(the bench configures ``instructions = "bench_call={bench_call}"`` and each call sets the
``bench_call`` custom parameter):

* ``good-*``: a clean model. ``--good-answers`` answers of ``--good-deltas`` 100 ms μ-law deltas,
  each a fresh random payload; every ``input_audio_buffer.append`` it receives and every delta it
  sends is recorded, in order, for the byte-exact check.
* ``fuzzm-*``: a hostile model. Until the socket closes it sends, every ``--interval-ms``, either a
  valid event (answers with deltas, barge-ins) or a mutated one (bench/fuzz_mutations.py: truncated
  JSON, wrong types, invalid base64 audio, out-of-order events, unknown events, binary frames,
  huge events, ...). Now and then it ends the session the hard way (a text frame that is not
  UTF-8, a TCP close without a close frame) so the bridge must reconnect, or sends a fatal error
  so the call must end.
* anything else (calls fuzzed from the carrier side): one short answer, then quiet.

Raw frames are needed because a WebSocket library refuses to send most of these. Results (counts
by kind, the good sessions' audio) go to ``--out`` as JSON on SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_mutations import (
    MODEL_KINDS,
    dumps,
    model_templates,
    mutate_model,
    weighted,
)
from load_bench import FrameParser, unmask, ws_frame

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TAG = re.compile(r"bench_call=(\S+)")


class Results:
    def __init__(self) -> None:
        self.connections = 0
        self.sessions: Counter[str] = Counter()  # by kind of tag
        self.model_kinds: Counter[str] = Counter()  # mutated events sent, by kind
        self.model_valid = 0  # valid events sent to fuzzed sessions (filler between mutations)
        self.model_ending: Counter[str] = Counter()  # session-ending events sent, by kind
        self.good: dict[str, dict[str, Any]] = {}  # tag -> appends received, deltas sent, connections
        self.errors: list[str] = []

    def to_json(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "sessions": dict(self.sessions),
            "model_kinds": dict(self.model_kinds),
            "model_valid": self.model_valid,
            "model_ending": dict(self.model_ending),
            "good": self.good,
            "errors": self.errors[:50],
        }


class Conn:
    """One bridge → model WebSocket, server side."""

    def __init__(self, stream: trio.SocketStream, server: Server, index: int) -> None:
        self.stream = stream
        self.server = server
        self.index = index
        self.rng = random.Random(server.args.seed * 100_003 + index)
        self.lock = trio.Lock()
        self.closed = False
        self.tag = ""
        self.answer = 0

    async def send(self, payload: bytes, opcode: int = 0x1) -> None:
        if self.closed:
            return
        async with self.lock:
            try:
                await self.stream.send_all(ws_frame(payload, opcode))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closed = True

    async def text(self, obj: dict[str, Any]) -> None:
        await self.send(dumps(obj).encode())

    async def hang_up(self) -> None:
        """Close the TCP connection without a close frame."""
        self.closed = True
        await self.stream.aclose()

    # --- reading ------------------------------------------------------------------------------
    async def run(self, nursery: trio.Nursery) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = await self.stream.receive_some(65536)
            if not data:
                return
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        key = b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        await self.stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await self.text({"type": "session.created", "event_id": "ev0", "session": {"type": "realtime"}})
        parser = FrameParser()
        pending = b""
        data = rest
        while not self.closed:
            for opcode, payload, mask, fin in parser.feed(data):
                payload = unmask(payload, mask)
                if opcode == 0x9:
                    await self.send(payload, 0xA)
                elif opcode == 0x8:
                    await self.send(payload[:2], 0x8)
                    self.closed = True
                    return
                elif opcode in (0x0, 0x1, 0x2):
                    pending += payload
                    if fin:
                        await self.on_message(pending, nursery)
                        pending = b""
            try:
                data = await self.stream.receive_some(262144)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return

    async def on_message(self, raw: bytes, nursery: trio.Nursery) -> None:
        try:
            ev = json.loads(raw)
        except ValueError:
            self.server.results.errors.append(f"the bridge sent something that is not JSON: {raw[:80]!r}")
            return
        kind = ev.get("type")
        if kind == "input_audio_buffer.append":
            if self.tag.startswith("good-"):
                self.server.results.good[self.tag]["appends"].append(ev.get("audio"))
            return
        if kind == "session.update":
            instructions = str((ev.get("session") or {}).get("instructions", ""))
            found = TAG.search(instructions)
            self.tag = found.group(1) if found else "untagged"
            session = dict(ev.get("session") or {})
            session["id"] = f"sess_{self.index}"
            await self.text({"type": "session.updated", "event_id": "ev1", "session": session})
            behaviour = self.tag.split("-", 1)[0]
            self.server.results.sessions[behaviour] += 1
            if behaviour == "good":
                entry = self.server.results.good.setdefault(self.tag, {"appends": [], "deltas": [], "connections": 0})
                entry["connections"] += 1
                nursery.start_soon(self.good)
            elif behaviour == "fuzzm":
                nursery.start_soon(self.hostile)
            else:
                nursery.start_soon(self.short_answer)
        elif kind == "response.cancel":
            rid = ev.get("response_id") or "resp_unknown"
            await self.text({"type": "response.done", "response": {"id": rid, "status": "cancelled"}})
        elif kind == "conversation.item.truncate":
            await self.text({"type": "conversation.item.truncated", "item_id": ev.get("item_id"),
                             "content_index": 0, "audio_end_ms": ev.get("audio_end_ms")})  # fmt: skip

    # --- behaviours -----------------------------------------------------------------------------
    async def _answer(self, deltas: int, spacing: float, record: list[str] | None) -> None:
        self.answer += 1
        rid, iid = f"resp_{self.index}_{self.answer}", f"item_{self.index}_{self.answer}"
        await self.text({"type": "response.created", "response": {"id": rid, "status": "in_progress"}})
        for _ in range(deltas):
            payload = base64.b64encode(self.rng.randbytes(800)).decode("ascii")  # 100 ms of μ-law
            if record is not None:
                record.append(payload)
            await self.text({"type": "response.output_audio.delta", "response_id": rid, "item_id": iid,
                             "output_index": 0, "content_index": 0, "delta": payload})  # fmt: skip
            await trio.sleep(spacing)
        await self.text({"type": "response.output_audio.done", "response_id": rid, "item_id": iid})
        await self.text({"type": "response.done", "response": {"id": rid, "status": "completed", "output": [],
                         "usage": {"total_tokens": 10, "input_tokens": 6, "output_tokens": 4}}})  # fmt: skip

    async def good(self) -> None:
        a = self.server.args
        record = self.server.results.good[self.tag]["deltas"]
        await trio.sleep(0.5)
        for _ in range(a.good_answers):
            await self._answer(a.good_deltas, 0.025, record)
            await trio.sleep(1.0)

    async def short_answer(self) -> None:
        await trio.sleep(0.3)
        await self._answer(3, 0.02, None)

    async def hostile(self) -> None:
        a = self.server.args
        res = self.server.results
        rng = self.rng
        interval = a.interval_ms / 1000.0
        sent = 0
        while not self.closed:
            await trio.sleep(interval * rng.uniform(0.5, 1.5))
            if self.closed:
                return
            sent += 1
            if sent % a.block == 0 and rng.random() < a.end_chance:
                kind = rng.choice(["bad_utf8", "close", "close", "fatal_error"] if rng.random() < 0.2 else
                                  ["bad_utf8", "close"])  # fmt: skip
                res.model_ending[kind] += 1
                if kind == "close":
                    await self.hang_up()
                    return
                frame = mutate_model(rng, kind, "r", "i", "AAAA")
                await self.send(frame if isinstance(frame, bytes) else frame.encode(), 0x1)  # bad_utf8: as text
                continue
            if rng.random() < a.valid_share:
                res.model_valid += await self._valid_event()
                continue
            kind = weighted(rng, MODEL_KINDS)
            rid, iid = f"resp_{self.index}_{self.answer}", f"item_{self.index}_{self.answer}"
            frame = mutate_model(rng, kind, rid, iid, base64.b64encode(rng.randbytes(800)).decode("ascii"))
            res.model_kinds[kind] += 1
            if isinstance(frame, str):
                await self.send(frame.encode("utf-8", "surrogatepass"))
            else:
                await self.send(frame, 0x2)

    async def _valid_event(self) -> int:
        """A valid event of an answer in progress (so audio flows and barge-ins happen); returns 1."""
        rng = self.rng
        rid, iid = f"resp_{self.index}_{self.answer}", f"item_{self.index}_{self.answer}"
        r = rng.random()
        if r < 0.1:
            self.answer += 1
            rid, iid = f"resp_{self.index}_{self.answer}", f"item_{self.index}_{self.answer}"
            await self.text(model_templates(rng, rid, iid, "")[1])  # response.created
        elif r < 0.8:
            await self.text(model_templates(rng, rid, iid, base64.b64encode(rng.randbytes(800)).decode())[0])
        elif r < 0.88:
            await self.text(model_templates(rng, rid, iid, "")[2])  # response.done
        elif r < 0.94:
            await self.text(model_templates(rng, rid, iid, "")[3])  # speech_started: a barge-in
        else:
            await self.text(model_templates(rng, rid, iid, "")[rng.choice([4, 6, 7])])
        return 1


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results = Results()

    async def handler(self, stream: trio.SocketStream) -> None:
        self.results.connections += 1
        conn = Conn(stream, self, self.results.connections)
        try:
            async with trio.open_nursery() as nursery:
                await conn.run(nursery)
                conn.closed = True
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as exc:  # a bug here must not look like one in the bridge
            self.results.errors.append(f"upstream connection {conn.index}: {exc!r}")
        finally:
            conn.closed = True
            with trio.move_on_after(1):
                await stream.aclose()

    async def progress(self) -> None:
        """The mutated-event count, for the callers (they end the hostile calls once it is reached)."""
        assert self.args.progress is not None
        tmp = self.args.progress.with_suffix(".tmp")
        while True:
            await trio.sleep(0.5)
            tmp.write_text(json.dumps({"model_mutated": sum(self.results.model_kinds.values())}))
            tmp.replace(self.args.progress)

    async def main(self) -> None:
        listeners = await trio.open_tcp_listeners(self.args.port, host="127.0.0.1", backlog=1024)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self.handler, listeners)
                if self.args.progress is not None:
                    nursery.start_soon(self.progress)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()
        self.args.out.write_text(json.dumps(self.results.to_json()))


def main() -> int:
    p = argparse.ArgumentParser(description="fuzzing Realtime server for fuzz_bench")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--interval-ms", type=float, default=4.0, help="mean gap between events of a fuzzed session")
    p.add_argument("--valid-share", type=float, default=0.3, help="share of valid events in fuzzed sessions")
    p.add_argument("--block", type=int, default=400, help="events between chances to end the session")
    p.add_argument("--end-chance", type=float, default=0.35, help="chance of a session-ending event per block")
    p.add_argument("--good-answers", type=int, default=3)
    p.add_argument("--good-deltas", type=int, default=6)
    p.add_argument("--progress", type=Path, default=None, help="write the running counts here every second")
    args = p.parse_args()
    trio.run(Server(args).main)
    return 0


if __name__ == "__main__":
    sys.exit(main())
