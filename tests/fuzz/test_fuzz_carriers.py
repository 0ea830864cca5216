"""Every carrier dialect against whatever a peer may send: messages, webhook and upgrade requests.

A dialect's contract (bridge/carrier/base.py): ``parse`` turns any message into a neutral event or a
``CarrierError``, never an exception; ``call_details``, ``verify_request`` and ``verify_upgrade``
answer for any request; a verifying carrier never takes a request nobody signed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, get_args
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from bridge.carrier import registry
from bridge.carrier.base import (
    CallDetails,
    Carrier,
    CarrierError,
    CarrierEvent,
    InboundRequest,
    MarkEcho,
    Media,
    Start,
    media_frames,
)
from tests.fuzz.strategies import (
    any_message,
    b64_payloads,
    carrier_shaped,
    dumps,
    formatish,
    inbound_requests,
    json_values,
    numberish,
    payload_text,
    scalars,
    urls,
    valid_carrier_message,
)

NAMES = list(registry.CARRIERS)
EVENT_TYPES = get_args(CarrierEvent)

_TELNYX_KEY = base64.b64encode(
    Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode()
SECRETS = {
    "TWILIO_AUTH_TOKEN": "twilio-token",
    "TELNYX_PUBLIC_KEY": _TELNYX_KEY,
    "BRIDGE_STREAM_SECRET": "stream-secret-0123456789",
    "PLIVO_AUTH_TOKEN": "plivo-token",
    "VONAGE_SIGNATURE_SECRET": "vonage-secret",
    "SIGNALWIRE_SIGNING_KEY": "signalwire-key",
    "EXOTEL_API_TOKEN": "exotel-token",
}
# Tables that exercise the byte-order swaps and the non-default formats too.
TABLES: dict[str, list[dict[str, Any]]] = {
    "twilio": [{}],
    "telnyx": [{}, {"codec": "L16", "sample_rate": 16000}, {"codec": "L16", "l16_byte_order": "little"}],
    "plivo": [{}, {"content_type": "audio/x-l16;rate=16000", "l16_byte_order": "big"}],
    "vonage": [{}, {"sample_rate": 8000}],
    "signalwire": [{}, {"codec": "L16@16000h", "l16_byte_order": "big"}],
    "exotel": [{}, {"api_key": "key", "sample_rate": 16000}],
}


def build(name: str, verify: bool, table: Mapping[str, Any] | None = None) -> Carrier:
    settings = {"verify": verify, **(table or {})}
    if name == "exotel" and verify:
        settings.setdefault("api_key", "key")
    return registry.build(name, settings, SECRETS)


CARRIERS = {
    (name, verify, i): build(name, verify, table)
    for name, tables in TABLES.items()
    for i, table in enumerate(tables)
    for verify in (False, True)
}
KEYS = sorted(CARRIERS)


def _check_event(event: object) -> None:
    assert isinstance(event, EVENT_TYPES), f"parse returned {event!r}"
    if isinstance(event, Media):
        assert isinstance(event.payload, str)
        assert event.timestamp_ms is None or isinstance(event.timestamp_ms, int)
    elif isinstance(event, Start):
        assert isinstance(event.stream_sid, str)  # Vonage names no stream: it may be empty
        assert isinstance(event.sample_rate, int) and event.sample_rate > 0
        assert isinstance(event.channels, int) and event.channels > 0
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.custom_parameters.items())
    elif isinstance(event, CarrierError):
        assert event.kind and isinstance(event.reason, str)


# --- messages ----------------------------------------------------------------------------------


@given(data=st.data())
def test_parse_never_raises(data: st.DataObject) -> None:
    """Junk, JSON of any shape, carrier-shaped objects and mutated valid messages, to every dialect
    (each configuration: verification on and off, the byte-order swaps, the other formats)."""
    name = data.draw(st.sampled_from(NAMES))
    message = data.draw(
        any_message(valid_carrier_message(name)) | carrier_shaped().map(dumps) | carrier_shaped().map(_as_bytes)
    )
    for key in KEYS:
        _check_event(CARRIERS[key].parse(message))


def _as_bytes(value: Any) -> bytes:
    return dumps(value).encode()


@given(data=st.data())
def test_parse_of_nested_shapes_never_raises(data: st.DataObject) -> None:
    """Known events whose fields hold any JSON at all, nested a few levels."""
    name = data.draw(st.sampled_from(NAMES))
    event = data.draw(
        st.sampled_from(
            [
                "start",
                "media",
                "mark",
                "dtmf",
                "stop",
                "connected",
                "error",
                "websocket:connected",
                "websocket:notify",
                "websocket:dtmf",
                "playedStream",
                "clearedAudio",
                "clear",
            ]
        )
    )
    body = data.draw(st.dictionaries(st.sampled_from(_FIELDS[name]), json_values(st.sampled_from(_FIELDS[name]))))
    for key in KEYS:
        if key[0] == name:
            _check_event(CARRIERS[key].parse(dumps({"event": event, **body})))
            # SignalWire also unwraps {"rawEvent": {...}}.
            _check_event(CARRIERS[key].parse(dumps({"rawEvent": {"event": event, **body}})))


_FIELDS = {
    "twilio": [
        "media",
        "payload",
        "track",
        "timestamp",
        "start",
        "streamSid",
        "mediaFormat",
        "encoding",
        "sampleRate",
        "channels",
        "customParameters",
        "tracks",
        "mark",
        "name",
        "dtmf",
        "digit",
        "stop",
        "callSid",
        "accountSid",
        "protocol",
        "version",
    ],
    "telnyx": [
        "media",
        "payload",
        "track",
        "timestamp",
        "start",
        "stream_id",
        "media_format",
        "encoding",
        "sample_rate",
        "channels",
        "custom_parameters",
        "mark",
        "name",
        "dtmf",
        "digit",
        "stop",
        "call_control_id",
        "user_id",
        "from",
        "to",
        "payload",
        "code",
        "title",
        "detail",
        "version",
    ],
    "plivo": [
        "media",
        "payload",
        "track",
        "timestamp",
        "start",
        "streamId",
        "mediaFormat",
        "encoding",
        "sampleRate",
        "callId",
        "accountId",
        "extra_headers",
        "tracks",
        "name",
        "dtmf",
        "digit",
    ],
    "vonage": ["content-type", "payload", "name", "digit", "dtmf", "call_sid", "from", "to"],
    "signalwire": [
        "media",
        "payload",
        "track",
        "start",
        "streamSid",
        "mediaFormat",
        "encoding",
        "sampleRate",
        "channels",
        "customParameters",
        "mark",
        "name",
        "rawEvent",
        "eventType",
        "stop",
        "callSid",
    ],
    "exotel": [
        "media",
        "payload",
        "track",
        "timestamp",
        "start",
        "stream_sid",
        "media_format",
        "encoding",
        "sample_rate",
        "bit_rate",
        "custom_parameters",
        "mark",
        "name",
        "dtmf",
        "digit",
        "stop",
        "call_sid",
        "account_sid",
        "from",
        "to",
    ],
}


# Each dialect's start (the message with the most fields to read), every field of any type.
field = st.one_of(formatish, numberish, scalars, json_values())


@st.composite
def odd_starts(draw: st.DrawFn) -> str:
    f = {name: draw(field) for name in ("sid", "call", "ch", "params", "tracks", "bits", "x")}
    # Rates and codec names are where text becomes numbers: those get numberish text most often.
    f["enc"] = draw(formatish | field)
    f["rate"] = draw(numberish | field)
    fmt_camel = {"encoding": f["enc"], "sampleRate": f["rate"], "channels": f["ch"]}
    fmt_snake = {"encoding": f["enc"], "sample_rate": f["rate"], "channels": f["ch"], "bit_rate": f["bits"]}
    shapes = [
        {"event": "start", "start": {"streamSid": f["sid"], "callSid": f["call"], "accountSid": f["x"],
         "mediaFormat": fmt_camel, "customParameters": f["params"], "tracks": f["tracks"]}},
        {"event": "start", "stream_id": f["sid"], "start": {"call_control_id": f["call"], "user_id": f["x"],
         "media_format": fmt_snake, "custom_parameters": f["params"], "from": f["x"], "to": f["tracks"]}},
        {"event": "start", "start": {"streamId": f["sid"], "callId": f["call"], "mediaFormat": fmt_camel,
         "tracks": f["tracks"]}, "extra_headers": f["params"]},
        {"event": "websocket:connected", "content-type": f["enc"], "call_sid": f["sid"], "from": f["x"]},
        {"event": "start", "stream_sid": f["sid"], "start": {"stream_sid": f["sid"], "call_sid": f["call"],
         "media_format": fmt_snake, "custom_parameters": f["params"]}},
        {"event": "media", "media": {"payload": f["sid"], "track": f["tracks"], "timestamp": f["rate"]}},
        {"event": draw(st.sampled_from(["mark", "dtmf", "stop", "playedStream", "websocket:notify",
                                        "websocket:dtmf", "error"])),
         "mark": {"name": f["sid"]}, "name": f["sid"], "dtmf": {"digit": f["x"]}, "digit": f["x"],
         "payload": f["params"], "stop": {"callSid": f["call"], "call_sid": f["call"]}},
    ]  # fmt: skip
    return dumps(draw(st.sampled_from(shapes)))


@given(message=odd_starts())
def test_every_field_of_any_type(message: str) -> None:
    for key in KEYS:
        _check_event(CARRIERS[key].parse(message))


@pytest.mark.parametrize("name", ["twilio", "telnyx", "signalwire", "exotel"])
@given(payload=b64_payloads, stream_sid=st.text(min_size=1, max_size=30), seq=st.integers(0, 10**6))
def test_a_media_and_a_mark_the_writer_sends_read_back_as_what_was_sent(
    name: str, payload: str, stream_sid: str, seq: int
) -> None:
    """These carriers' outgoing ``media``/``mark`` share the shape of their incoming ones, so the
    writer's frame, parsed, must give back exactly the payload and the mark name (for any stream
    id, which the writer escapes once per call)."""
    carrier = CARRIERS[(name, False, 0)]
    start = Start(stream_sid, "CA1", "AC1", "audio/x-mulaw", 8000, 1)
    writer = carrier.writer(start)
    frames = media_frames(writer, payload)
    if name == "exotel":  # whole 320-byte multiples; the rest is held back for the next chunk
        sent = b"".join(base64.b64decode(json.loads(f)["media"]["payload"]) for f in frames)
        raw = base64.b64decode(payload)
        assert sent == raw[: len(raw) - len(raw) % 320]
        for frame in frames:
            assert carrier.parse(frame) == Media(json.loads(frame)["media"]["payload"], None)
    else:
        (frame,) = frames
        assert carrier.parse(frame) == Media(payload, None)
    mark = f"g0m{seq}"
    assert carrier.parse(writer.mark(mark)) == MarkEcho(mark)
    clear = json.loads(writer.clear())
    assert clear["event"] == "clear"
    for key in ("streamSid", "stream_sid"):
        if key in clear:
            assert clear[key] == stream_sid


@given(chunks=st.lists(st.binary(max_size=900), max_size=6), rate=st.sampled_from([8000, 16000, 24000]))
def test_vonage_audio_is_cut_into_whole_20ms_frames_and_nothing_is_lost(chunks: list[bytes], rate: int) -> None:
    carrier = CARRIERS[("vonage", False, 0)]
    writer = carrier.writer(Start("c", "c", "", f"audio/l16;rate={rate}", rate, 1))
    size = rate // 50 * 2
    out = b""
    for chunk in chunks:
        frames = media_frames(writer, base64.b64encode(chunk).decode())
        assert all(isinstance(f, bytes) and len(f) == size for f in frames)
        out += b"".join(frames)
        for f in frames:  # and each frame reads back as the same audio
            assert carrier.parse(f) == Media(base64.b64encode(f).decode())
    whole = b"".join(chunks)
    assert out == whole[: len(whole) - len(whole) % size]


@given(payload=payload_text, name=st.text(alphabet="gm0123456789", max_size=12))
def test_writers_take_odd_payloads_or_refuse_them_with_value_error(payload: str, name: str) -> None:
    """The core only hands writers checked base64; for anything else a writer may refuse with
    ``ValueError`` (binascii's error is one), nothing else. Valid base64 is always written."""
    for key in KEYS:
        carrier = CARRIERS[key]
        writer = carrier.writer(Start('MZ"\\\n\u2028', "CA1", "AC1", "audio/x-mulaw", 8000, 1))
        try:
            frames = media_frames(writer, payload)
        except ValueError:
            assert not _is_b64(payload), key
            continue
        assert all(isinstance(f, str | bytes) for f in frames)
        for frame in (writer.mark(name), writer.clear()):
            if isinstance(frame, str):
                json.loads(frame)  # well-formed JSON whatever the stream id held


def _is_b64(text: str) -> bool:
    try:
        return base64.b64encode(base64.b64decode(text, validate=True)).decode() == text
    except ValueError:
        return False


# --- webhook and upgrade requests ------------------------------------------------------------------


@given(request=inbound_requests())
def test_requests_are_answered_and_unsigned_ones_refused(request: InboundRequest) -> None:
    for key in KEYS:
        carrier = CARRIERS[key]
        details = carrier.call_details(request)
        assert isinstance(details, CallDetails)
        for value in (details.call_sid, details.from_number, details.to_number):
            assert value is None or isinstance(value, str)
        accepted_request = carrier.verify_request(request)
        accepted_upgrade = carrier.verify_upgrade(request)
        assert isinstance(accepted_request, bool) and isinstance(accepted_upgrade, bool)
        if not key[1]:
            assert accepted_request and accepted_upgrade, key  # verification off: everything is taken
        else:
            # Nobody signed these: a verifying carrier refuses them. (Telnyx's upgrade carries no
            # credential; its stream proves itself with the token in its start message.)
            assert not accepted_request, key
            assert accepted_upgrade is (key[0] == "telnyx"), key


# What a webhook's parameters can hold: form and query values are decoded with errors="replace",
# so never a lone surrogate.
no_surrogates = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)


@given(
    stream_url=urls,
    parameters=st.dictionaries(st.sampled_from(["from", "to", "call_sid", "profile"]) | no_surrogates, no_surrogates),
)
def test_answers_are_documents_whatever_the_host_and_parameters(stream_url: str, parameters: dict[str, str]) -> None:
    """The answer is built from the request's Host header and the webhook's parameters: it is
    always a document (or a 4xx for a Host no URL can be built from), and a well-formed one when
    the values hold no characters XML cannot carry."""
    xml_safe = all(_xml_char(c) for text in (stream_url, *parameters, *parameters.values()) for c in text)
    for key in KEYS:
        answer = CARRIERS[key].answer(stream_url, parameters)
        assert isinstance(answer.body, bytes) and answer.status in (200, 400), key
        if answer.status != 200:
            continue
        if answer.content_type.startswith("application/json"):
            json.loads(answer.body)
        elif xml_safe:
            ElementTree.fromstring(answer.body)


def _xml_char(c: str) -> bool:
    # XML 1.0 Char production (https://www.w3.org/TR/xml/#charsets)
    o = ord(c)
    return o in (0x9, 0xA, 0xD) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or o >= 0x10000


@pytest.mark.parametrize("verify", [False, True])
@given(start=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4), data=st.data())
def test_a_start_forged_without_the_stream_token_is_refused(
    verify: bool, start: dict[str, str], data: st.DataObject
) -> None:
    """Telnyx streams authenticate with a token in ``start``: one without it (or with junk) must be
    a fatal error when verification is on, whatever the other parameters are."""
    key = ("telnyx", verify, 0)
    params = {**start, "bridge_token": data.draw(st.text(max_size=40))}
    message = {
        "event": "start",
        "stream_id": "s1",
        "start": {
            "custom_parameters": params,
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        },
    }
    event = CARRIERS[key].parse(dumps(message))
    if key[1]:
        assert isinstance(event, CarrierError) and event.fatal
    else:
        assert isinstance(event, Start) and "bridge_token" not in event.custom_parameters


SETTING_KEYS = [
    "verify", "codec", "sample_rate", "l16_byte_order", "content_type", "api_key", "api_base_url",
    "auth_token_secret", "signature_secret", "timestamp_tolerance_s", "space_url", "transfer_xml_url",
    "marks_echoed_on_clear", "account_sid", "application_id", "project_id", "auth_id", "unknown",
]  # fmt: skip


@given(name=st.sampled_from(NAMES), table=st.dictionaries(st.sampled_from(SETTING_KEYS), json_values(), max_size=4))
def test_a_carrier_table_builds_or_is_refused_with_value_error(name: str, table: dict[str, Any]) -> None:
    try:
        carrier = registry.build(name, table, SECRETS)
    except ValueError:
        return
    assert carrier.name == name
