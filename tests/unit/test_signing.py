"""The signature on bridge's requests to tools and webhooks, as a receiver checks it."""

from __future__ import annotations

import hashlib
import hmac

from bridge import signing

SECRET = "whsec-test-0123456789"
BODY = b'{"tool":"order_status","arguments":{"order_id":"123"}}'


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signing.signature(SECRET, 1_700_000_000, BODY) == f"v1={expected}"
    assert dict(signing.headers(SECRET, 1_700_000_000, BODY)) == {
        "X-Bridge-Timestamp": "1700000000",
        "X-Bridge-Signature": f"v1={expected}",
    }


def test_verify_accepts_the_real_thing_and_refuses_forgeries_tampering_and_replays() -> None:
    now = 1_700_000_100.0
    good = signing.signature(SECRET, 1_700_000_000, BODY)
    assert signing.verify(SECRET, "1700000000", good, BODY, now)
    assert not signing.verify("other-secret", "1700000000", good, BODY, now)  # forged
    assert not signing.verify(SECRET, "1700000000", good, BODY + b" ", now)  # tampered body
    assert not signing.verify(SECRET, "1700000001", good, BODY, now)  # tampered timestamp
    assert not signing.verify(SECRET, "1700000000", good, BODY, now + 3600)  # replayed an hour later
    assert not signing.verify(SECRET, None, good, BODY, now)
    assert not signing.verify(SECRET, "1700000000", None, BODY, now)
    assert not signing.verify(SECRET, "not-a-number", good, BODY, now)
