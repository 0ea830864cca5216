"""Log setup and redaction: no secret reaches a log line, whatever path it took."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from bridge import log
from bridge.log import MASK, REDACTOR, Redactor

SECRET = "my-very-private-value-0042"
OPENAI_KEY = "sk-proj-AbCdEf0123456789_xyz"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """``log.setup`` into a buffer; global logging state restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_secrets = list(REDACTOR.secrets)
    saved_config = structlog.get_config()
    buf = io.StringIO()
    log.setup("info", "json", stream=buf)
    REDACTOR.add(SECRET)
    try:
        yield buf
    finally:
        REDACTOR.secrets[:] = saved_secrets
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_config)


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    text = buf.getvalue()
    assert SECRET not in text
    assert OPENAI_KEY not in text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- Redactor -----------------------------------------------------------------------------


def test_scrub_registered_secret() -> None:
    r = Redactor([SECRET])
    assert r.scrub(f"header was {SECRET}!") == f"header was {MASK}!"
    assert r.scrub(SECRET + SECRET) == MASK + MASK


@pytest.mark.parametrize(
    "text",
    [
        f"key={OPENAI_KEY}",
        "Authorization: Bearer abcdefghijklmnop.qrs-tu",
        "authorization: bearer abcdefghijkl",
        "sk-abcdefgh12345678 at start",
    ],
)
def test_scrub_key_shaped_strings(text: str) -> None:
    scrubbed = Redactor().scrub(text)
    assert MASK in scrubbed
    assert "abcdefgh" not in scrubbed
    assert "AbCdEf0123456789" not in scrubbed


def test_scrub_leaves_ordinary_text() -> None:
    text = "call CA123 ended: hangup after 12.5 s (task-runner bearer of news)"
    assert Redactor([SECRET]).scrub(text) == text


def test_short_secrets_are_not_registered() -> None:
    r = Redactor(["", "abc"])
    r.add(None)
    r.add("xyz")
    assert r.secrets == []
    assert r.scrub("abc xyz") == "abc xyz"


def test_add_is_idempotent() -> None:
    r = Redactor()
    r.add(SECRET)
    r.add(SECRET)
    assert r.secrets == [SECRET]


def test_processor_walks_nested_dicts_lists_tuples_and_exceptions() -> None:
    r = Redactor([SECRET])
    event: dict[str, Any] = {
        "event": f"connect failed with {SECRET}",
        "headers": {"Authorization": f"Bearer {OPENAI_KEY}", "nested": {"deep": [SECRET, ("x", SECRET)]}},
        "exc": RuntimeError(f"handshake rejected: api-key {SECRET}"),
        "errors": [ValueError(f"bad {SECRET}")],
        "count": 3,
        "ok": True,
        "nothing": None,
    }
    out = r(None, "info", event)
    dumped = json.dumps(out, default=repr)
    assert SECRET not in dumped
    assert OPENAI_KEY not in dumped
    assert out["count"] == 3 and out["ok"] is True and out["nothing"] is None
    assert isinstance(out["headers"]["nested"]["deep"][1], tuple)
    assert "RuntimeError" in out["exc"]
    assert "handshake rejected" in out["exc"]


# --- setup + logging ----------------------------------------------------------------------


def test_json_lines_never_contain_a_secret_value(out: io.StringIO) -> None:
    logger = structlog.get_logger("test")
    logger.info("upstream connect", api_key=SECRET, url=f"wss://x/realtime?api-key={SECRET}", call_id="c1")
    (line,) = _lines(out)
    assert line["event"] == "upstream connect"
    assert line["level"] == "info"
    assert line["call_id"] == "c1"
    assert line["api_key"] == MASK
    assert "timestamp" in line


def test_secret_in_an_exception_message(out: io.StringIO) -> None:
    logger = structlog.get_logger("test")
    try:
        raise ConnectionError(f"handshake failed: Authorization: Bearer {OPENAI_KEY} / {SECRET}")
    except ConnectionError:
        logger.exception("connect failed")
    logger.warning("as a value", error=ConnectionError(f"with {SECRET}"))
    logger.warning("inside a list", errors=[ConnectionError(f"with {SECRET}")])
    lines = _lines(out)
    assert [line["event"] for line in lines] == ["connect failed", "as a value", "inside a list"]
    assert "ConnectionError" in lines[0]["exception"]
    assert "handshake failed" in lines[0]["exception"]


def test_secret_in_the_event_message(out: io.StringIO) -> None:
    structlog.get_logger().error(f"could not use key {OPENAI_KEY}")
    (line,) = _lines(out)
    assert MASK in line["event"]


def test_stdlib_logging_goes_through_redaction_as_json(out: io.StringIO) -> None:
    std = logging.getLogger("trio-websocket")
    std.warning("closing with header %s", SECRET)
    std.error("key %s", OPENAI_KEY)
    try:
        raise OSError(f"socket said {SECRET}")
    except OSError:
        std.exception("reader died")
    lines = _lines(out)
    assert [line["event"] for line in lines] == [f"closing with header {MASK}", f"key {MASK}", "reader died"]
    assert lines[0]["level"] == "warning"
    assert lines[0]["logger"] == "trio-websocket"
    assert "OSError" in lines[2]["exception"]


def test_stdlib_info_is_quiet_at_info(out: io.StringIO) -> None:
    logging.getLogger("chatty.library").info("noise %s", SECRET)
    assert _lines(out) == []


def test_call_context_is_bound_to_every_line(out: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(call_id="call-7", stream_sid="MZ1")
    try:
        structlog.get_logger().info("frame")
        logging.getLogger("lib").warning("lib line")
    finally:
        structlog.contextvars.clear_contextvars()
    lines = _lines(out)
    assert [(line["call_id"], line["stream_sid"]) for line in lines] == [("call-7", "MZ1"), ("call-7", "MZ1")]


def test_level_filtering(out: io.StringIO) -> None:
    log.setup("warning", "json", stream=out)
    logger = structlog.get_logger()
    logger.info("hidden")
    logger.warning("shown")
    assert [line["event"] for line in _lines(out)] == ["shown"]


def test_console_format_is_redacted_too() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_config = structlog.get_config()
    buf = io.StringIO()
    r = Redactor([SECRET])
    try:
        log.setup("info", "console", stream=buf)
        REDACTOR.add(SECRET)
        structlog.get_logger().info("hello", value=SECRET, err=ValueError(SECRET))
        logging.getLogger("lib").warning("lib %s", SECRET)
    finally:
        REDACTOR.secrets[:] = [s for s in REDACTOR.secrets if s != SECRET]
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_config)
    text = buf.getvalue()
    assert "hello" in text and "lib" in text
    assert SECRET not in text
    assert r.scrub(text) == text


def test_load_secrets_registers_every_secret_with_the_redactor() -> None:
    from bridge.config import Settings, load_secrets
    from bridge.log import REDACTOR

    settings = Settings(realtime={"extra_headers": {"api-key": "azure-secret-value-123"}})
    env = {"OPENAI_API_KEY": "plain-key-without-prefix-999", "BRIDGE_ADMIN_TOKEN": "admin-token-value-777"}
    load_secrets(settings, env)
    text = REDACTOR.scrub("a plain-key-without-prefix-999 b azure-secret-value-123 c admin-token-value-777")
    assert "plain-key" not in text and "azure-secret" not in text and "admin-token-value" not in text
