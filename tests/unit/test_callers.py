"""The simulated carriers against the bridge's dialects, without sockets.

Each caller dialect writes what its carrier documents and reads what the bridge writes; here
every frame one side makes is read by the other side's code: the caller's ``start``, media,
DTMF, end of stream and marker answers by the bridge's ``parse``; the bridge's writer frames
by the caller's ``read``; the bridge's answer documents by the caller's answer parser; the
caller's signed webhooks and upgrades by the bridge's ``verify_request``/``verify_upgrade``.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from twilio.request_validator import RequestValidator

from bridge.audio.formats import L16_16K, ULAW_8K, AudioFormat, parse_encoding
from bridge.carrier import registry
from bridge.carrier.base import (
    Carrier,
    Cleared,
    Dtmf,
    InboundRequest,
    MarkEcho,
    Media,
    Start,
    Stop,
    media_frames,
)
from bridge.carrier.plivo import pack_parameters
from bridge.testing.callers import (
    CALLERS,
    AnswerError,
    CallerOptions,
    Credentials,
    PlaybackBuffer,
    WebhookCall,
    answer_url,
    stream_url,
)
from bridge.testing.callers.audio import recording
from bridge.testing.callers.dialect import CallContext, CallerDialect, ClearRequest, MarkRequest, Play, Problem
from bridge.testing.callers.engine import call_format
from bridge.testing.callers.webhook import WebhookRequest

URL = "wss://bridge.example.com/{carrier}/media"
CASES = [(side.name, fmt.id) for side in CALLERS.values() for fmt in side.formats]


def table(carrier: str, fmt: AudioFormat, **extra: Any) -> dict[str, Any]:
    rate = fmt.sample_rate
    l16 = fmt.encoding.value == "l16"
    settings: dict[str, Any] = {
        "telnyx": {"codec": {"ulaw": "PCMU", "alaw": "PCMA"}.get(fmt.encoding.value, "L16"), "sample_rate": rate},
        "plivo": {"content_type": f"audio/x-{'l16' if l16 else 'mulaw'};rate={rate}"},
        "signalwire": {"codec": f"L16@{rate}h" if l16 else "PCMU@8000h"},
        "vonage": {"sample_rate": rate},
        "exotel": {"sample_rate": rate},
        "twilio": {},
    }[carrier]
    return {"verify": False, **settings, **extra}


def bridge_side(carrier: str, fmt: AudioFormat) -> Carrier:
    return registry.build(carrier, table(carrier, fmt), {})


def caller_side(carrier: str, fmt: AudioFormat, **options: Any) -> CallerDialect:
    opts = CallerOptions(url=URL.format(carrier=carrier), carrier=carrier, audio_format=fmt.id, **options)
    return CALLERS[carrier].stream(CallContext(opts, fmt, 1_700_000_000_000))


def bridge_params(carrier: str, params: dict[str, str]) -> dict[str, str]:
    """``params`` as the carrier carries them once the bridge's answer packed them."""
    return {"bridge": pack_parameters(params).partition("=")[2]} if carrier == "plivo" else params


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- the caller's stream, read by the bridge ------------------------------------------------------------


@pytest.mark.parametrize(("carrier", "fmt_id"), CASES)
def test_the_callers_stream_is_what_the_bridges_dialect_reads(carrier: str, fmt_id: str) -> None:
    fmt = AudioFormat.from_id(fmt_id)
    params = {"profile": "sales", "lang": "en"}
    caller = caller_side(carrier, fmt, params=bridge_params(carrier, params), from_number="+1555", to_number="+1666")
    bridge = bridge_side(carrier, fmt)
    events = [bridge.parse(frame) for frame in caller.opening()]
    start = events[-1]
    assert isinstance(start, Start), events
    assert parse_encoding(start.encoding, start.sample_rate) == fmt
    assert start.stream_sid == caller.ids.stream_sid and start.call_sid == caller.ids.call_sid
    assert {k: start.custom_parameters.get(k) for k in params} == params
    assert start.channels == 1
    # Caller audio: what the bridge takes in is the caller's samples (byte order undone).
    audio = recording(fmt)[: 20 * fmt.bytes_per_ms * 3]
    media = bridge.parse(caller.media(audio, 1, 0))
    assert isinstance(media, Media) and base64.b64decode(media.payload) == audio
    assert bridge.parse(caller.dtmf("7")) == Dtmf("7")
    stop = caller.stop()
    if carrier in ("plivo", "vonage"):
        assert stop is None  # these carriers end a stream by closing the socket
    else:
        assert stop is not None and isinstance(bridge.parse(stop), Stop)


@pytest.mark.parametrize(("carrier", "fmt_id"), CASES)
def test_the_caller_reads_what_the_bridges_writer_writes_and_answers_as_its_carrier(carrier: str, fmt_id: str) -> None:
    fmt = AudioFormat.from_id(fmt_id)
    caller = caller_side(carrier, fmt)
    bridge = bridge_side(carrier, fmt)
    start = bridge.parse(caller.opening()[-1])
    assert isinstance(start, Start)
    writer = bridge.writer(start)
    audio = recording(fmt)[: 100 * fmt.bytes_per_ms]  # one 100 ms chunk, as the model sends
    played = [caller.read(frame) for frame in media_frames(writer, b64(audio))]
    assert all(isinstance(ev, Play) and ev.problem is None for ev in played), played
    assert b"".join(ev.audio for ev in played if isinstance(ev, Play)) == audio
    assert caller.read(writer.mark("g0m1")) == MarkRequest("g0m1")
    assert bridge.parse(caller.mark_echo("g0m1")) == MarkEcho("g0m1")
    assert caller.read(writer.clear()) == ClearRequest()
    ack = caller.clear_ack()
    if carrier in ("plivo", "vonage"):
        assert caller.marks_echoed_on_clear is False and ack is not None and bridge.parse(ack) == Cleared()
    else:
        assert caller.marks_echoed_on_clear is True and ack is None
    assert caller.marks_echoed_on_clear is bridge.marks_echoed_on_clear
    assert isinstance(caller.read("not json"), Problem)
    unknown = caller.read('{"event": "bogus", "action": "bogus"}')
    assert isinstance(unknown, Problem) and unknown.event == "bogus"


@pytest.mark.parametrize("carrier", ["twilio", "plivo", "exotel", "signalwire"])
def test_frames_for_another_stream_are_not_played(carrier: str) -> None:
    fmt = CALLERS[carrier].formats[0]
    caller = caller_side(carrier, fmt)
    other = bridge_side(carrier, fmt)
    start = other.parse(caller_side(carrier, fmt).opening()[-1])
    assert isinstance(start, Start)
    frame = media_frames(other.writer(start), b64(recording(fmt)[:3200]))[0]
    assert isinstance(caller.read(frame if carrier != "plivo" else other.writer(start).clear()), Problem)


def test_framing_carriers_flag_frames_that_break_their_rules() -> None:
    vonage = caller_side("vonage", L16_16K)
    odd = vonage.read(b"\x00" * 320)  # 10 ms: Vonage takes 20 ms messages
    assert isinstance(odd, Play) and odd.problem is not None and "20 ms" in odd.problem
    exotel = caller_side("exotel", AudioFormat.from_id("l16_8k"))
    message = '{"event": "media", "stream_sid": "%s", "media": {"payload": "%s"}}'
    odd = exotel.read(message % (exotel.ids.stream_sid, b64(b"\x00" * 330)))
    assert isinstance(odd, Play) and odd.problem is not None and "320" in odd.problem


def test_plivo_playaudio_in_another_format_is_refused() -> None:
    caller = caller_side("plivo", ULAW_8K)
    frame = '{"event": "playAudio", "media": {"contentType": "audio/x-l16", "sampleRate": 8000, "payload": "AAAA"}}'
    assert isinstance(caller.read(frame), Problem)


def test_vonage_echoes_each_notify_payload_as_sent_and_forgets_the_cleared_ones() -> None:
    caller = caller_side("vonage", L16_16K)
    assert caller.read('{"action": "notify", "payload": {"name": "a", "n": 1}}') == MarkRequest("a")
    assert caller.read('{"action": "notify", "payload": {"name": "a", "n": 2}}') == MarkRequest("a")
    assert caller.read('{"action": "notify", "payload": {"name": "b"}}') == MarkRequest("b")
    assert caller.mark_echo("a") == '{"event":"websocket:notify","payload":{"name":"a","n":1}}'
    caller.forget(["a", "b"])
    assert caller.mark_echo("b") == '{"event":"websocket:notify","payload":{"name":"b"}}'  # forgotten: by name


# --- the answer documents ------------------------------------------------------------------------------------


# Twilio streams μ-law only (its A-law is the bridge's own allowance, never asked for in TwiML).
ANSWER_CASES = [case for case in CASES if case != ("twilio", "alaw_8k")]


@pytest.mark.parametrize(("carrier", "fmt_id"), ANSWER_CASES)
def test_the_bridges_answer_document_is_one_its_carrier_follows(carrier: str, fmt_id: str) -> None:
    fmt = AudioFormat.from_id(fmt_id)
    url = URL.format(carrier=carrier)
    params = {"profile": "sales", "from": "+1555", "to": "+1666", "call_sid": "CA1"}
    answer = bridge_side(carrier, fmt).answer(url, params)
    setup = CALLERS[carrier].parse_answer(answer.body, answer.content_type)
    assert setup.carrier == carrier and setup.audio_format == fmt.id
    parts = urlsplit(setup.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == url
    if carrier == "exotel":
        assert dict(parse_qsl(parts.query)) == {"sample-rate": str(fmt.sample_rate), "profile": "sales"}
        assert setup.params == {"profile": "sales"}
    elif carrier == "plivo":
        assert setup.params == bridge_params("plivo", {k: v for k, v in params.items() if k != "call_sid"})
    else:
        assert setup.params == params


BAD_ANSWERS = [
    ("twilio", b"<Response><Say>hi</Say></Response>", "text/xml", "Connect"),
    ("twilio", b'<Response><Connect><Stream url="wss://h/m?x=1"/></Connect></Response>', "text/xml", "query"),
    ("twilio", b'<Response><Connect><Stream url="wss://h/m"/></Connect></Response>', "application/json", "TwiML"),
    ("telnyx", b'<Response><Connect><Stream url="wss://h/m"/></Connect></Response>', "text/xml", "rtp"),
    (
        "telnyx",
        b'<Response><Connect><Stream url="wss://h/m" bidirectionalMode="rtp" codec="PCMU" bidirectionalCodec="L16"/>'
        b"</Connect></Response>",
        "text/xml",
        "differ",
    ),
    ("plivo", b"<Response><Stream>wss://h/m</Stream></Response>", "text/xml", "bidirectional"),
    (
        "plivo",
        b'<Response><Stream bidirectional="true" keepCallAlive="true" extraHeaders="a=b-c">wss://h/m</Stream>'
        b"</Response>",
        "text/xml",
        "extraHeaders",
    ),
    ("vonage", b'[{"action": "talk", "text": "hi"}]', "application/json", "connect"),
    (
        "vonage",
        b'[{"action": "connect", "endpoint": [{"type": "websocket", "uri": "wss://h/m", '
        b'"content-type": "audio/pcmu"}]}]',
        "application/json",
        "content-type",
    ),
    (
        "signalwire",
        b'<Response><Connect><Stream url="wss://h/m" codec="OPUS"/></Connect></Response>',
        "text/xml",
        "codec",
    ),
    ("exotel", b'{"url": "https://h/m"}', "application/json", "WebSocket"),
    ("exotel", b'{"url": "wss://h/m?sample-rate=44100"}', "application/json", "sample-rate"),
    ("exotel", b'{"url": "wss://h/m?a=1&b=2&c=3&d=4"}', "application/json", "3 in 256"),
]


@pytest.mark.parametrize(("carrier", "body", "content_type", "match"), BAD_ANSWERS)
def test_an_answer_the_carrier_would_not_follow_is_an_error(
    carrier: str, body: bytes, content_type: str, match: str
) -> None:
    with pytest.raises(AnswerError, match=match):
        CALLERS[carrier].parse_answer(body, content_type)


# --- authentication ------------------------------------------------------------------------------------------


def _ed25519() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def verifying(carrier: str) -> tuple[Carrier, Credentials, Credentials]:
    """The bridge's dialect with verification on, and the carrier's right and wrong credentials."""
    secret, wrong = secrets.token_hex(16), secrets.token_hex(16)
    fmt = CALLERS[carrier].formats[0]
    if carrier == "telnyx":
        private, public = _ed25519()
        other, _ = _ed25519()
        env = {"TELNYX_PUBLIC_KEY": public, "BRIDGE_STREAM_SECRET": secret}
        return registry.build(carrier, table(carrier, fmt, verify=True), env), Credentials(private), Credentials(other)
    if carrier == "exotel":
        dialect = registry.build(carrier, table(carrier, fmt, verify=True, api_key="k"), {"EXOTEL_API_TOKEN": secret})
        return dialect, Credentials(secret, "k"), Credentials(wrong, "k")
    name = {
        "twilio": "TWILIO_AUTH_TOKEN",
        "plivo": "PLIVO_AUTH_TOKEN",
        "vonage": "VONAGE_SIGNATURE_SECRET",
        "signalwire": "SIGNALWIRE_SIGNING_KEY",
    }[carrier]
    return (
        registry.build(carrier, table(carrier, fmt, verify=True), {name: secret}),
        Credentials(secret),
        Credentials(wrong),
    )


def inbound(request: WebhookRequest, now: float) -> InboundRequest:
    """The request as the front door hands it to the dialect: the URL as the carrier requested it
    (over TLS), lower-case headers, the form fields of a POST."""
    parts = urlsplit(request.url)
    url = f"https://{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    form = parse_qsl(request.body.decode()) if request.method == "POST" else []
    headers = {k.lower(): v for k, v in request.headers.items()}
    return InboundRequest(request.method, url, headers, request.body, form, received_at=now)


@pytest.mark.parametrize("carrier", sorted(CALLERS))
def test_the_carriers_signed_webhook_is_verified_and_a_forged_or_unsigned_one_is_not(carrier: str) -> None:
    dialect, right, wrong = verifying(carrier)
    call = WebhookCall(call_sid="c-123", from_number="+15550001", to_number="+15550002")
    now = 1_700_000_000.0
    url = answer_url("http://bridge.example.com:8080", carrier)
    webhook = CALLERS[carrier].webhook
    good = inbound(webhook(call, url, right, now), now)
    assert dialect.verify_request(good)
    details = dialect.call_details(good)
    assert (details.call_sid, details.from_number, details.to_number) == ("c-123", "+15550001", "+15550002")
    assert not dialect.verify_request(inbound(webhook(call, url, wrong, now), now))
    assert not dialect.verify_request(inbound(webhook(call, url, None, now), now))


@pytest.mark.parametrize("carrier", sorted(CALLERS))
def test_the_carriers_authenticated_upgrade_is_verified_and_a_forged_or_missing_one_is_not(carrier: str) -> None:
    dialect, right, wrong = verifying(carrier)
    fmt = CALLERS[carrier].formats[0]
    url = URL.format(carrier=carrier)
    answer = dialect.answer(url, {"profile": "p", "call_sid": "c-1"})
    setup = CALLERS[carrier].parse_answer(answer.body, answer.content_type)

    def upgrade(credentials: Credentials | None, bearer: str | None) -> InboundRequest:
        caller = caller_side(carrier, fmt, credentials=credentials, bearer_token=bearer, signed_url=setup.url)
        headers = {k.lower(): v for k, v in caller.upgrade_headers().items()}
        # Arriving when the caller started (its clock stamps Vonage's JWT).
        return InboundRequest("GET", url, headers, received_at=1_700_000_000.0)

    if carrier == "telnyx":
        # A TeXML upgrade carries nothing: the start message proves the stream (its bridge_token).
        assert dialect.verify_upgrade(upgrade(None, None))
        good = caller_side(carrier, fmt, params=setup.params)
        assert isinstance(dialect.parse(good.opening()[-1]), Start)
        bare = caller_side(carrier, fmt, params={"profile": "p"})
        assert not isinstance(dialect.parse(bare.opening()[-1]), Start)
        return
    bearer = setup.bearer_token
    assert dialect.verify_upgrade(upgrade(right, bearer))
    forged_bearer = bearer[:-2] + ("AA" if not bearer.endswith("AA") else "BB") if bearer else None
    assert not dialect.verify_upgrade(upgrade(wrong, forged_bearer))
    assert not dialect.verify_upgrade(upgrade(None, None))


def test_twilios_signatures_are_the_official_validators() -> None:
    token = secrets.token_hex(16)
    validator = RequestValidator(token)
    call = WebhookCall(call_sid="CA" + "1" * 32)
    request = CALLERS["twilio"].webhook(call, "http://bridge.example.com/twilio/answer", Credentials(token), 0.0)
    form = dict(parse_qsl(request.body.decode()))
    assert validator.validate("https://bridge.example.com/twilio/answer", form, request.headers["X-Twilio-Signature"])
    caller = caller_side("twilio", ULAW_8K, credentials=Credentials(token), signed_url="wss://h.example/twilio/media")
    assert validator.validate("wss://h.example/twilio/media", {}, caller.upgrade_headers()["X-Twilio-Signature"])


def test_credentials_never_show_their_secret() -> None:
    assert "s3cret" not in repr(Credentials("s3cret", user="key"))


# --- options and URLs ----------------------------------------------------------------------------------------


def test_the_call_format_comes_from_the_options_and_must_be_the_carriers() -> None:
    def fmt(**kw: Any) -> str:
        return call_format(CallerOptions(url="ws://h/m", **kw)).id

    assert fmt() == "ulaw_8k"
    assert fmt(encoding="audio/x-alaw") == "alaw_8k"
    assert fmt(carrier="vonage") == "l16_16k"
    assert fmt(carrier="exotel", audio_format="l16_24k") == "l16_24k"
    with pytest.raises(ValueError, match="encoding"):
        fmt(carrier="plivo", encoding="audio/x-mulaw")
    with pytest.raises(ValueError, match="plivo streams"):
        fmt(carrier="plivo", audio_format="l16_24k")
    with pytest.raises(ValueError, match="carrier"):
        fmt(carrier="skype")
    with pytest.raises(ValueError, match="disagree"):
        fmt(encoding="audio/x-alaw", audio_format="ulaw_8k")


def test_urls_of_a_bare_base() -> None:
    assert stream_url("ws://127.0.0.1:8080", "plivo") == "ws://127.0.0.1:8080/plivo/media"
    assert stream_url("http://127.0.0.1:8080/", "vonage") == "ws://127.0.0.1:8080/vonage/media"
    assert stream_url("ws://127.0.0.1:8080/media?x=1", "twilio") == "ws://127.0.0.1:8080/media?x=1"
    assert stream_url("https://bridge.example.com", "exotel") == "wss://bridge.example.com/exotel/media"
    assert answer_url("ws://127.0.0.1:8080", "telnyx") == "http://127.0.0.1:8080/telnyx/answer"
    assert answer_url("https://bridge.example.com/base", "twilio") == "https://bridge.example.com/base/twilio/answer"


def test_l16_plays_in_whole_samples() -> None:
    buf = PlaybackBuffer(bytes_per_ms=32, sample_width=2)  # 16 kHz L16
    buf.enqueue(bytes(range(64)), 0.0)  # 1 ms
    buf.advance(0.00045)  # 7.2 samples' worth of time: 7 whole samples played
    assert buf.played_bytes == 14
    buf.clear(0.00045)
    assert buf.cleared_bytes == 50 and bytes(buf.played + buf.cleared) == bytes(range(64))
