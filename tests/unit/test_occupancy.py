"""Every worker's live-call count: the decisions on it, and the file the processes share."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import trio.testing

from bridge.server.occupancy import (
    CLOSED,
    MemoryOccupancy,
    SharedOccupancy,
    anyone_has_room,
    takes_new_connections,
)
from bridge.server.worker import AcceptGate

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("counts", "limit", "room"),
    [
        ([0], 1, True),
        ([1], 1, False),
        ([2, 1], 2, True),
        ([2, 2], 2, False),
        ([CLOSED, 1], 2, True),
        ([CLOSED, CLOSED], 2, False),  # draining or dead workers take no calls
        ([5, 0], 4, True),  # a limit lowered by a reload: over it is simply full
    ],
)
def test_anyone_has_room(counts: list[int], limit: int, room: bool) -> None:
    assert anyone_has_room(counts, limit) is room


@pytest.mark.parametrize(
    ("counts", "me", "takes"),
    [
        ([0, 0], 0, True),  # room here
        ([1, 0], 0, False),  # full here, room there: leave the connection to worker 1
        ([1, 0], 1, True),
        ([1, 1], 0, True),  # everyone full: answer it (overflow or 503)
        ([CLOSED, 0], 0, False),  # draining, another has room
        ([CLOSED, 1], 0, True),  # draining, nobody has room: refuse it here
        ([CLOSED], 0, True),  # alone and draining: refuse it here
    ],
)
def test_takes_new_connections(counts: list[int], me: int, takes: bool) -> None:
    assert takes_new_connections(counts, me, limit=1) is takes


def test_memory_occupancy_starts_closed() -> None:
    occ = MemoryOccupancy(3)
    assert occ.counts() == [CLOSED] * 3
    occ.set(1, 4)
    assert occ.counts() == [CLOSED, 4, CLOSED] and occ.slots == 3


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bridge.server.occupancy import SharedOccupancy
    occ = SharedOccupancy(Path(sys.argv[1]))
    occ.set(int(sys.argv[2]), int(sys.argv[3]))
    print(occ.counts())
    occ.close()
    """
)


def test_shared_occupancy_is_seen_by_every_process(tmp_path: Path) -> None:
    path = tmp_path / "occupancy"
    parent = SharedOccupancy(path, create_slots=3)
    assert parent.counts() == [CLOSED] * 3
    parent.set(0, 7)
    for slot, value in ((1, 2), (2, 0)):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(slot), str(value)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert out.startswith("[7, ")  # the child saw the parent's slot
    assert parent.counts() == [7, 2, 0]  # and the parent sees the children's, through the mapping
    # A new service start recreates the file: every slot closed again.
    again = SharedOccupancy(path, create_slots=2)
    assert again.counts() == [CLOSED, CLOSED]
    parent.close()
    again.close()


def test_shared_occupancy_refuses_a_file_that_is_not_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"12345")
    with pytest.raises(ValueError, match="not an occupancy file"):
        SharedOccupancy(bad)
    with pytest.raises(ValueError):
        SharedOccupancy(tmp_path / "x", create_slots=0)


# --- the accept gate ----------------------------------------------------------------------


def test_a_full_worker_leaves_the_shared_socket_to_one_with_room() -> None:
    async def main() -> None:
        counts = [0, 0]
        limit = 1
        gate = AcceptGate(
            lambda: takes_new_connections(counts, 0, limit), lambda: 0 <= counts[0] < limit
        )
        accepted: list[str] = []

        class Listener:
            """Hands out a connection whenever asked; records each accept."""

            async def accept(self) -> str:
                await trio.sleep(0.01)
                accepted.append("conn")
                return "conn"

        got = await gate.accept(Listener())  # type: ignore[arg-type]
        assert got == "conn"
        counts[0] = 1  # this worker is now full, worker 1 has room
        assert await gate.accept(Listener()) is None  # type: ignore[arg-type]
        assert accepted == ["conn"]  # it did not even ask
        counts[1] = 1  # now nobody has room: take it, to answer with the overflow
        assert await gate.accept(Listener()) == "conn"  # type: ignore[arg-type]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_an_accept_in_progress_stops_when_this_worker_fills_up() -> None:
    async def main() -> None:
        counts = [0, 0]
        gate = AcceptGate(lambda: takes_new_connections(counts, 0, 1), lambda: 0 <= counts[0] < 1)

        class Never:
            async def accept(self) -> str:
                await trio.sleep_forever()
                raise AssertionError

        async with trio.open_nursery() as nursery:
            results: list[object] = []

            async def accept() -> None:
                results.append(await gate.accept(Never()))  # type: ignore[arg-type]

            nursery.start_soon(accept)
            await trio.testing.wait_all_tasks_blocked()
            counts[0] = 1  # a call started here
            gate.changed()
        assert results == [None]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
