"""Twilio's request signature, checked against the official ``twilio`` package's RequestValidator.

Every accepted case is a signature RequestValidator itself computed for the request, so the
bridge's check agrees with Twilio's own code, not with a reading of its documentation.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence

import pytest
from twilio.request_validator import RequestValidator

from bridge.carrier.twilio_signature import (
    compute_signature,
    request_url,
    signature_valid,
    signed_payload,
    signed_url_candidates,
)

TOKEN = "0123456789abcdef0123456789abcdef"
VALIDATOR = RequestValidator(TOKEN)
Pairs = list[tuple[str, str]]

# Twilio's documented worked example (https://www.twilio.com/docs/usage/security).
DOC_URL = "https://example.com/myapp.php?foo=1&bar=2"
DOC_PARAMS: Pairs = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
]
DOC_SIGNATURE = "L/OH5YylLD5NRKLltdqwSvS0BnU="

WEBHOOK: Pairs = [
    ("AccountSid", "AC" + "a" * 32),
    ("CallSid", "CA" + "b" * 32),
    ("From", "+14155550100"),
    ("To", "+15551230000"),
    ("CallStatus", "ringing"),
    ("Direction", "inbound"),
]


class MultiForm(dict[str, list[str]]):
    """A form with repeated names, the way RequestValidator reads Flask's MultiDict (getall)."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        for name, value in pairs:
            self.setdefault(name, []).append(value)

    def getall(self, name: str) -> list[str]:
        return self[name]


def official(url: str, pairs: Sequence[tuple[str, str]] = ()) -> str:
    """The signature RequestValidator computes (what Twilio sends)."""
    return str(VALIDATOR.compute_signature(url, MultiForm(pairs)))


# --- the algorithm ------------------------------------------------------------------------


def test_twilio_documented_example() -> None:
    assert compute_signature("12345", DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert signature_valid("12345", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_the_query_is_part_of_the_url_not_of_the_parameters() -> None:
    payload = signed_payload("https://h/twiml?tenant=acme", [("To", "+1")])
    assert payload == "https://h/twiml?tenant=acmeTo+1"


def test_repeated_names_keep_every_value_sorted() -> None:
    pairs = [("b", "2"), ("a", "z"), ("a", "y"), ("a", "y")]
    assert signed_payload("u", pairs) == "uayazb2"  # distinct values, sorted, as RequestValidator
    assert compute_signature(TOKEN, "u", pairs) == official("u", pairs)
    # A dict would have kept one value of "a": a different signature, so a refused request.
    assert compute_signature(TOKEN, "u", dict(pairs)) != official("u", pairs)


def _random_text(rng: random.Random, alphabet: str, longest: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


def test_agrees_with_request_validator_on_many_requests() -> None:
    rng = random.Random(11)
    alphabet = string.ascii_letters + string.digits + "+-_.~ %&=?/:éü中🙂"
    for _ in range(500):
        scheme = rng.choice(["https", "http", "wss", "ws"])
        query = "" if rng.random() < 0.3 else "?" + _random_text(rng, alphabet, 20)
        url = f"{scheme}://bridge.example.com/{_random_text(rng, string.ascii_lowercase, 8)}{query}"
        names = [_random_text(rng, string.ascii_letters + "_", 6) for _ in range(rng.randint(1, 4))]
        pairs = [(rng.choice(names), _random_text(rng, alphabet, 12)) for _ in range(rng.randint(0, 8))]
        expected = official(url, pairs)
        assert compute_signature(TOKEN, url, pairs) == expected, (url, pairs)
        assert signature_valid(TOKEN, url, pairs, expected)


# --- accepted: signed by RequestValidator ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "pairs"),
    [
        ("https://bridge.example.com/twiml", WEBHOOK),  # POST without a query
        ("https://bridge.example.com/twiml?tenant=acme", WEBHOOK),  # POST with a query
        ("https://bridge.example.com/twiml?tenant=acme&tenant=beta&x=%2F", WEBHOOK),
        ("https://bridge.example.com/twiml", [*WEBHOOK, ("Tag", "b"), ("Tag", "a")]),  # repeated keys
        ("https://bridge.example.com/twiml?x=1", [("Empty", ""), ("Empty", ""), ("Zoë", "naïve 🙂")]),
        ("https://bridge.example.com/twiml?From=%2B1999", []),  # GET: parameters in the URL only
        ("wss://bridge.example.com/media", []),  # the upgrade without a query
        ("wss://bridge.example.com/media?tenant=acme&call=1", []),  # the upgrade with its query
        ("http://127.0.0.1:8080/twiml?t=1", WEBHOOK),  # http keeps its port
    ],
)
def test_accepts_what_request_validator_signs(url: str, pairs: Pairs) -> None:
    signature = official(url, pairs)
    assert signature_valid(TOKEN, url, pairs, signature)
    assert VALIDATOR.validate(url, MultiForm(pairs), signature)  # the reference agrees


@pytest.mark.parametrize(
    ("ours", "signed", "pairs"),
    [
        ("https://h.example.com:443/twiml", "https://h.example.com/twiml", WEBHOOK),
        ("https://h.example.com/twiml", "https://h.example.com:443/twiml", WEBHOOK),
        ("https://h.example.com:8443/twiml", "https://h.example.com/twiml", WEBHOOK),
        ("http://h.example.com/twiml", "http://h.example.com:80/twiml", WEBHOOK),
        ("wss://h.example.com:443/media", "wss://h.example.com/media", []),
    ],
)
def test_accepts_the_port_either_way(ours: str, signed: str, pairs: Pairs) -> None:
    # Over https Twilio signs without the port; a proxy may report it. RequestValidator accepts both.
    assert signature_valid(TOKEN, ours, pairs, official(signed, pairs))


def test_accepts_a_trailing_slash_either_way() -> None:
    # Twilio: "try appending a trailing / character to the URL" for WebSocket handshakes.
    assert signature_valid(TOKEN, "wss://h/media", [], official("wss://h/media/"))
    assert signature_valid(TOKEN, "wss://h/media/", [], official("wss://h/media"))
    assert signature_valid(TOKEN, "wss://h/media?x=y", [], official("wss://h/media/?x=y"))
    assert signature_valid(TOKEN, "https://h/twiml", WEBHOOK, official("https://h/twiml/", WEBHOOK))


def test_url_candidates() -> None:
    assert signed_url_candidates("wss://h.example/media?x=1") == [
        "wss://h.example/media?x=1",
        "wss://h.example/media/?x=1",
        "wss://h.example:443/media?x=1",
        "wss://h.example:443/media/?x=1",
    ]
    assert signed_url_candidates("http://[::1]:8080/") == ["http://[::1]:8080/", "http://[::1]/"]
    assert signed_url_candidates("https://h/t?")[:2] == ["https://h/t?", "https://h/t/?"]  # a bare ? is kept


# --- refused: forged, missing, tampered -----------------------------------------------------


@pytest.mark.parametrize("signature", [None, "", " ", "not base64", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "é"])
def test_refuses_missing_or_forged(signature: str | None) -> None:
    assert not signature_valid(TOKEN, "https://h/twiml", WEBHOOK, signature)
    assert not signature_valid(TOKEN, "wss://h/media", [], signature)


def test_refuses_another_accounts_signature() -> None:
    other = RequestValidator("f" * 32).compute_signature("https://h/twiml", MultiForm(WEBHOOK))
    assert not signature_valid(TOKEN, "https://h/twiml", WEBHOOK, other)


@pytest.mark.parametrize(
    ("url", "pairs"),
    [
        ("https://h/twiml?tenant=evil", WEBHOOK),  # query changed
        ("https://h/twiml", WEBHOOK),  # query dropped
        ("https://h/twiml?tenant=acme&x=1", WEBHOOK),  # query extended
        ("https://h/other?tenant=acme", WEBHOOK),  # path changed
        ("https://evil.example/twiml?tenant=acme", WEBHOOK),  # host changed
        ("http://h/twiml?tenant=acme", WEBHOOK),  # scheme changed
        ("https://h/twiml?tenant=acme", [(n, v if n != "To" else "+19995550000") for n, v in WEBHOOK]),  # value
        ("https://h/twiml?tenant=acme", [*WEBHOOK, ("Extra", "1")]),  # parameter added
        ("https://h/twiml?tenant=acme", WEBHOOK[1:]),  # parameter removed
        ("https://h/twiml?tenant=acme", [*WEBHOOK, ("To", "+19995550000")]),  # a second To
        ("https://h/twiml", [*WEBHOOK, ("tenant", "acme")]),  # query moved into the body
    ],
)
def test_refuses_tampered_webhooks(url: str, pairs: Pairs) -> None:
    signature = official("https://h/twiml?tenant=acme", WEBHOOK)
    assert not signature_valid(TOKEN, url, pairs, signature)


@pytest.mark.parametrize(
    "url",
    ["wss://h/media?x=z", "wss://h/media", "wss://h/media?x=y&x=y", "wss://h/other?x=y", "ws://h/media?x=y"],
)
def test_refuses_tampered_upgrades(url: str) -> None:
    assert not signature_valid(TOKEN, url, [], official("wss://h/media?x=y"))


def test_refuses_an_upgrade_signed_as_a_webhook() -> None:
    assert not signature_valid(TOKEN, "wss://h/media", [], official("https://h/media"))


# --- the URL Twilio requested ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "headers", "target", "websocket", "expected"),
    [
        ("https://bridge.example.com", {"host": "10.0.0.2:8080"}, "/twiml?a=1", False, "https://bridge.example.com/twiml?a=1"),
        ("https://bridge.example.com", {}, "/media?a=1", True, "wss://bridge.example.com/media?a=1"),
        ("https://example.com/voice", {}, "/media", True, "wss://example.com/voice/media"),
        ("wss://bridge.example.com", {}, "/twiml", False, "https://bridge.example.com/twiml"),
        ("http://127.0.0.1:8080", {}, "/media", True, "ws://127.0.0.1:8080/media"),
        (None, {"host": "abc.ngrok.app"}, "/twiml?t=1", False, "https://abc.ngrok.app/twiml?t=1"),
        (None, {"host": "abc.ngrok.app"}, "/media", True, "wss://abc.ngrok.app/media"),
        (
            None,
            {"host": "127.0.0.1:8080", "x-forwarded-proto": "https, http", "x-forwarded-host": "b.example.com, p"},
            "/media?x=y",
            True,
            "wss://b.example.com/media?x=y",
        ),
        (None, {"host": "h:8080", "x-forwarded-proto": "http"}, "/twiml", False, "http://h:8080/twiml"),
        (None, {}, "/twiml", False, "https://localhost/twiml"),
    ],
)
def test_request_url(
    public_url: str | None, headers: dict[str, str], target: str, websocket: bool, expected: str
) -> None:
    assert request_url(public_url, headers, target, websocket=websocket) == expected
