"""The simulated call itself (trio): dialling, pacing, the script, playback and the record.

One engine for every carrier: the carrier's wire is a :class:`~bridge.testing.callers.dialect.CallerDialect`.
The engine opens the WebSocket with the dialect's upgrade headers, sends its opening messages,
streams the caller's audio in the dialect's frames (paced in real time, or as fast as the socket
takes them), presses DTMF keys at their times, and ends with the dialect's end of stream. What
the bridge sends is played on a :class:`~bridge.testing.callers.playback.PlaybackBuffer` at real
time; a marker is answered when the audio queued before it has played, and a clear drops the
queued audio and then answers (or drops) the pending markers and acknowledges the clear, each
as the dialect's carrier does. Everything is recorded in a :class:`CallResult`.

Times in a :class:`CallResult` are seconds since the WebSocket opened ("stream start") on the
trio clock, except ``started_at``/``ended_at`` which are Unix wall-clock times for logs.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from bridge.audio.formats import AudioError, AudioFormat
from bridge.testing.callers import audio
from bridge.testing.callers.carriers import CALLERS, CarrierSide
from bridge.testing.callers.dialect import (
    CallContext,
    CallerDialect,
    ClearRequest,
    Frame,
    MarkRequest,
    Play,
    Problem,
)
from bridge.testing.callers.options import ALAW, MULAW, CallerOptions
from bridge.testing.callers.playback import PlaybackBuffer
from bridge.testing.callers.registry import LIVE_CALLS, CallUpdate, LiveCall
from bridge.testing.callers.result import CallResult, ClearEvent, InterruptEvent, MarkEvent, Utterance
from bridge.testing.callers.script import Pause, Say, Step, WaitForReply

DTMF_DIGITS = frozenset("0123456789*#ABCD")
_TWILIO_ENCODINGS = {MULAW: "ulaw_8k", ALAW: "alaw_8k"}


def carrier_side(options: CallerOptions) -> CarrierSide:
    side = CALLERS.get(options.carrier)
    if side is None:
        raise ValueError(f"carrier must be one of {', '.join(CALLERS)}, got {options.carrier!r}")
    return side


def call_format(options: CallerOptions) -> AudioFormat:
    """The call's audio format: ``audio_format``, Twilio's ``encoding``, or the carrier's default."""
    side = carrier_side(options)
    wanted = options.audio_format
    if options.encoding is not None:
        if side.name != "twilio":
            raise ValueError(f"encoding is the Twilio caller's; give {side.name} an audio_format instead")
        if options.encoding not in _TWILIO_ENCODINGS:
            raise ValueError(f"encoding must be {MULAW} or {ALAW}, got {options.encoding!r}")
        if wanted is not None and wanted != _TWILIO_ENCODINGS[options.encoding]:
            raise ValueError(f"encoding {options.encoding} and audio_format {wanted} disagree")
        wanted = _TWILIO_ENCODINGS[options.encoding]
    if wanted is None:
        return side.formats[0]
    try:
        fmt = AudioFormat.from_id(wanted)
    except AudioError as exc:
        raise ValueError(str(exc)) from None
    if fmt not in side.formats:
        allowed = ", ".join(f.id for f in side.formats)
        raise ValueError(f"{side.name} streams {allowed}, not {fmt.id}")
    return fmt


def _validate(options: CallerOptions) -> None:
    if not options.url.startswith(("ws://", "wss://")):
        raise ValueError(f"url must start with ws:// or wss://, got {options.url!r}")
    call_format(options)
    if not options.speed > 0:
        raise ValueError("speed must be positive")
    if options.turns < 0:
        raise ValueError("turns must be >= 0")
    for at_ms, digit in options.dtmf:
        if digit not in DTMF_DIGITS or at_ms < 0:
            raise ValueError(f"bad DTMF entry {(at_ms, digit)!r}: digit one of 0-9 * # A-D, time >= 0")


def _default_script(options: CallerOptions) -> list[Step]:
    steps: list[Step] = []
    if options.leading_silence_ms > 0:
        steps.append(Pause(options.leading_silence_ms))
    for turn in range(options.turns):
        if turn:
            steps.append(Pause(options.gap_ms))
        steps.append(Say())
    if options.trailing_silence_ms > 0:
        steps.append(Pause(options.trailing_silence_ms))
    if options.wait_for_reply_ms is not None:
        steps.append(WaitForReply(options.wait_for_reply_ms))
    return steps


class _HangUp(Exception):
    """The call cannot go on from our side (a send failed or timed out)."""


@dataclass(frozen=True)
class _Speech:
    frames: list[bytes]
    last_voiced: int  # index of the last voiced frame, -1 if none


@dataclass(frozen=True)
class _Reply:
    """Something the carrier answers the bridge with, in order: a marker's echo or a clear's ack."""

    kind: Literal["mark", "clear_ack"]
    name: str = ""
    cleared: bool = False


class _Call:
    def __init__(self, options: CallerOptions) -> None:
        _validate(options)
        self.options = o = options
        self.format = fmt = call_format(options)
        self.dialect: CallerDialect = carrier_side(options).stream(CallContext(o, fmt, int(time.time() * 1000)))
        self.frame_ms = self.dialect.frame_ms
        self.silence_frame = audio.silence(fmt, self.frame_ms)
        self.recording = self._speech(audio.load(o.audio, fmt))
        self.interrupt_speech = (
            self.recording if o.interrupt_audio is None else self._speech(audio.load(o.interrupt_audio, fmt))
        )
        self.script = o.script if o.script is not None else _default_script(o)
        # Resolve every Say up front so bad audio fails before we dial.
        self._said: dict[int, _Speech] = {
            i: self.recording if step.audio is None else self._speech(audio.load(step.audio, fmt))
            for i, step in enumerate(self.script)
            if isinstance(step, Say)
        }
        ids = self.dialect.ids
        self.result = CallResult(
            url=o.url,
            call_sid=ids.call_sid,
            stream_sid=ids.stream_sid,
            account_sid=ids.account_sid,
            encoding=self.dialect.encoding,
            carrier=o.carrier,
            audio_format=fmt.id,
            bytes_per_ms=fmt.bytes_per_ms,
            frame_ms=self.frame_ms,
        )
        self.buffer = PlaybackBuffer(
            bytes_per_ms=fmt.bytes_per_ms, sample_width=fmt.sample_width, keep_audio=o.record_audio
        )
        self.t0 = 0.0
        self._chunk = 0
        self._send_lock = trio.StrictFIFOLock()
        self._changed = trio.Event()
        self._reply_tx, self._reply_rx = trio.open_memory_channel[_Reply](math.inf)
        self._hanging_up = False
        self._next_send_at = 0.0
        # Sorted by time only (stable), so digits given for the same moment keep their order.
        self._dtmf = deque(sorted(o.dtmf, key=lambda entry: entry[0]))
        self._last_voiced_at: float | None = None
        self._last_media_at: float | None = None
        # The script runs in this scope: a hang-up deadline or a REST redirect ends it early.
        self._script_scope = trio.CancelScope()
        self.registry = o.registry or LIVE_CALLS

    def _speech(self, data: bytes) -> _Speech:
        frames = audio.split_frames(data, self.format, self.frame_ms)
        return _Speech(frames, audio.last_voiced(frames, self.format))

    def _rel(self, now: float) -> float:
        return now - self.t0

    # -- sending ----------------------------------------------------------------------------

    async def _send(self, ws: WebSocketConnection, build: Callable[[], Frame]) -> None:
        # The frame is built under the lock so wire order is the dialect's counter order across
        # the sender and the replier. The send is shielded so a hang-up deadline never cuts a
        # frame in half (which would break the stream); its own deadline still bounds it.
        async with self._send_lock:
            frame = build()
            deadline = trio.current_time() + self.options.send_timeout_s
            with trio.CancelScope(shield=True, deadline=deadline) as scope:
                await ws.send_message(frame)
            if scope.cancelled_caught:
                self.result.failure = f"a send blocked for more than {self.options.send_timeout_s} s"
                raise _HangUp(self.result.failure)

    async def _send_frame(self, ws: WebSocketConnection, frame: bytes, *, paced: bool) -> None:
        now = trio.current_time()
        if paced:
            if now - self._next_send_at > 0.2:
                # We fell far behind (a stalled send): resume the cadence from now rather than
                # bursting the backlog, as a phone network would.
                self._next_send_at = now
            await trio.sleep_until(self._next_send_at)
            self._next_send_at += self.frame_ms / 1000.0 / self.options.speed
        else:
            self._next_send_at = now  # the send lock below is still a cancellation point
        timestamp_ms = self._chunk * self.frame_ms  # media clock: exact in fast mode too
        while self._dtmf and self._dtmf[0][0] <= timestamp_ms:
            _, digit = self._dtmf.popleft()
            await self._send(ws, partial(self.dialect.dtmf, digit))
            self.result.dtmf_sent.append((self._rel(trio.current_time()), digit))
        self._chunk += 1
        await self._send(ws, partial(self.dialect.media, frame, self._chunk, timestamp_ms))
        self.result.frames_sent += 1
        self.result.bytes_sent += len(frame)
        if self.options.record_audio:
            self.result.audio_sent += frame

    async def _say(self, ws: WebSocketConnection, speech: _Speech, *, interrupt: bool = False) -> None:
        utterance = Utterance(
            index=len(self.result.utterances),
            started_at=self._rel(trio.current_time()),
            interrupt=interrupt,
        )
        self.result.utterances.append(utterance)
        for i, frame in enumerate(speech.frames):
            await self._send_frame(ws, frame, paced=self.options.realtime)
            if i == speech.last_voiced:
                self._last_voiced_at = trio.current_time()
                utterance.last_voiced_at = self._rel(self._last_voiced_at)
        utterance.ended_at = self._rel(trio.current_time())

    async def _maybe_interrupt(self, ws: WebSocketConnection) -> None:
        threshold = self.options.interrupt_after_assistant_ms
        if threshold is None or len(self.result.interrupts) >= self.options.max_interrupts:
            return
        now = trio.current_time()
        index = self.buffer.response_count
        if index == 0 or any(i.response_index == index for i in self.result.interrupts):
            return
        played = self.buffer.response_played_ms(now)
        if played < threshold or self.buffer.buffered_bytes(now) == 0:
            return  # not far enough in yet, or the response already finished playing
        self.result.interrupts.append(InterruptEvent(self._rel(now), index, played))
        await self._say(ws, self.interrupt_speech, interrupt=True)

    async def _silence(self, ws: WebSocketConnection, ms: int) -> None:
        for _ in range(math.ceil(ms / self.frame_ms)):
            await self._maybe_interrupt(ws)
            await self._send_frame(ws, self.silence_frame, paced=self.options.realtime)

    async def _wait_for_reply(self, ws: WebSocketConnection, step: WaitForReply) -> None:
        settle_s = (step.settle_ms if step.settle_ms is not None else self.options.reply_settle_ms) / 1000
        began = trio.current_time()
        self._next_send_at = max(self._next_send_at, began)
        with trio.move_on_after(step.timeout_ms / 1000.0):
            while True:
                await self._maybe_interrupt(ws)
                now = trio.current_time()
                since = self._last_voiced_at if self._last_voiced_at is not None else began
                idle = self.buffer.idle_for(now)
                replied = self._last_media_at is not None and self._last_media_at > since
                if replied and idle is not None and idle >= settle_s:
                    return
                await self._send_frame(ws, self.silence_frame, paced=True)

    async def _run_script(self, ws: WebSocketConnection) -> None:
        for i, step in enumerate(self.script):
            if isinstance(step, Say):
                await self._say(ws, self._said[i])
            elif isinstance(step, Pause):
                await self._silence(ws, step.ms)
            else:
                await self._wait_for_reply(ws, step)

    async def _speak(self, ws: WebSocketConnection) -> None:
        r = self.result
        for message in self.dialect.opening():
            await self._send(ws, partial(_same, message))
        self._next_send_at = trio.current_time()
        deadline = math.inf
        if self.options.hang_up_after_ms is not None:
            deadline = self.t0 + self.options.hang_up_after_ms / 1000.0
        self._script_scope.deadline = deadline
        with self._script_scope as scope:
            await self._run_script(ws)
        r.hung_up_early = scope.cancelled_caught and r.redirect is None
        self._hanging_up = True
        r.hung_up_at = self._rel(trio.current_time())
        stop = self.dialect.stop()
        if stop is not None:  # carriers without one just close the socket
            await self._send(ws, partial(_same, stop))
            r.stop_sent = True

    # -- receiving --------------------------------------------------------------------------

    async def _reader(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        # Always draining: trio-websocket stops answering pings and close frames when its
        # message queue is full, so nothing here may block on the network.
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                if self.result.closed_at is None:
                    self.result.closed_at = self._rel(trio.current_time())
                if not self._hanging_up:
                    self.result.closed_by = "server"
                    scope.cancel()
                return
            self._on_message(message, trio.current_time())

    def _on_message(self, raw: str | bytes, now: float) -> None:
        r = self.result
        r.messages_received += 1
        ev = self.dialect.read(raw)
        if isinstance(ev, Play):
            if ev.problem is not None:
                r.add_error(ev.problem)
            self._on_media(ev.audio, now)
        elif isinstance(ev, MarkRequest):
            r.marks_received.append(MarkEvent(ev.name, self._rel(now)))
            self._reply_marks(self.buffer.mark(ev.name, now), cleared=False)
        elif isinstance(ev, ClearRequest):
            self._on_clear(now)
        else:
            assert isinstance(ev, Problem)
            if ev.event is not None:
                r.unknown_events[ev.event] = r.unknown_events.get(ev.event, 0) + 1
            r.add_error(ev.message)
            return
        self._changed.set()

    def _on_media(self, data: bytes, now: float) -> None:
        r = self.result
        r.media_received += 1
        r.bytes_received += len(data)
        self._last_media_at = now
        if r.first_media_at is None:
            r.first_media_at = self._rel(now)
        if self._last_voiced_at is not None and now > self._last_voiced_at:
            last = next((u for u in reversed(r.utterances) if u.last_voiced_at is not None), None)
            if last is not None and last.reply_at is None:
                last.reply_at = self._rel(now)
        before = self.buffer.response_count
        self._reply_marks(self.buffer.enqueue(data, now), cleared=False)
        if self.buffer.response_count != before:
            r.response_starts.append(self._rel(now))

    def _on_clear(self, now: float) -> None:
        played_ms = self.buffer.response_played_ms(now)
        # Advance first so marks that had genuinely played are told apart from flushed ones
        # (names need not be unique: the Twilio samples name every mark "responsePart").
        due = self.buffer.advance(now)
        cleared_before = self.buffer.cleared_bytes
        flushed = self.buffer.clear(now)
        self.result.clears.append(
            ClearEvent(self._rel(now), played_ms, self.buffer.cleared_bytes - cleared_before, flushed)
        )
        for interrupt in self.result.interrupts:
            if interrupt.clear_at is None:
                interrupt.clear_at = self._rel(now)
        self._reply_marks(due, cleared=False)
        if self.dialect.marks_echoed_on_clear:
            self._reply_marks(flushed, cleared=True)
        else:
            self.dialect.forget(flushed)
            self.result.marks_dropped.extend(flushed)
        self._reply_tx.send_nowait(_Reply("clear_ack"))

    def _reply_marks(self, names: list[str], *, cleared: bool) -> None:
        for name in names:
            self._reply_tx.send_nowait(_Reply("mark", name, cleared))  # unbounded: one per mark received

    async def _replier(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        try:
            async for reply in self._reply_rx:
                if reply.kind == "mark":
                    await self._send(ws, partial(self.dialect.mark_echo, reply.name))
                    self.result.marks_echoed.append(
                        MarkEvent(reply.name, self._rel(trio.current_time()), reply.cleared)
                    )
                    continue
                ack = self.dialect.clear_ack()
                if ack is not None:
                    await self._send(ws, partial(_same, ack))
                    self.result.clears_acknowledged += 1
        except ConnectionClosed:
            return  # the reader records who closed
        except _HangUp:
            scope.cancel()

    async def _playback_clock(self) -> None:
        # Sleeps until the next mark is due, or until the reader changed the buffer.
        while True:
            self._changed = trio.Event()
            due = self.buffer.next_due()
            with trio.move_on_at(math.inf if due is None else due):
                await self._changed.wait()
            self._reply_marks(self.buffer.advance(trio.current_time()), cleared=False)

    # -- the whole call ---------------------------------------------------------------------

    def _end_stream(self, update: CallUpdate) -> None:
        """The carrier's REST API changed the call: as the carrier does, end the stream."""
        r = self.result
        if r.redirect is not None:
            return
        r.redirect = update
        r.redirected_at = self._rel(trio.current_time())
        self._script_scope.cancel()

    async def run(self) -> CallResult:
        r = self.result
        r.started_at = time.time()
        self.registry.add(LiveCall(r.call_sid, r.account_sid, r.stream_sid, self._end_stream))
        try:
            return await self._run()
        finally:
            self.registry.remove(r.call_sid)

    async def _run(self) -> CallResult:
        o, r = self.options, self.result
        headers = {**self.dialect.upgrade_headers(), **o.extra_headers}
        try:
            async with open_websocket_url(
                _without_user_info(o.url),
                extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
                message_queue_size=64,
                max_message_size=o.max_message_size,
                connect_timeout=o.connect_timeout_s,
                disconnect_timeout=o.close_timeout_s,
            ) as ws:
                r.connected = True
                self.t0 = r.clock_origin = trio.current_time()
                await self._converse(ws)
        except ConnectionRejected as exc:
            r.connect_error = f"the server rejected the WebSocket handshake with HTTP {exc.status_code}"
        except ConnectionTimeout:
            r.connect_error = f"no WebSocket handshake within {o.connect_timeout_s} s"
        except HandshakeError as exc:
            if r.connected:  # the closing handshake timed out: already recorded below
                pass
            else:
                cause = exc.__cause__ or exc
                r.connect_error = f"could not connect: {cause}"
        r.ended_at = time.time()
        return r

    async def _converse(self, ws: WebSocketConnection) -> None:
        r = self.result
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, ws, nursery.cancel_scope)
            nursery.start_soon(self._playback_clock)
            nursery.start_soon(self._replier, ws, nursery.cancel_scope)
            try:
                await self._speak(ws)
            except ConnectionClosed:
                # The server hung up while we were sending. The reader may still be draining
                # messages queued before the close, so it cannot be the one to notice first.
                if not self._hanging_up and r.closed_by is None:
                    r.closed_by = "server"
                    if r.closed_at is None:
                        r.closed_at = self._rel(trio.current_time())
            except _HangUp:
                pass  # recorded in result.failure
            self._hanging_up = True
            # Close while the reader still drains, so the close handshake is never stuck
            # behind a full message queue.
            await self._close(ws)
            nursery.cancel_scope.cancel()
        await self._close(ws)  # no-op unless a task cancelled the nursery before we closed
        if r.closed_by is None:
            r.closed_by = "caller"
        now = trio.current_time()
        if r.closed_at is None:
            r.closed_at = self._rel(now)
        self.buffer.advance(now)
        r.duration_s = now - self.t0
        r.played_bytes = self.buffer.played_bytes
        r.cleared_bytes = self.buffer.cleared_bytes
        r.unplayed_bytes = self.buffer.buffered_bytes(now)
        r.audio_played = self.buffer.played
        r.audio_cleared = self.buffer.cleared
        r.responses = self.buffer.response_count
        if ws.closed is not None:
            # After our close this is the code the server answered with; after the server's
            # close it is the server's code.
            r.close_code, r.close_reason = ws.closed.code, ws.closed.reason

    async def _close(self, ws: WebSocketConnection) -> None:
        self._hanging_up = True
        with trio.move_on_after(self.options.close_timeout_s):
            if self.result.failure is None:
                await ws.aclose(1000)
            else:
                await ws.aclose(1011, "caller could not send")


def _same(frame: Frame) -> Frame:
    return frame


def _without_user_info(url: str) -> str:
    """Credentials written into a URL go in a header (the dialect's), not on the request line."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{slash}{tail}"


async def run_call(options: CallerOptions) -> CallResult:
    """Make one simulated call. Raises ValueError for bad options (before connecting); network
    trouble is recorded in the result (``connect_error``, ``close_code``, ``failure``)."""
    return await _Call(options).run()
