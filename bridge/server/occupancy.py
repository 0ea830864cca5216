"""How many calls each worker carries, as every worker of the service can see it.

A worker knows its own calls only, yet two decisions need the others' counts:

* ``/twiml`` answers with the overflow document only when *every* worker is full;
* a full worker leaves new connections on the shared listening socket to a worker with room
  (they all ``accept()`` from one queue, so whoever asks first gets the next connection), and a
  worker with more calls than another leaves them to the one with fewer, so calls spread evenly.

The supervisor creates one small file before it starts any worker: one signed 64-bit slot per
worker, in the service's runtime directory (next to the metrics files). Every worker maps it and
writes only its own slot, on call start and end and when it starts draining, never per frame. A
slot holds the worker's live calls, or :data:`CLOSED` while the worker takes no calls (not yet
started, draining, dead: the supervisor closes a dead worker's slot). An aligned 8-byte store is
one machine store, so a reader sees the old or the new count, never a torn one; a count a moment
old only moves a decision at the very edge, and each worker's own count stays authoritative
for the upgrades it takes.

The single-process stack (tests, ``bridge demo``) uses :class:`MemoryOccupancy`, the same
interface on a list.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CLOSED",
    "MemoryOccupancy",
    "Occupancy",
    "SharedOccupancy",
    "anyone_has_room",
    "calls_ahead",
    "has_room",
    "takes_new_connections",
]

#: A slot's value while its worker takes no calls.
CLOSED = -1
_SLOT_BYTES = 8


def has_room(count: int, limit: int) -> bool:
    return 0 <= count < limit


def anyone_has_room(counts: Sequence[int], limit: int) -> bool:
    """False when every worker is full or closed: new calls get the overflow document."""
    return any(has_room(c, limit) for c in counts)


def takes_new_connections(counts: Sequence[int], me: int, limit: int) -> bool:
    """Whether worker ``me`` should accept the next connection from the shared socket: when it
    has room, or when nobody else has (then it answers with the overflow document or a 503)."""
    if has_room(counts[me], limit):
        return True
    return not any(has_room(c, limit) for i, c in enumerate(counts) if i != me)


def calls_ahead(counts: Sequence[int], me: int, limit: int) -> int:
    """How many more live calls worker ``me`` carries than the least busy other worker with room
    (0 when none has fewer): a worker ahead leaves the next connection to that one."""
    others = [c for i, c in enumerate(counts) if i != me and has_room(c, limit)]
    if not others or counts[me] < 0:
        return 0
    return max(0, counts[me] - min(others))


class Occupancy:
    """Live-call counts by worker slot."""

    def counts(self) -> list[int]:
        raise NotImplementedError

    def set(self, slot: int, value: int) -> None:
        raise NotImplementedError

    @property
    def slots(self) -> int:
        return len(self.counts())

    def close(self) -> None:
        """Release whatever the view holds (the mapping); the slots keep their values."""


class MemoryOccupancy(Occupancy):
    """The view for one process: a list, every slot closed until its worker opens it."""

    def __init__(self, slots: int = 1) -> None:
        self._values = [CLOSED] * slots

    def counts(self) -> list[int]:
        return list(self._values)

    def set(self, slot: int, value: int) -> None:
        self._values[slot] = value


class SharedOccupancy(Occupancy):
    """The view shared by the processes of one service: a memory-mapped file."""

    def __init__(self, path: Path, *, create_slots: int | None = None) -> None:
        """Map ``path``; with ``create_slots``, first (re)create it with that many closed slots."""
        self.path = Path(path)
        if create_slots is not None:
            if create_slots < 1:
                raise ValueError("an occupancy file needs at least one slot")
            data = CLOSED.to_bytes(_SLOT_BYTES, "little", signed=True) * create_slots
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.path)  # a worker never maps a half-written file
        fd = os.open(self.path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size == 0 or size % _SLOT_BYTES:
                raise ValueError(f"{self.path}: not an occupancy file ({size} bytes)")
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        # Native 8-byte integers at aligned offsets: one store per update (the file never leaves
        # this machine, so native byte order is the only order it is read in).
        self._slots = memoryview(self._map).cast("q")

    def counts(self) -> list[int]:
        return self._slots.tolist()

    def set(self, slot: int, value: int) -> None:
        self._slots[slot] = value

    def close(self) -> None:
        self._slots.release()
        self._map.close()
