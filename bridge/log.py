"""structlog setup: JSON lines in production, readable on a terminal.

Per-call context (``call_id``, ``stream_sid``) is bound with contextvars in the call's task;
trio copies the context into child tasks, so every line of a call carries it. A redaction
processor removes secrets from every event, whatever path they took into it (an exception
message quoting a header, a URL with a key in its query).

One line, one ``write(2)``
--------------------------
The supervisor and every worker write to the same standard error (a pipe under Docker, a socket
to journald under systemd, or a file), so each line must reach it whole. structlog's PrintLogger
writes the text and the newline separately, and a long line through a text stream can go out in
several writes; another process writing in between joins two objects on one line. Here every
line, newline included, is encoded once and handed to ``os.write`` once (:class:`LineWriter`).

What the kernel guarantees for that one write (POSIX ``write(2)``, Linux ``pipe(7)``):

* a write of at most ``PIPE_BUF`` bytes (4096 on Linux) to a pipe or FIFO is atomic: it is never
  interleaved with another writer's data;
* a larger write to a pipe is *not*: when the pipe fills, the writer sleeps with part of its line
  written and another process's write can land in the middle (stream sockets behave alike);
* a write to a regular file opened with ``O_APPEND`` lands whole at the end.

Lines longer than ``PIPE_BUF`` happen (tracebacks, call summaries, transcripts). So that they too
arrive whole, the service's processes take an exclusive ``flock`` on one lock file around each
write (``BRIDGE_LOG_LOCK_FILE``, which the supervisor sets in its own and its workers'
environment): writes never overlap, whatever their size and whatever the output is. Each process
opens the file itself, so the locks are its own (a ``flock`` is shared through inherited
descriptors). Without that variable (one process) a thread lock and the single write suffice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import select
import sys
import threading
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# OpenAI keys and bearer tokens, in case something quotes them without our knowing.
_KEY_PATTERNS = [re.compile(r"sk-[A-Za-z0-9_\-]{8,}"), re.compile(r"(?i)bearer\s+[A-Za-z0-9._\-]{8,}")]
MASK = "********"


class Redactor:
    """Replaces known secret values and key-shaped strings anywhere in an event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4 and secret not in self.secrets:
            self.secrets.append(secret)

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, MASK)
        for pat in _KEY_PATTERNS:
            text = pat.sub(MASK, text)
        return text

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._walk(v) for v in value)
        if isinstance(value, BaseException):
            # An exception inside a list or dict would otherwise be rendered by repr() later,
            # after this processor, with whatever its message quotes.
            return self.scrub(repr(value))
        return value

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            event_dict[key] = self._walk(value)
        return event_dict


REDACTOR = Redactor()


#: Environment variable naming the lock file every process of one service shares for its writes.
LOCK_FILE_ENV = "BRIDGE_LOG_LOCK_FILE"


class LineWriter:
    """Writes whole lines: one ``os.write`` per line, under the service's log lock if there is one."""

    def __init__(self, stream: TextIO, lock_path: str | None = None) -> None:
        self.stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.StringIO and friends (tests)
            self._fd = None
        self._thread_lock = threading.RLock()
        self._lock_fd = _lock_fd(lock_path) if lock_path else None
        self.dropped = 0  # lines that could not be written

    def write_line(self, text: str) -> None:
        data = (text + "\n").encode("utf-8", "backslashreplace")
        with self._thread_lock:
            try:
                if self._lock_fd is None:
                    self._write(data)
                    return
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                try:
                    self._write(data)
                finally:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            except (OSError, ValueError):
                # The log's reader is gone (a closed pipe or file). A call must never fail because
                # a log line could not be written: the line is dropped and counted.
                self.dropped += 1

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self.stream.write(data.decode("utf-8"))
            self.stream.flush()
            return
        view = memoryview(data)
        while view:  # one pass, almost always; a write cut short (a full non-blocking pipe) goes on
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                select.select([], [self._fd], [])
                continue
            view = view[written:]


class _LineLogger:
    """The structlog logger behind every bound logger: hands each rendered line to a LineWriter."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write_line(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = msg


class _LineLoggerFactory:
    def __init__(self, writer: LineWriter) -> None:
        self._logger = _LineLogger(writer)

    def __call__(self, *args: Any) -> _LineLogger:
        return self._logger


class _LineHandler(logging.Handler):
    """stdlib logging (libraries such as trio-websocket) through the same one-write lines."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write_line(self.format(record))
        except Exception:
            self.handleError(record)


_lock_fds: dict[str, int | None] = {}


def _lock_fd(path: str) -> int | None:
    # setup() runs again on every reload: one descriptor per lock file and process.
    if path not in _lock_fds:
        try:
            _lock_fds[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            _lock_fds[path] = None
            print(f"bridge: cannot open the log lock {path}: {exc.strerror}", file=sys.stderr)
    return _lock_fds[path]


def setup(level: str = "info", fmt: str = "auto", stream: TextIO | None = None, lock_path: str | None = None) -> None:
    """Configure structlog and stdlib logging; ``lock_path`` defaults to ``$BRIDGE_LOG_LOCK_FILE``."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    writer = LineWriter(out, lock_path if lock_path is not None else os.environ.get(LOCK_FILE_ENV))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        renderer: list[Any] = [
            structlog.processors.format_exc_info,
            REDACTOR,
            structlog.processors.JSONRenderer(),
        ]
    else:
        renderer = [
            structlog.processors.format_exc_info,
            REDACTOR,
            structlog.dev.ConsoleRenderer(colors=out.isatty()),
        ]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=_LineLoggerFactory(writer),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (trio-websocket) go through the same redaction.
    handler = _LineHandler(writer)
    handler.setFormatter(_StdlibFormatter(use_json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS.get(level, logging.INFO), logging.WARNING))


class _StdlibFormatter(logging.Formatter):
    """Stdlib records in the same shape as structlog's lines (JSON lines in JSON mode), redacted."""

    def __init__(self, use_json: bool = False) -> None:
        super().__init__()
        self._json = use_json

    def format(self, record: logging.LogRecord) -> str:
        if not self._json:
            return REDACTOR.scrub(super().format(record))
        event: dict[str, Any] = {
            **structlog.contextvars.get_contextvars(),
            "event": record.getMessage(),
            "logger": record.name,
            "level": record.levelname.lower(),
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat().replace("+00:00", "Z"),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(REDACTOR._walk(event), default=repr)
