"""SdNotifier against real AF_UNIX datagram sockets standing in for systemd's notify socket."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.server.sdnotify import SdNotifier

# sockaddr_un.sun_path holds 108 bytes; pytest's tmp_path can be longer on some machines.
_MAX_SUN_PATH = 100


class Receiver:
    """A bound SOCK_DGRAM socket: what systemd listens on."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # the value NOTIFY_SOCKET would hold

    def recv(self) -> str:
        return self.sock.recv(4096).decode()

    def assert_empty(self) -> None:
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(4096)
        finally:
            self.sock.setblocking(True)


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    if len(str(tmp_path / "notify.sock")) <= _MAX_SUN_PATH:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="sdn"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _bound(address: str | bytes, shown: str) -> Iterator[Receiver]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sock.bind(address)
    try:
        yield Receiver(sock, shown)
    finally:
        sock.close()


@pytest.fixture
def path_receiver(sock_dir: Path) -> Iterator[Receiver]:
    path = str(sock_dir / "notify.sock")
    yield from _bound(path, path)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"bridge-test-{uuid.uuid4().hex}"
    yield from _bound(b"\0" + name.encode(), "@" + name)


def test_path_socket_messages_in_order(path_receiver: Receiver) -> None:
    n = SdNotifier(path_receiver.address)
    assert n.enabled

    assert n.ready("serving on :8080, 2 workers") is True
    assert n.status("3 calls") is True
    assert n.watchdog() is True
    assert n.extend_timeout(45) is True
    assert n.stopping("draining 3 calls") is True

    assert path_receiver.recv() == "READY=1\nSTATUS=serving on :8080, 2 workers"
    assert path_receiver.recv() == "STATUS=3 calls"
    assert path_receiver.recv() == "WATCHDOG=1"
    assert path_receiver.recv() == "EXTEND_TIMEOUT_USEC=45000000"
    assert path_receiver.recv() == "STOPPING=1\nSTATUS=draining 3 calls"
    path_receiver.assert_empty()
    assert n.last_error is None


def test_abstract_socket(abstract_receiver: Receiver) -> None:
    n = SdNotifier(abstract_receiver.address)
    assert abstract_receiver.address.startswith("@")

    assert n.ready() is True
    assert n.stopping() is True
    assert n.send("STATUS=a", "ERRNO=5") is True

    assert abstract_receiver.recv() == "READY=1"
    assert abstract_receiver.recv() == "STOPPING=1"
    assert abstract_receiver.recv() == "STATUS=a\nERRNO=5"


def test_status_is_one_line(path_receiver: Receiver) -> None:
    n = SdNotifier(path_receiver.address)
    n.status("line one\nline two\r\nthree\n")
    n.ready("x\ny")
    assert path_receiver.recv() == "STATUS=line one line two three"
    assert path_receiver.recv() == "READY=1\nSTATUS=x y"


def test_extend_timeout_fractional_and_negative(path_receiver: Receiver) -> None:
    n = SdNotifier(path_receiver.address)
    n.extend_timeout(0.25)
    n.extend_timeout(-3)
    assert path_receiver.recv() == "EXTEND_TIMEOUT_USEC=250000"
    assert path_receiver.recv() == "EXTEND_TIMEOUT_USEC=0"


def test_reloading_carries_monotonic_usec(path_receiver: Receiver) -> None:
    n = SdNotifier(path_receiver.address)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msg = path_receiver.recv()
    m = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", msg)
    assert m is not None, msg
    assert before <= int(m.group(1)) <= after


def test_disabled_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for n in (
        SdNotifier(),
        SdNotifier.from_env({}),
        SdNotifier(None),
        SdNotifier.from_env({"NOTIFY_SOCKET": ""}),
    ):
        assert not n.enabled
        assert n.send("READY=1") is False
        assert n.ready("x") is False
        assert n.watchdog() is False
        assert n.last_error is None


def test_missing_socket_path_returns_false(sock_dir: Path) -> None:
    n = SdNotifier(str(sock_dir / "nobody-listens.sock"))
    assert n.enabled
    assert n.ready() is False
    assert isinstance(n.last_error, FileNotFoundError)
    # The failure is remembered but nothing is raised; later sends still just return False.
    assert n.status("still fine") is False


def test_missing_abstract_name_returns_false() -> None:
    n = SdNotifier(f"@bridge-test-absent-{uuid.uuid4().hex}")
    assert n.watchdog() is False
    assert isinstance(n.last_error, ConnectionRefusedError)


def test_constructor_reads_environment(monkeypatch: pytest.MonkeyPatch, path_receiver: Receiver) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.address)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = SdNotifier()
    assert n.enabled
    assert n.watchdog_interval() == 15.0
    assert n.ready() is True
    assert path_receiver.recv() == "READY=1"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    n = SdNotifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
    assert n.watchdog_interval() == expected


def test_watchdog_interval_explicit_arguments() -> None:
    assert SdNotifier(None, watchdog_usec=4_000_000).watchdog_interval() == 2.0
    assert SdNotifier(None, watchdog_usec=4_000_000, watchdog_pid=os.getpid()).watchdog_interval() == 2.0
    other_pid = os.getpid() + 1
    assert SdNotifier(None, watchdog_usec=4_000_000, watchdog_pid=other_pid).watchdog_interval() is None
