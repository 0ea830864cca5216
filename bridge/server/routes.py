"""Which route a request is for, and where a call goes: the public port's pure decisions.

Every carrier has two routes, ``/{carrier}/answer`` (its voice webhook) and ``/{carrier}/media``
(its stream); ``/twiml`` and ``/media`` stay Twilio's, as in the first release. A call's profile is
chosen from the voice webhook's caller and callee by the ``[[routes]]`` patterns, and the stream
URL the answer document points at is built from ``server.public_url`` (or the Host header).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from bridge.carrier.registry import CARRIERS

TWIML_PATH = "/twiml"
MEDIA_PATH = "/media"

Kind = Literal["answer", "media"]


def route(path: str) -> tuple[str, Kind] | None:
    """``(carrier, "answer" | "media")`` for a path of the public port, or None."""
    if path == TWIML_PATH:
        return "twilio", "answer"
    if path == MEDIA_PATH:
        return "twilio", "media"
    carrier, _, kind = path.strip("/").partition("/")
    if carrier in CARRIERS and kind in ("answer", "media"):
        return carrier, "answer" if kind == "answer" else "media"
    return None


def stream_path(answer_path: str, carrier: str) -> str:
    """The stream route an answer document points at: Twilio's /twiml keeps answering with /media."""
    return MEDIA_PATH if answer_path == TWIML_PATH else f"/{carrier}/media"


def media_url(public_url: str | None, host_header: str | None, path: str = "/media") -> str:
    """The wss:// URL the carrier should stream to.

    ``server.public_url`` wins (it knows the TLS terminator's name); otherwise the request's
    Host header, which is what a reverse proxy forwards.
    """
    if public_url:
        parts = urlsplit(public_url)
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        base = parts.path.rstrip("/")
        return urlunsplit((scheme, parts.netloc, base + path, "", ""))
    host = (host_header or "localhost").strip()
    return f"wss://{host}{path}"


def choose_profile(
    routes: Sequence[tuple[str | None, str | None, str]], to: str | None, from_: str | None
) -> str | None:
    """First route whose patterns match; ``(to_pattern, from_pattern, profile)``."""
    for to_pat, from_pat, profile in routes:
        if to_pat is not None and (to is None or not fnmatch.fnmatchcase(to, to_pat)):
            continue
        if from_pat is not None and (from_ is None or not fnmatch.fnmatchcase(from_, from_pat)):
            continue
        return profile
    return None


