"""structlog setup: JSON lines in production, readable on a terminal.

Per-call context (``call_id``, ``stream_sid``) is bound with contextvars in the call's task;
trio copies the context into child tasks, so every line of a call carries it. A redaction
processor removes secrets from every event, whatever path they took into it (an exception
message quoting a header, a URL with a key in its query).
"""

from __future__ import annotations

import json
import logging
import re
import sys
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


def setup(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
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
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (trio-websocket) go through the same redaction.
    handler = logging.StreamHandler(out)
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
