"""Signatures on bridge's requests to the business's systems (tools and call webhooks). Pure.

With a signing secret configured, every request carries::

    X-Bridge-Timestamp: <unix seconds>
    X-Bridge-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>" under the secret>

so a receiver can reject forgeries (the HMAC) and replays (the timestamp, within a tolerance).
The scheme follows the common webhook-signing pattern (for example Stripe's,
https://docs.stripe.com/webhooks#verify-manually); the README shows a receiver's check.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Bridge-Timestamp"
SIGNATURE_HEADER = "X-Bridge-Signature"
VERSION = "v1"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Bridge-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{VERSION}={mac.hexdigest()}"


def headers(secret: str, timestamp: int, body: bytes) -> tuple[tuple[str, str], tuple[str, str]]:
    return ((TIMESTAMP_HEADER, str(timestamp)), (SIGNATURE_HEADER, signature(secret, timestamp, body)))


def verify(
    secret: str,
    timestamp: str | None,
    signature_value: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """A receiver's check: the signature matches and the timestamp is within ``tolerance_s`` of now."""
    if not timestamp or not signature_value or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), signature_value.strip())
