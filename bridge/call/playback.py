"""What the caller has actually heard of the model's audio. Pure.

The model sends audio faster than real time and the carrier buffers it, so "sent" and "heard"
drift apart by seconds. After every chunk sent to the carrier the bridge sends a uniquely
named ``mark``; the carrier echoes it when the audio before it has played. Echoes are exact but
late and sparse, so between echoes the position is estimated with the clock, and the estimate
never passes what was sent.

One timeline of carrier audio, in milliseconds, counts everything sent since the last clear::

    item A                      item B
    |------played------|-queued-|---------queued---------|
    0                  ^head    ^                        ^sent

On ``clear`` the carrier drops everything after the head and echoes every pending mark at once;
those echoes must not count as played, so their names move to a "cleared" set first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class ItemAudio:
    """One assistant item's audio as the bridge forwarded it."""

    item_id: str
    start_ms: float  # position of its first sample on the timeline
    sent_ms: float = 0.0  # carrier audio forwarded (after conversion)
    received_ms: float = 0.0  # model audio received, in the session's own timebase
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Interruption:
    """What a barge-in found: the item to truncate (if any) and how much of it was heard."""

    item_id: str | None
    audio_end_ms: int | None  # None: nothing to truncate (fully played, or never sent)
    heard_ms: float
    was_playing: bool


class PlaybackTracker:
    def __init__(self) -> None:
        self._items: OrderedDict[str, ItemAudio] = OrderedDict()
        self._pending: OrderedDict[str, float] = OrderedDict()  # mark name -> timeline position
        self._cleared: set[str] = set()
        self._sent = 0.0  # end of the timeline
        self._marked = 0.0  # position of the last mark sent (or of the last clear)
        self._confirmed = 0.0  # highest position confirmed by an echo
        self._anchor_pos = 0.0  # clock estimate: position at anchor time
        self._anchor_time: float | None = None
        self._seq = 0
        self._generation = 0
        self.stale_echoes = 0  # duplicates or names we never sent: counted, otherwise ignored

    # --- sending ---------------------------------------------------------------------------
    def on_sent(self, item_id: str, carrier_ms: float, model_ms: float, now: float, mark: bool = True) -> str | None:
        """Record a chunk forwarded to the carrier; return the name of the mark to send after it
        (None with ``mark=False``: the chunk's end is not marked, :meth:`mark` can do it later)."""
        head = self.head(now)
        if head >= self._sent:
            # The carrier had run dry: this chunk starts playing now, not when the previous
            # chunk was due to finish.
            self._anchor_pos, self._anchor_time = self._sent, now
        item = self._items.get(item_id)
        if item is None:
            item = ItemAudio(item_id, start_ms=self._sent)
            self._items[item_id] = item
            while len(self._items) > 8:  # old items are only needed for a late truncate
                self._items.popitem(last=False)
        item.sent_ms += carrier_ms
        item.received_ms += model_ms
        self._sent += carrier_ms
        return self.mark() if mark else None

    @property
    def unmarked_ms(self) -> float:
        """Audio sent since the last mark."""
        return self._sent - self._marked

    def mark(self) -> str | None:
        """The name of a mark for the end of what was sent so far (None: that end is marked already)."""
        if self._sent <= self._marked:
            return None
        self._seq += 1
        name = f"g{self._generation}m{self._seq}"
        self._pending[name] = self._marked = self._sent
        return name

    def on_received_only(self, item_id: str, model_ms: float) -> None:
        """Model audio that produced no carrier audio yet (held back by a resampler)."""
        item = self._items.get(item_id)
        if item is None:
            item = ItemAudio(item_id, start_ms=self._sent)
            self._items[item_id] = item
        item.received_ms += model_ms

    # --- echoes ------------------------------------------------------------------------------
    def on_echo(self, name: str, now: float) -> bool:
        """A mark came back. True when it moved the confirmed position."""
        if name in self._cleared:
            self._cleared.discard(name)
            return False
        pos = self._pending.get(name)
        if pos is None:
            self.stale_echoes += 1
            return False
        # The carrier plays in order: an echo implies every earlier mark has played too, so
        # an echo that overtakes an earlier one (or a lost echo) cannot stall the position.
        while self._pending:
            first, _ = self._pending.popitem(last=False)
            if first == name:
                break
        if pos > self._confirmed:
            self._confirmed = pos
        if pos >= self.head(now):
            self._anchor_pos, self._anchor_time = pos, now
        return True

    # --- position ------------------------------------------------------------------------
    def head(self, now: float) -> float:
        """Estimated play position on the timeline."""
        est = self._anchor_pos
        if self._anchor_time is not None:
            est += max(0.0, now - self._anchor_time) * 1000.0
        return max(self._confirmed, min(est, self._sent))

    def queued_ms(self, now: float) -> float:
        return self._sent - self.head(now)

    def is_playing(self, now: float) -> bool:
        return self.queued_ms(now) > 0.5

    def heard_ms(self, item_id: str, now: float) -> float:
        item = self._items.get(item_id)
        if item is None:
            return 0.0
        return min(max(self.head(now) - item.start_ms, 0.0), item.sent_ms)

    def item(self, item_id: str) -> ItemAudio | None:
        return self._items.get(item_id)

    @property
    def last_item_id(self) -> str | None:
        return next(reversed(self._items), None)

    @property
    def pending_marks(self) -> int:
        return len(self._pending)

    # --- interruption --------------------------------------------------------------------
    def interrupt(self, now: float) -> Interruption:
        """The carrier is being cleared now: settle the timeline and say what to truncate."""
        head = self.head(now)
        was_playing = head < self._sent - 0.5
        item_id = self.last_item_id
        audio_end: int | None = None
        heard = 0.0
        if item_id is not None:
            item = self._items[item_id]
            heard = min(max(head - item.start_ms, 0.0), item.sent_ms)
            unplayed = item.start_ms + item.sent_ms - head
            if not item.truncated and (unplayed > 0.5 or item.received_ms > item.sent_ms + 0.5):
                # Clamp to what the model generated (its own timebase): the server rejects
                # anything longer with "Audio content of X ms is already shorter than Y ms".
                audio_end = min(int(heard + 0.5), int(item.received_ms))
                item.truncated = True
        # Everything pending is being cleared; its echoes are coming back without being heard.
        self._cleared.update(self._pending)
        self._pending.clear()
        self._generation += 1
        self._sent = self._marked = head
        self._confirmed = min(self._confirmed, head)
        self._anchor_pos, self._anchor_time = head, now
        return Interruption(item_id, audio_end, heard, was_playing)
