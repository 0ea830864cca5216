"""Tokens the bridge writes into an answer document and checks when the media stream arrives. Pure.

Some carriers cannot sign the media WebSocket themselves but carry a value from the answer
document to the stream: SignalWire's ``authBearerToken`` becomes the upgrade's
``Authorization: Bearer`` header, Telnyx's ``<Parameter>`` arrives in the ``start`` message.
The bridge fills that value with a token only it can make: an HMAC-SHA256 of the call's id
under a key only the bridge (and, for SignalWire, the carrier) knows.

Limits, stated once: the token proves the stream was set up by an answer document the bridge
wrote; it carries no expiry (the answer is built without a clock) and is not single-use (the
dialects keep no state), so whoever captured one answer document or one ``start`` message (both
travel over TLS between the carrier and the bridge) could open streams with it until the key is
rotated. The call id inside it is informational: a peer that writes its own ``start`` message
chooses the call id it claims anyway.

Form: ``b1.<call id, base64url>.<first 16 bytes of the MAC, base64url>``; only ``[A-Za-z0-9._-]``,
safe in an XML attribute, a header and a URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

VERSION = "b1"
MAX_SUBJECT = 256
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, scope: str, subject_b64: str) -> bytes:
    # The scope (the carrier's name) keeps a token of one carrier from opening another's stream.
    return hmac.new(key, f"{VERSION}\n{scope}\n{subject_b64}".encode(), hashlib.sha256).digest()[:16]


def issue(key: bytes, scope: str, subject: str) -> str:
    """A token for ``subject`` (a call id; may be empty) under ``scope``."""
    sub = _b64(subject[:MAX_SUBJECT].encode("utf-8", "replace"))
    return f"{VERSION}.{sub}.{_b64(_mac(key, scope, sub))}"


def check(key: bytes, scope: str, token: str | None) -> str | None:
    """The subject of a valid token, or None when the token is missing, malformed or forged."""
    if not token or len(token) > 1024:
        return None
    version, _, rest = token.partition(".")
    sub, _, mac = rest.partition(".")
    if version != VERSION or not mac or not (_B64URL.fullmatch(sub) and _B64URL.fullmatch(mac)):
        return None
    try:
        given = _unb64(mac)
        subject = _unb64(sub).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(given, _mac(key, scope, sub)):
        return None
    return subject
