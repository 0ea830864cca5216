"""Opening the Realtime WebSocket (``server.websocket``: bridge's direct connection or trio-websocket).
URL and headers are built purely."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trio
from trio_websocket import HandshakeError, open_websocket_url

from bridge.config import RealtimeSettings
from bridge.websocket import CallSocket
from bridge.websocket.adapter import TrioWebSocket
from bridge.websocket.direct import HandshakeFailed, open_client


def realtime_url(base: str, model: str) -> str:
    """``realtime.url`` + ``?model=``, http(s) mapped to ws(s); other query parameters kept."""
    parts = urlsplit(base)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "model"]
    query.append(("model", model))
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))


def realtime_headers(settings: RealtimeSettings, api_key: str | None) -> list[tuple[bytes, bytes]]:
    """Bearer auth plus optional organisation, project and extra headers; never a beta header.

    Azure's ``api-key`` header goes in ``extra_headers``; with it set and no OpenAI key, no
    Authorization header is sent.
    """
    headers: list[tuple[bytes, bytes]] = []
    if api_key:
        headers.append((b"Authorization", f"Bearer {api_key}".encode()))
    if settings.organization:
        headers.append((b"OpenAI-Organization", settings.organization.encode()))
    if settings.project:
        headers.append((b"OpenAI-Project", settings.project.encode()))
    for name, value in settings.extra_headers.items():
        if name.lower() == "openai-beta":
            continue  # the beta shape is switched off; sending it gets the session closed
        headers.append((name.encode(), value.encode()))
    return headers


class UpstreamConnectError(Exception):
    pass


@asynccontextmanager
async def connect(
    settings: RealtimeSettings, model: str, api_key: str | None, engine: str = "direct"
) -> AsyncIterator[CallSocket]:
    """Open the session socket; setup failures become :class:`UpstreamConnectError`.

    ``engine`` is ``server.websocket``: ``direct`` (:mod:`bridge.websocket.direct`) or
    ``trio-websocket``."""
    url = realtime_url(settings.url, model)
    ssl_context = ssl.create_default_context() if url.startswith("wss://") else None
    headers = realtime_headers(settings, api_key)
    entered = False
    try:
        if engine == "direct":
            async with open_client(
                url,
                extra_headers=headers,
                ssl_context=ssl_context,
                # Server events can exceed 1 MiB (https://github.com/BerriAI/litellm/issues/15747).
                max_message=settings.max_message_bytes,
                connect_timeout=settings.connect_timeout_s,
            ) as direct:
                entered = True
                yield direct
            return
        async with open_websocket_url(
            url,
            ssl_context=ssl_context,
            extra_headers=headers,
            max_message_size=settings.max_message_bytes,
            # Deep enough that a burst of deltas never stalls the library's reader (which
            # would stop it answering pings); a dedicated task drains it continuously.
            message_queue_size=64,
            connect_timeout=settings.connect_timeout_s,
            disconnect_timeout=2,
        ) as ws:
            entered = True
            yield TrioWebSocket(ws)
    except (trio.TooSlowError, OSError, HandshakeError, HandshakeFailed) as exc:
        if entered:
            raise
        # trio-websocket's HandshakeError often says nothing itself; the cause says what happened.
        cause = exc.__cause__ or exc.__context__
        why = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if cause is not None and not str(exc):
            why += f" ({type(cause).__name__}: {cause})"
        raise UpstreamConnectError(f"connect to {_safe(url)} failed: {why}") from None


def _safe(url: str) -> str:
    """The URL without its query (an Azure deployment may carry api-key=... there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
