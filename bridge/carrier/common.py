"""What the carrier dialects share: tolerant field reading, DTMF, L16 byte order, HTTP auth pieces. Pure.

Carriers disagree on small things the dialects all have to handle the same way: counters sent as
JSON numbers or as strings, headers and form fields, Basic credentials, the port a signed URL
was written with, a transfer target that is a number, a SIP URI or a client name. Each of those
is decided once, here.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from array import array
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from bridge.carrier.base import CarrierError, Dtmf, InboundRequest

DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")


# --- reading carrier messages -------------------------------------------------------------------


def json_object(message: str | bytes) -> dict[str, Any] | CarrierError:
    """One JSON object, or the :class:`CarrierError` that says why it is not one."""
    try:
        msg = json.loads(message)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # too deeply nested: RecursionError
        return CarrierError("invalid_json", f"not JSON: {str(exc)[:80]}")
    if not isinstance(msg, dict):
        return CarrierError("invalid_json", "message is not a JSON object")
    return msg


def int_or_none(value: Any) -> int | None:
    """An integer sent as a JSON number or a string ("8000"); anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) <= 20:
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def text(value: Any) -> str:
    """An identifier sent as a string or a number; anything else is empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def str_map(value: Any) -> dict[str, str]:
    """A carrier's custom parameters as ``str -> str`` (non-string values as their JSON text)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def dtmf(digit: Any) -> Dtmf | CarrierError:
    """One keypad digit (numbers are accepted: some carriers send ``5`` rather than ``"5"``)."""
    if isinstance(digit, int) and not isinstance(digit, bool) and 0 <= digit <= 9:
        digit = str(digit)
    if not isinstance(digit, str) or len(digit) != 1 or digit not in DTMF_DIGITS:
        return CarrierError("invalid_dtmf", f"dtmf message with digit {str(digit)[:20]!r}")
    return Dtmf(digit)


def unknown_event(event: Any) -> CarrierError:
    if event is None:
        return CarrierError("missing_field", "message without an event field")
    return CarrierError("unknown_event", f"unknown event {str(event)[:40]!r}")


# --- audio -------------------------------------------------------------------------------------


def swap16(data: bytes) -> bytes:
    """Swap the bytes of every 16-bit sample (big-endian L16 <-> little-endian); an odd last byte is dropped."""
    samples = array("h", data[: len(data) & ~1])
    samples.byteswap()  # C loop: about 1 µs for 20 ms of 16 kHz audio
    return samples.tobytes()


def swap16_b64(payload_b64: str) -> str | None:
    """:func:`swap16` on base64 text; None when the payload is not base64 or not whole samples."""
    try:
        raw = binascii.a2b_base64(payload_b64, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) & 1:
        return None
    samples = array("h", raw)
    samples.byteswap()
    return binascii.b2a_base64(samples, newline=False).decode("ascii")


# --- HTTP pieces -------------------------------------------------------------------------------


def split_url(url: str) -> SplitResult | None:
    """``urlsplit(url)``, or None for a URL it refuses.

    The URL is built from the request's target and ``Host`` header, which anyone can send:
    ``urlsplit`` raises ``ValueError`` on an unbalanced ``[`` (an IPv6 literal) or a host that
    changes under NFKC normalisation, and that must cost the request, not the handler.
    """
    try:
        return urlsplit(url)
    except ValueError:
        return None


def request_params(request: InboundRequest) -> dict[str, str]:
    """The webhook's parameters: the query string, then the body's form fields (which win)."""
    parts = split_url(request.url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True)) if parts is not None else {}
    params.update(request.form)
    return params


def json_body(request: InboundRequest) -> dict[str, Any]:
    """The request body as a JSON object, or empty when it is not one."""
    if not request.body:
        return {}
    msg = json_object(request.body)
    return msg if isinstance(msg, dict) else {}


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented credential with the configured one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def bearer_token(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def basic_credentials(header_value: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic ...`` header (RFC 7617)."""
    if not header_value:
        return None
    scheme, _, encoded = header_value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def port_variants(url: str) -> list[str]:
    """``url`` as given and with its default port spelled out or dropped.

    Carriers sign the URL as they requested it; whether ``:443`` was part of it depends on how the
    webhook was configured, so both spellings are tried (as Twilio's and SignalWire's SDKs do).
    """
    parts = split_url(url)
    if parts is None:
        return [url]
    default = {"https": 443, "wss": 443, "http": 80, "ws": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return [url]
    out = [url]
    if port is None and default is not None:
        out.append(urlunsplit((parts.scheme, f"{host}:{default}", parts.path, parts.query, "")))
    elif port is not None and port == default:
        out.append(urlunsplit((parts.scheme, host, parts.path, parts.query, "")))
    return out


def with_scheme(url: str, scheme: str) -> str:
    """``url`` with another scheme (``ValueError`` for a URL :func:`split_url` refuses)."""
    parts = urlsplit(url)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


# --- transfer targets --------------------------------------------------------------------------


def dial_target(destination: str) -> tuple[str, str]:
    """``("sip", uri)``, ``("client", name)`` or ``("number", digits)`` for a transfer destination."""
    if destination.startswith(("sip:", "sips:")):
        return "sip", destination
    if destination.startswith("client:"):
        return "client", destination.removeprefix("client:")
    return "number", destination


# --- settings ----------------------------------------------------------------------------------


class CarrierSettings(BaseModel):
    """What every ``[carriers.NAME]`` table has. Secrets are never values here, only their *names*:
    the environment variable (or credential file) that holds each one."""

    model_config = ConfigDict(extra="forbid")

    verify: bool = True
    """Authenticate the carrier's webhook requests and media streams (on by default; off for
    loopback tests only)."""

    def secret_names(self) -> tuple[str, ...]:
        """The names of the secrets this carrier reads (for the loader and the log redactor)."""
        return ()


def secret(secrets: Mapping[str, str], name: str | None) -> str | None:
    """A secret by name; empty values count as missing."""
    if not name:
        return None
    value = secrets.get(name, "").strip()
    return value or None


def require(value: str | None, what: str, name: str | None) -> str:
    """``value``, or the configuration error that says which secret to set."""
    if value is None:
        raise ValueError(f"{what} is required: set {name}" if name else f"{what} is required")
    return value
