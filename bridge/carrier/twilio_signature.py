"""Twilio's request signature (``X-Twilio-Signature``) for the voice webhook and the media upgrade. Pure.

The algorithm, from https://www.twilio.com/docs/usage/security#validating-requests:

1. take the full URL Twilio requested, scheme to query string (the query is part of the URL and
   is *not* folded into the parameters);
2. for a form-encoded POST, append every body parameter sorted by name (Unix-style,
   case-sensitive), each as ``name + value`` with no delimiters;
3. HMAC-SHA1 with the auth token, base64; compare with the header.

Details that decide whether a correct request is accepted, each matched to the official
``twilio`` package's ``RequestValidator`` (https://github.com/twilio/twilio-python,
``twilio/request_validator.py``), which the tests sign with:

* repeated names keep every value: a name's values are appended sorted, each distinct value
  once (a ``dict`` would drop all but one and refuse the request);
* ports: over https Twilio signs without the port, over http with it; like RequestValidator we
  accept the URL with and without the port (``:443`` for https/wss, ``:80`` for http/ws);
* trailing slash: Twilio's security page advises trying a trailing ``/`` for WebSocket
  handshakes, and proxies add or drop one; the path with and without it is accepted. An attacker
  gains nothing from this leniency: every candidate names the same resource and still needs the
  token;
* the media upgrade is signed over its ``wss://`` URL with the upgrade request's own query
  string and no parameters (the webhooks-security page: the header arrives lower-case,
  ``x-twilio-signature``).

JSON bodies signed with ``bodySHA256`` are not used by voice webhooks or Media Streams and are
not supported here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

__all__ = ["compute_signature", "request_url", "signature_valid", "signed_url_candidates"]

#: Form parameters as they arrived, repeats included: ``urllib.parse.parse_qsl`` output.
FormParams = Iterable[tuple[str, str]]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}
_TO_WEBSOCKET = {"https": "wss", "http": "ws"}
_TO_HTTP = {"wss": "https", "ws": "http"}


def _pairs(params: FormParams | Mapping[str, str]) -> list[tuple[str, str]]:
    if isinstance(params, Mapping):
        return [(str(k), str(v)) for k, v in params.items()]
    return list(params)


def signed_payload(url: str, params: FormParams | Mapping[str, str]) -> str:
    """The string Twilio signs: the URL, then each name's distinct values, names and values sorted."""
    by_name: dict[str, set[str]] = {}
    for name, value in _pairs(params):
        by_name.setdefault(name, set()).add(value)
    parts = [url]
    for name in sorted(by_name):
        parts.extend(name + value for value in sorted(by_name[name]))
    return "".join(parts)


def compute_signature(auth_token: str, url: str, params: FormParams | Mapping[str, str] = ()) -> str:
    """Base64 HMAC-SHA1 of :func:`signed_payload` keyed with the auth token."""
    digest = hmac.new(auth_token.encode(), signed_payload(url, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_url_candidates(url: str) -> list[str]:
    """The spellings of ``url`` Twilio may have signed: with and without the port, and the path
    with and without a trailing slash. Everything else stays byte for byte as it was (a bare
    ``?`` included), since the signature covers the exact string."""
    scheme, _, rest = url.partition("://")
    split = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:split], rest[split:]
    split = min((i for i in (tail.find(c) for c in "?#") if i >= 0), default=len(tail))
    path, after = tail[:split], tail[split:]
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced "[" or a host NFKC would change: anyone can send that Host
        return [url]
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets in a netloc
        host = f"[{host}]"
    try:
        port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(scheme)
    except ValueError:  # not a number: no other spelling
        port = None
    netlocs = [netloc, host] + ([f"{host}:{port}"] if port is not None else [])
    paths = [path or "/"]
    if paths[0].endswith("/"):
        if paths[0] != "/":
            paths.append(paths[0].rstrip("/"))
    else:
        paths.append(paths[0] + "/")
    if not path:
        paths.insert(0, "")
    out: list[str] = []
    for n in netlocs:
        for p in paths:
            candidate = f"{scheme}://{n}{p}{after}"
            if candidate not in out:
                out.append(candidate)
    return out


def signature_valid(
    auth_token: str, url: str, params: FormParams | Mapping[str, str], signature: str | None
) -> bool:
    """True when ``signature`` is Twilio's for ``url`` (any spelling above) and ``params``.

    Every candidate is computed and compared in constant time, so the answer's timing does not
    say which spelling, if any, matched.
    """
    if not signature:
        return False
    given = signature.strip().encode("utf-8", "replace")
    pairs = _pairs(params)
    matched = False
    for candidate in signed_url_candidates(url):
        expected = compute_signature(auth_token, candidate, pairs).encode()
        matched |= hmac.compare_digest(expected, given)
    return matched


def _first(value: str | None) -> str | None:
    """The client-side value of a header a proxy chain may have extended (``a, b``)."""
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def request_url(
    public_url: str | None, headers: Mapping[str, str], target: str, *, websocket: bool
) -> str:
    """The URL Twilio requested, as it signed it.

    ``server.public_url`` (scheme, host and any path prefix the proxy strips) plus the request's
    own path and query; without it, ``X-Forwarded-Proto`` (default https, as Twilio only calls
    over TLS) and ``X-Forwarded-Host`` or ``Host``. The upgrade's URL has the ``wss``/``ws``
    scheme, the webhook's ``https``/``http``, whichever way the configuration spells it.
    ``headers`` has lower-case names.
    """
    if public_url:
        parts = urlsplit(public_url)
        scheme, netloc, prefix = parts.scheme, parts.netloc, parts.path.rstrip("/")
    else:
        scheme = (_first(headers.get("x-forwarded-proto")) or "https").lower()
        netloc = _first(headers.get("x-forwarded-host")) or (headers.get("host") or "localhost").strip()
        prefix = ""
    scheme = _TO_WEBSOCKET.get(scheme, scheme) if websocket else _TO_HTTP.get(scheme, scheme)
    return f"{scheme}://{netloc}{prefix}{target}"
