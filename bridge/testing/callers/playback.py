"""A carrier's outbound playback buffer on a virtual clock, for the simulated callers. Pure.

Carriers play the audio a bridge sends in the order received, at real time, and report back
when the audio queued before a marker has played (Twilio's ``mark``, Plivo's ``checkpoint``,
Vonage's ``notify``). This model says what has played by a given moment and which markers are
then due; the caller decides, per carrier, how to answer them (and what a clear does to the
ones still pending).
"""

from __future__ import annotations

import math
from collections import deque

BYTES_PER_MS = 8  # G.711 at 8 kHz; L16 formats pass their own
# How long the buffer must have been empty before new audio counts as a new response.
RESPONSE_GAP_MS = 500
# Added before flooring a position (in samples) so that waking exactly at a mark's due time counts
# that mark's audio as played despite float rounding (far below one sample).
_EPSILON = 1e-6


class PlaybackBuffer:
    """A carrier's outbound playback buffer on a virtual clock (pure: ``now`` is passed in).

    Audio is played in the order received at ``bytes_per_ms`` bytes per ms, whole samples of
    ``sample_width`` bytes at a time (2 for L16), starting the
    moment it is enqueued into an empty buffer. Marks are remembered at the byte position of
    the end of the audio queued before them and are due when playback reaches it.

    Every method that takes ``now`` first plays the buffer forward to ``now`` and returns the
    names of marks to echo *now*, in order: so no echo is ever lost, whichever method the
    caller happens to call first after a mark became due.

    "Response" (for barge-in metrics): a response begins with the first audio enqueued at the
    start of the call, after a ``clear``, or after the buffer has been empty for more than
    ``response_gap_ms``; it covers all audio received until the next such point. Short gaps
    (the model streaming slower than real time for a moment) therefore do not split a response.
    """

    def __init__(
        self,
        *,
        bytes_per_ms: int = BYTES_PER_MS,
        response_gap_ms: float = RESPONSE_GAP_MS,
        keep_audio: bool = True,
        sample_width: int = 1,
    ) -> None:
        self._bps = bytes_per_ms * 1000.0
        self._width = sample_width
        self._response_gap_s = response_gap_ms / 1000.0
        self._keep_audio = keep_audio
        self._chunks: deque[bytes] = deque()
        self._head_offset = 0  # bytes of _chunks[0] already consumed
        # Stream positions count every byte ever enqueued; _pos is what has been consumed
        # (played or cleared), _end is the end of the queued audio.
        self._pos = 0
        self._end = 0
        # While playing: playback (re)started at _anchor_time from position _anchor_pos.
        self._anchor_time = 0.0
        self._anchor_pos = 0
        self._idle_since = -math.inf  # when the buffer last ran empty (-inf: never had audio)
        self._marks: deque[tuple[int, str]] = deque()
        self._new_response_pending = True
        self._response_played_base = 0  # played_bytes when the current response began
        self.played = bytearray()  # audio actually played, in order (when keep_audio)
        self.cleared = bytearray()  # audio dropped by clear, in order (when keep_audio)
        self.played_bytes = 0
        self.cleared_bytes = 0
        self.flushed_marks: list[str] = []  # marks echoed because of a clear, not playback
        self.response_count = 0
        self.response_received_bytes = 0  # audio received in the current response

    # -- queries (no state change) ----------------------------------------------------------

    @property
    def played_ms(self) -> float:
        """Milliseconds of audio played as of the last call that took ``now``."""
        return self.played_bytes / (self._bps / 1000.0)

    def _position_at(self, now: float) -> int:
        if self._pos >= self._end:
            return self._pos
        samples = math.floor((now - self._anchor_time) * self._bps / self._width + _EPSILON)
        reached = self._anchor_pos + samples * self._width
        return max(self._pos, min(self._end, reached))

    def buffered_bytes(self, now: float) -> int:
        """Audio queued and not yet played at ``now``."""
        return self._end - self._position_at(now)

    def response_played_ms(self, now: float) -> float:
        """How much of the current response has played at ``now`` (see the class docstring)."""
        played = self.played_bytes + (self._position_at(now) - self._pos)
        return (played - self._response_played_base) / (self._bps / 1000.0)

    def idle_for(self, now: float) -> float | None:
        """Seconds the buffer has been empty at ``now`` (inf if it never held audio), else None."""
        if self._position_at(now) < self._end:
            return None
        if self._pos < self._end:  # ran empty since the last update: when exactly
            return now - (self._anchor_time + (self._end - self._anchor_pos) / self._bps)
        return now - self._idle_since

    def next_due(self) -> float | None:
        """When the next pending mark becomes due, or None when no mark is pending."""
        if not self._marks:
            return None
        return self._anchor_time + (self._marks[0][0] - self._anchor_pos) / self._bps

    def pending_marks(self) -> list[str]:
        return [name for _, name in self._marks]

    # -- updates ----------------------------------------------------------------------------

    def advance(self, now: float) -> list[str]:
        """Play forward to ``now``; return the marks whose audio has now finished playing."""
        target = self._position_at(now)
        if target > self._pos:
            self._consume(target - self._pos, into_played=True)
            if self._pos >= self._end:
                self._idle_since = self._anchor_time + (self._end - self._anchor_pos) / self._bps
        due: list[str] = []
        while self._marks and self._marks[0][0] <= self._pos:
            due.append(self._marks.popleft()[1])
        return due

    def enqueue(self, data: bytes, now: float) -> list[str]:
        """Queue audio for playback; returns marks that became due before ``now``."""
        due = self.advance(now)
        if not data:
            return due
        if self._pos >= self._end:  # empty: playback of this audio starts now
            if self._new_response_pending or now - self._idle_since > self._response_gap_s:
                self._start_response()
            self._anchor_time = now
            self._anchor_pos = self._pos
        self._chunks.append(bytes(data))
        self._end += len(data)
        self.response_received_bytes += len(data)
        return due

    def mark(self, name: str, now: float) -> list[str]:
        """Queue a mark; it is returned at once (after any due ones) if nothing is buffered."""
        due = self.advance(now)
        if self._pos >= self._end:
            due.append(name)
        else:
            self._marks.append((self._end, name))
        return due

    def clear(self, now: float) -> list[str]:
        """Drop all buffered audio; returns the marks due by playback, then all pending ones."""
        due = self.advance(now)
        remaining = self._end - self._pos
        if remaining:
            self._consume(remaining, into_played=False)
        flushed = [name for _, name in self._marks]
        self._marks.clear()
        self.flushed_marks.extend(flushed)
        self._idle_since = now
        self._new_response_pending = True
        return due + flushed

    def _start_response(self) -> None:
        self._new_response_pending = False
        self.response_count += 1
        self.response_received_bytes = 0
        self._response_played_base = self.played_bytes

    def _consume(self, count: int, *, into_played: bool) -> None:
        self._pos += count
        if into_played:
            self.played_bytes += count
        else:
            self.cleared_bytes += count
        sink = self.played if into_played else self.cleared
        while count:
            head = self._chunks[0]
            take = min(count, len(head) - self._head_offset)
            if self._keep_audio:
                sink += head[self._head_offset : self._head_offset + take]
            self._head_offset += take
            count -= take
            if self._head_offset == len(head):
                self._chunks.popleft()
                self._head_offset = 0
