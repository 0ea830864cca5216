"""TwiML for the voice webhook. Pure.

``/twiml`` answers Twilio's voice webhook with ``<Connect><Stream>`` pointing back at our
``/media`` WebSocket. Profile routing happens here: the webhook carries ``To``/``From``, the
media stream does not, so the chosen profile travels as a ``<Parameter>``. When every worker is
full the answer is an overflow document instead: ``<Say>`` then ``<Hangup/>``, or ``<Redirect>``
to another number's TwiML (https://www.twilio.com/docs/voice/twiml). The request signature is in
:mod:`bridge.carrier.twilio_signature`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

# Twilio: "The combined length of each <Parameter> name and value must be under 500 characters."
MAX_PARAMETER_LENGTH = 499
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def media_url(public_url: str | None, host_header: str | None, path: str = "/media") -> str:
    """The wss:// URL Twilio should stream to.

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


def connect_stream(url: str, parameters: Mapping[str, str]) -> str:
    """``<Response><Connect><Stream url=...>`` with ``<Parameter>`` children."""
    params = []
    for name, value in parameters.items():
        if len(name) + len(value) > MAX_PARAMETER_LENGTH:
            value = value[: max(0, MAX_PARAMETER_LENGTH - len(name))]
        params.append(f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>")
    return (
        f"{_XML_HEAD}<Response><Connect><Stream url={quoteattr(url)}>{''.join(params)}</Stream></Connect></Response>"
    )


def dial(destination: str) -> str:
    """``<Response><Dial>`` for a transfer: a number, a ``sip:`` URI or a ``client:`` name."""
    if destination.startswith(("sip:", "sips:")):
        noun = f"<Sip>{escape(destination)}</Sip>"
    elif destination.startswith("client:"):
        noun = f"<Client>{escape(destination.removeprefix('client:'))}</Client>"
    else:
        noun = f"<Number>{escape(destination)}</Number>"
    return f"<Response><Dial>{noun}</Dial></Response>"


def say_and_hang_up(message: str) -> str:
    """``<Say>message</Say><Hangup/>``: what a caller hears when no worker can take the call."""
    return f"{_XML_HEAD}<Response><Say>{escape(message)}</Say><Hangup/></Response>"


def redirect(url: str) -> str:
    """``<Redirect method="POST">url</Redirect>``: Twilio fetches that URL's TwiML instead."""
    return f'{_XML_HEAD}<Response><Redirect method="POST">{escape(url)}</Redirect></Response>'
