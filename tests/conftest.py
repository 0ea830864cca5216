"""Fixtures for the whole suite."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from bridge.log import REDACTOR


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put logging back as it was after every test.

    Code under test (``bridge.cli.main``, ``bridge.demo``, the supervisor run in-process) calls
    ``bridge.log.setup``, which binds the current ``sys.stderr``: under pytest that is the test's
    capture file, closed when the test ends. Without this, whichever test runs next in the same
    process logs into a closed file, so the suite's result depended on test order.
    """
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_secrets = list(REDACTOR.secrets)
    saved_config = structlog.get_config()
    try:
        yield
    finally:
        REDACTOR.secrets[:] = saved_secrets
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_config)
