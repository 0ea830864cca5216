"""Outbound HTTP as plain data: what the pure parts ask the shell to send, and what came back.

Tools, call transfers (a carrier's REST API), call webhooks and the per-call session lookup are
all requests to the business's or the carrier's systems. The parts that decide (the call core,
the tool box, a carrier dialect) describe them as :class:`HttpRequest`; the trio shell sends them
with one client per worker (:mod:`bridge.server.outbound`) and reports :class:`HttpResult`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Failure(enum.StrEnum):
    """Why a request got no HTTP answer."""

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # refused, DNS, TLS, reset, protocol error


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    timeout_s: float = 10.0
    sign: bool = False  # add X-Bridge-Timestamp / X-Bridge-Signature (when a secret is configured)


@dataclass(frozen=True, slots=True)
class HttpResult:
    """An answer (``status`` set) or a failure (``failure`` set), with how long it took."""

    duration_s: float
    status: int | None = None
    body: bytes = b""
    failure: Failure | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300
