"""Hypothesis strategies shared by the fuzz tests: JSON of any shape, messages shaped like the
carriers' and the model's, mutations of valid messages, and HTTP requests as a carrier sends them."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import strategies as st

from bridge.carrier.base import InboundRequest

# --- JSON ------------------------------------------------------------------------------------

# Text a parser may try to read as a number, a rate or a codec: digits of other scripts ("²" and
# "٣" pass str.isdigit() but only one of them int()), signs, spaces, huge and empty ones.
numberish = (
    st.sampled_from(["8000", " 8000 ", "8e3", "0x1F40", "-1", "0", "", "NaN", "1" * 30, "9" * 5000, "+5", "1_000"])
    | st.sampled_from(["²", "①", "٣٣", "8\u0663", "½", "\u216b", "\U0001d7e0", "16000²"])
    | st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=6)
)
formatish = st.sampled_from(
    ["audio/x-mulaw", "audio/l16;rate=", "L16@", "audio/x-l16;rate=", "PCMU", "audio/x-raw", "slin", ";rate="]
).flatmap(lambda head: numberish.map(lambda tail: head + tail))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)  # json.dumps writes NaN/Infinity, json.loads reads them
    | st.text(max_size=40)
    | numberish
    | formatish
)


def json_values(keys: st.SearchStrategy[str] | None = None, max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value; object keys drawn from ``keys`` (and arbitrary text)."""
    key = st.text(max_size=12) if keys is None else keys | st.text(max_size=12)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=5),
        max_leaves=max_leaves,
    )


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


# --- carrier messages ------------------------------------------------------------------------

#: Every event name and field name the six dialects read (and a few they do not), so that
#: generated objects reach deep into each parser instead of stopping at "unknown event".
CARRIER_EVENTS = [
    "connected", "start", "media", "mark", "dtmf", "stop", "clear", "error",
    "playedStream", "played", "clearedAudio", "playAudio", "checkpoint",
    "websocket:connected", "websocket:notify", "websocket:cleared", "websocket:dtmf",
]  # fmt: skip
CARRIER_KEYS = [
    "event", "media", "payload", "track", "timestamp", "chunk", "start", "streamSid", "stream_sid",
    "streamId", "stream_id", "callSid", "call_sid", "callId", "call_control_id", "accountSid",
    "account_sid", "accountId", "user_id", "mediaFormat", "media_format", "encoding", "sampleRate",
    "sample_rate", "channels", "bit_rate", "customParameters", "custom_parameters", "tracks", "mark",
    "name", "dtmf", "digit", "stop", "from", "to", "protocol", "version", "content-type", "rawEvent",
    "eventType", "extra_headers", "bridge_token", "payload", "code", "title", "detail",
]  # fmt: skip

carrier_keys = st.sampled_from(CARRIER_KEYS)


@st.composite
def carrier_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object that looks like some carrier's message: a known event and known fields,
    with values of any type (nested objects use the same vocabulary)."""
    obj: dict[str, Any] = draw(st.dictionaries(carrier_keys, json_values(carrier_keys), max_size=6))
    if draw(st.booleans()):
        obj["event"] = draw(st.sampled_from(CARRIER_EVENTS) | scalars)
    return obj


b64_payloads = st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode("ascii"))
#: Strings a payload field may hold: valid base64, base64-ish junk, and anything at all.
payload_text = (
    b64_payloads
    | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n", max_size=80)
    | st.text(max_size=40)
)


@st.composite
def valid_carrier_message(draw: st.DrawFn, carrier: str) -> dict[str, Any]:
    """A well-formed message of ``carrier`` (to be mutated, or parsed as is)."""
    sid = draw(st.text(min_size=1, max_size=20))
    payload = draw(b64_payloads)
    kind = draw(st.sampled_from(["start", "media", "mark", "dtmf", "stop", "connected"]))
    if carrier in ("twilio", "signalwire"):
        if kind == "start":
            return {
                "event": "start",
                "start": {
                    "streamSid": sid,
                    "callSid": "CA1",
                    "accountSid": "AC1",
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
                },
            }
        return {
            "event": kind,
            "streamSid": sid,
            "media": {"payload": payload, "track": "inbound"},
            "mark": {"name": sid},
            "dtmf": {"digit": "5"},
            "stop": {"callSid": "CA1"},
        }
    if carrier == "telnyx":
        if kind == "start":
            return {
                "event": "start",
                "stream_id": sid,
                "start": {
                    "call_control_id": "v3:1",
                    "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                },
            }
        return {
            "event": kind,
            "media": {"payload": payload, "track": "inbound"},
            "mark": {"name": sid},
            "dtmf": {"digit": "1"},
            "stop": {"call_control_id": "v3:1"},
        }
    if carrier == "plivo":
        if kind == "start":
            return {
                "event": "start",
                "start": {
                    "streamId": sid,
                    "callId": "c1",
                    "accountId": "a1",
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
                "extra_headers": "bridge=" + draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", max_size=30)),
            }
        event = {"mark": "playedStream", "connected": "clearedAudio"}.get(kind, kind)
        return {"event": event, "name": sid, "media": {"payload": payload}, "dtmf": {"digit": "2"}}
    if carrier == "vonage":
        event = {"start": "websocket:connected", "mark": "websocket:notify", "dtmf": "websocket:dtmf"}.get(
            kind, "websocket:cleared"
        )
        return {
            "event": event,
            "content-type": "audio/l16;rate=16000",
            "call_sid": sid,
            "payload": {"name": sid},
            "digit": "3",
        }
    assert carrier == "exotel"
    if kind == "start":
        return {
            "event": "start",
            "stream_sid": sid,
            "start": {
                "stream_sid": sid,
                "call_sid": "c1",
                "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
            },
        }
    return {
        "event": kind,
        "stream_sid": sid,
        "media": {"payload": payload},
        "mark": {"name": sid},
        "dtmf": {"digit": "4"},
        "stop": {"call_sid": "c1"},
    }


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replace(value[head], rest, new)
    return copy


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> str | bytes:
    """A valid message, then one mutation: a value of another type, a missing field, the text cut
    short, a byte changed, junk appended, the whole thing as bytes, or nested very deep."""
    value = draw(base)
    how = draw(st.sampled_from(["retype", "drop", "truncate", "flip", "append", "bytes", "deep", "as_is"]))
    if how == "retype":
        path = draw(st.sampled_from(_paths(value)))
        return dumps(_replace(value, path, draw(json_values())))
    if how == "drop":
        paths = [p for p in _paths(value) if p and isinstance(p[-1], str)]
        if paths:
            path = draw(st.sampled_from(paths))
            parent = path[:-1]
            node = value
            for k in parent:
                node = node[k]
            smaller = {k: v for k, v in node.items() if k != path[-1]}
            return dumps(_replace(value, parent, smaller))
        return dumps(value)
    text = dumps(value)
    if how == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "flip":
        raw = bytearray(text.encode())
        if raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        return bytes(raw)
    if how == "append":
        return text + draw(st.text(max_size=10))
    if how == "bytes":
        return text.encode()
    if how == "deep":
        depth = draw(st.integers(100, 5000))
        return '{"event":"media","media":' + "[" * depth + "]" * depth + "}"
    return text


def any_message(base: st.SearchStrategy[Any]) -> st.SearchStrategy[str | bytes]:
    """What a peer may send in one WebSocket message: junk, JSON of any shape, mutated valid ones."""
    return st.text(max_size=200) | st.binary(max_size=200) | json_values().map(dumps) | mutated(base)


# --- HTTP requests as the front door hands them to a dialect ------------------------------------

# Header values arrive decoded as latin-1 (bridge.server.http), so any code point below 256.
latin1 = st.text(alphabet=st.characters(max_codepoint=255), max_size=60)
HEADER_NAMES = [
    "x-twilio-signature", "x-signalwire-signature", "x-plivo-signature-v3", "x-plivo-signature-ma-v3",
    "x-plivo-signature-v3-nonce", "telnyx-signature-ed25519", "telnyx-timestamp", "authorization",
    "host", "x-forwarded-proto", "x-forwarded-host", "content-type",
]  # fmt: skip
URL_PIECES = [
    "https://",
    "wss://",
    "http://",
    "ws://",
    "[",
    "]",
    ":",
    "@",
    "/",
    "?",
    "#",
    "&",
    "=",
    "%",
    "host",
    "example.com",
    "443",
    "99999",
    "::1",
    "twilio",
    "media",
    "\uff03",
    "\u2100",
    " ",
]

urls = st.lists(st.sampled_from(URL_PIECES) | st.text(max_size=6), max_size=12).map("".join) | st.text(max_size=60)
header_values = latin1 | st.sampled_from(["Basic ", "Bearer ", "Basic Og==", "Bearer b1.AA.AA", "1700000000"]).flatmap(
    lambda prefix: latin1.map(lambda rest: prefix + rest)
)
form_pairs = st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=6)


@st.composite
def inbound_requests(draw: st.DrawFn) -> InboundRequest:
    headers = draw(st.dictionaries(st.sampled_from(HEADER_NAMES) | latin1, header_values, max_size=6))
    return InboundRequest(
        method=draw(st.sampled_from(["POST", "GET", "PUT", "post", ""]) | latin1),
        url=draw(urls),
        headers={k.lower(): v for k, v in headers.items()},
        body=draw(st.binary(max_size=200) | json_values().map(lambda v: dumps(v).encode())),
        form=draw(form_pairs),
        received_at=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
    )
