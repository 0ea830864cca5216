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
    calls_ahead,
    takes_new_connections,
)
from bridge.server.worker import STEP_BACK_S, AcceptGate, make_listen_socket, trio_listener

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


@pytest.mark.parametrize(
    ("counts", "me", "ahead"),
    [
        ([0, 0], 0, 0),
        ([1, 0], 0, 1),  # one more call than worker 1: leave the next one to it
        ([1, 0], 1, 0),
        ([5, 2, 3], 0, 3),  # ahead of the least busy
        ([3, 4], 0, 0),  # behind: take it
        ([3, 4], 1, 1),
        ([2, 9], 0, 0),  # the other is full (limit 9): no one to leave it to
        ([2, CLOSED], 0, 0),  # the other is draining
        ([CLOSED, 0], 0, 0),
        ([4], 0, 0),  # alone
    ],
)
def test_calls_ahead(counts: list[int], me: int, ahead: int) -> None:
    assert calls_ahead(counts, me, limit=9) == ahead


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


def test_a_worker_ahead_leaves_a_connection_to_the_less_busy_one_unless_it_is_slow() -> None:
    """Two gates on one real listening socket: the one with more calls steps back."""

    async def main() -> None:
        sock = make_listen_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        listener = trio_listener(sock)
        other = trio_listener(sock.dup())  # the other worker's descriptor of the same socket
        ahead = AcceptGate(lambda: True, lambda: True, lambda: 1)  # one call more than the other
        behind = AcceptGate(lambda: True, lambda: True, lambda: 0)
        got: dict[str, object] = {}

        async def take(name: str, gate: AcceptGate, on: trio.SocketListener) -> None:
            got[name] = await gate.accept(on)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take, "ahead", ahead, listener)
            nursery.start_soon(take, "behind", behind, other)
            await trio.testing.wait_all_tasks_blocked()
            client = await trio.open_tcp_stream("127.0.0.1", port)
        assert got["ahead"] is None and isinstance(got["behind"], trio.SocketStream)
        await client.aclose()
        # The less busy worker does not take it (busy, or gone): the one ahead does, a moment later.
        client = await trio.open_tcp_stream("127.0.0.1", port)
        began = trio.current_time()
        stream = None
        while stream is None:
            stream = await ahead.accept(listener)
        assert trio.current_time() - began >= STEP_BACK_S
        await stream.aclose()
        await client.aclose()
        await listener.aclose()
        await other.aclose()

    trio.run(main)
