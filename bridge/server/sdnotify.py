"""systemd notification protocol (sd_notify(3)) without systemd-python.

The protocol is one AF_UNIX SOCK_DGRAM datagram per message, sent to ``$NOTIFY_SOCKET``; the
payload is newline-separated ``KEY=value`` assignments. ``$NOTIFY_SOCKET`` is a filesystem path or,
when it starts with ``@``, a name in the Linux abstract namespace (the ``@`` becomes a NUL byte).
Newer systemd's ``vsock:`` addresses are not supported (``send`` returns False).

Only the supervisor (the unit's main PID, ``NotifyAccess=main``) sends notifications; workers
report to the supervisor, which relays. A failed notification never raises: losing a STATUS line
must not take the service down. ``send`` returns False and ``last_error`` keeps the reason.

Hand-written rather than a dependency: the whole protocol is a dozen lines, the PyPI ``sdnotify``
package (0.3.2, 2017) is unmaintained and has no abstract-namespace or watchdog helpers, and
``systemd-python`` needs libsystemd headers to build.
"""

from __future__ import annotations

import enum
import os
import socket
import time
from collections.abc import Mapping
from typing import Final

__all__ = ["SdNotifier"]


def _one_line(text: str) -> str:
    """STATUS= is a single line: fold CR/LF runs into spaces."""
    return " ".join(text.splitlines()).strip()


class _FromEnv(enum.Enum):
    TOKEN = enum.auto()


_FROM_ENV: Final = _FromEnv.TOKEN


class SdNotifier:
    """Sends sd_notify messages to the socket systemd gave us (or does nothing if there is none).

    ``SdNotifier()`` reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from the
    environment. Passing ``notify_socket`` (``None`` meaning disabled) makes every field explicit,
    which is what tests do. ``from_env(mapping)`` reads an arbitrary mapping.
    """

    def __init__(
        self,
        notify_socket: str | _FromEnv | None = _FROM_ENV,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        timeout: float = 1.0,
    ) -> None:
        if isinstance(notify_socket, _FromEnv):
            env = os.environ
            notify_socket = env.get("NOTIFY_SOCKET")
            watchdog_usec = _int_or_none(env.get("WATCHDOG_USEC"))
            watchdog_pid = _int_or_none(env.get("WATCHDOG_PID"))
        self.notify_socket: str | None = notify_socket or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.watchdog_pid = watchdog_pid
        # A datagram send only blocks when systemd's receive queue is full; bound that so a stuck
        # manager cannot stall the supervisor's event loop for long.
        self.timeout = timeout
        self.last_error: OSError | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SdNotifier:
        """Build from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ``WATCHDOG_PID`` (bad numbers ignored)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("NOTIFY_SOCKET") or None,
            watchdog_usec=_int_or_none(env.get("WATCHDOG_USEC")),
            watchdog_pid=_int_or_none(env.get("WATCHDOG_PID")),
        )

    @property
    def enabled(self) -> bool:
        return self.notify_socket is not None

    def _address(self) -> str | bytes:
        assert self.notify_socket is not None
        if self.notify_socket.startswith("@"):
            return b"\0" + self.notify_socket[1:].encode()
        return self.notify_socket

    def send(self, *assignments: str) -> bool:
        """Send the assignments as one datagram. True if it was sent; never raises on socket errors."""
        if self.notify_socket is None or not assignments:
            return False
        payload = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self._address())
                sock.sendall(payload)
        except OSError as exc:
            self.last_error = exc
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *self._status(status))

    def status(self, text: str) -> bool:
        return self.send(*self._status(text))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *self._status(status))

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (required by Type=notify-reload, harmless for Type=notify).

        Send ``ready()`` once the reload is done.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before start/stop times out; re-send within that interval."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(0, round(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None if the watchdog is not ours."""
        if self.watchdog_usec is None:
            return None
        if self.watchdog_pid is not None and self.watchdog_pid != os.getpid():
            return None
        return self.watchdog_usec / 2 / 1_000_000

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        return () if text is None else (f"STATUS={_one_line(text)}",)


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
