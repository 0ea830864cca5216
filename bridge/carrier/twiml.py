"""TwiML for the voice webhook and Twilio's request signature. Pure.

``/twiml`` answers Twilio's voice webhook with ``<Connect><Stream>`` pointing back at our
``/media`` WebSocket. Profile routing happens here: the webhook carries ``To``/``From``, the
media stream does not, so the chosen profile travels as a ``<Parameter>``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

# Twilio: "The combined length of each <Parameter> name and value must be under 500 characters."
MAX_PARAMETER_LENGTH = 499


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
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(url)}>{''.join(params)}</Stream></Connect></Response>"
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


def compute_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's X-Twilio-Signature: HMAC-SHA1 over the URL plus sorted name+value pairs."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _port_variants(url: str) -> list[str]:
    # Twilio drops the port for https but keeps it for http; accept both spellings.
    parts = urlsplit(url)
    default = {"https": 443, "wss": 443, "http": 80, "ws": 80}.get(parts.scheme)
    host = parts.hostname or ""
    out = [url]
    if parts.port is None and default is not None:
        out.append(urlunsplit((parts.scheme, f"{host}:{default}", parts.path, parts.query, "")))
    elif parts.port is not None:
        out.append(urlunsplit((parts.scheme, host, parts.path, parts.query, "")))
    return out


def signature_valid(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    if not signature:
        return False
    candidates = []
    for u in _port_variants(url):
        candidates.extend([u, u + "/"] if not u.endswith("/") else [u])
    return any(
        hmac.compare_digest(compute_signature(auth_token, u, params), signature) for u in candidates
    )
