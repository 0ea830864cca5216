"""The answer step: the simulated carrier asks ``/{carrier}/answer`` what to do, as the carrier would.

The request is the carrier's voice webhook (its method, its parameters, its signature when
credentials are given, :mod:`bridge.testing.callers.webhook`); the answer is read as the carrier
reads it, into a :class:`~bridge.testing.callers.webhook.StreamSetup` whose
:meth:`~bridge.testing.callers.webhook.StreamSetup.caller_options` start the call it describes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from bridge.testing.callers.carriers import CALLERS, CarrierSide
from bridge.testing.callers.options import Credentials
from bridge.testing.callers.webhook import AnswerError, StreamSetup, WebhookCall

_TO_HTTP = {"ws": "http", "wss": "https"}
_TO_WS = {"http": "ws", "https": "wss"}


@dataclass(frozen=True)
class AnswerReply:
    status: int
    content_type: str
    body: bytes


def _side(carrier: str) -> CarrierSide:
    side = CALLERS.get(carrier)
    if side is None:
        raise ValueError(f"carrier must be one of {', '.join(CALLERS)}, got {carrier!r}")
    return side


def answer_url(base_url: str, carrier: str) -> str:
    """``http(s)://host/{carrier}/answer`` for a base (``http``, ``https``, ``ws`` or ``wss``)."""
    parts = urlsplit(base_url)
    scheme = _TO_HTTP.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, f"{parts.path.rstrip('/')}/{carrier}/answer", "", ""))


def stream_url(url: str, carrier: str) -> str:
    """``url`` if it names a path, else the carrier's stream route on that base, as ``ws(s)://``."""
    parts = urlsplit(url)
    scheme = _TO_WS.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else f"/{carrier}/media"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


async def fetch_answer(
    base_url: str,
    carrier: str,
    call: WebhookCall,
    credentials: Credentials | None = None,
    *,
    timeout_s: float = 10.0,
) -> AnswerReply:
    """The carrier's voice webhook to ``base_url``'s ``/{carrier}/answer``, and what came back."""
    side = _side(carrier)
    request = side.webhook(call, answer_url(base_url, carrier), credentials, time.time())
    async with httpx.AsyncClient(follow_redirects=False, timeout=timeout_s) as client:
        response = await client.request(
            request.method, request.url, headers=dict(request.headers), content=request.body
        )
    return AnswerReply(response.status_code, response.headers.get("content-type", ""), response.content)


async def answer_call(
    base_url: str, carrier: str, call: WebhookCall, credentials: Credentials | None = None
) -> StreamSetup:
    """The stream the bridge's answer document sets up; :class:`AnswerError` when it refused or
    answered a document the carrier would not follow."""
    reply = await fetch_answer(base_url, carrier, call, credentials)
    if reply.status != 200:
        raise AnswerError(f"/{carrier}/answer answered HTTP {reply.status}: {reply.body[:200]!r}")
    return _side(carrier).parse_answer(reply.body, reply.content_type)
