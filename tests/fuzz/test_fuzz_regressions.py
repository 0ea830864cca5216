"""Inputs the fuzzing found that raised (or misbehaved) before their fix, kept as plain tests.

Each one names the input and what it did; the property tests in this directory find such inputs
by chance, these make sure they stay fixed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bridge.accounting.meter import UsageMeter
from bridge.accounting.pricing import PricingConfig
from bridge.call.core import CallCore, EndCall, SendModel
from bridge.carrier import registry
from bridge.carrier.base import Answer, Carrier, CarrierError, InboundRequest, Media, Start
from bridge.carrier.twilio_signature import signed_url_candidates
from bridge.config import ConfigError, Settings, load_settings
from bridge.realtime import events as rt
from bridge.vocabulary import CallState, EndReason
from tests.fuzz.test_fuzz_carriers import SECRETS

# A Host header nobody checked makes the URL the dialects see: "[" unbalanced (urlsplit: "Invalid
# IPv6 URL") or a host that NFKC normalisation changes. Both raised ValueError out of
# call_details / verify_request / verify_upgrade.
UNSPLITTABLE = ["https://[/twilio/answer", "wss://[/media", "https://a\uff03b/plivo/answer", "https://[::1/x?a=b"]


def _carrier(name: str, verify: bool) -> Carrier:
    table = {"verify": verify, **({"api_key": "key"} if name == "exotel" else {})}
    return registry.build(name, table, SECRETS)


@pytest.mark.parametrize("url", UNSPLITTABLE)
@pytest.mark.parametrize("name", list(registry.CARRIERS))
def test_a_url_urlsplit_refuses_is_answered_not_raised(name: str, url: str) -> None:
    request = InboundRequest(
        "POST",
        url,
        {"x-twilio-signature": "x", "x-plivo-signature-v3-nonce": "n", "x-plivo-signature-v3": "s"},
        b"",
        [("From", "+1555")],
    )
    for verify in (False, True):
        carrier = _carrier(name, verify)
        assert carrier.call_details(request).from_number in ("+1555", None)
        assert carrier.verify_request(request) is (not verify)
        assert carrier.verify_upgrade(request) is (not verify or name == "telnyx")


def test_twilio_signs_only_the_url_as_given_when_it_cannot_be_split() -> None:
    assert signed_url_candidates("wss://[/media") == ["wss://[/media"]


def test_exotel_answers_400_when_no_stream_url_can_be_built_from_the_host() -> None:
    answer = _carrier("exotel", False).answer("wss://[/exotel/media", {"profile": "x"})
    assert isinstance(answer, Answer) and answer.status == 400


def test_a_signalwire_signature_header_with_non_ascii_characters_is_refused_not_raised() -> None:
    # hmac.compare_digest raised TypeError for a str with non-ASCII characters ("\x80" from latin-1).
    request = InboundRequest("POST", "https://h/signalwire/answer", {"x-signalwire-signature": "\x80\xe9"}, b"{}")
    assert _carrier("signalwire", True).verify_request(request) is False


@pytest.mark.parametrize("rate", ["\u00b2", "\u2460", "16000\u00b2"])
def test_a_vonage_rate_in_superscript_digits_is_an_unusable_format(rate: str) -> None:
    # "²".isdigit() is True but int("²") raises ValueError: parse raised out of the reader.
    event = _carrier("vonage", False).parse(
        json.dumps({"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}"})
    )
    assert isinstance(event, CarrierError) and event.kind == "invalid_format" and event.fatal


@pytest.mark.parametrize("track", [[], {}, ["inbound"], 1.5])
def test_a_telnyx_media_track_that_is_not_text_is_refused_not_raised(track: object) -> None:
    # ``track not in frozenset(...)`` raised TypeError (unhashable) for a list or an object.
    message = json.dumps({"event": "media", "media": {"payload": "AAAA", "track": track}})
    event = _carrier("telnyx", False).parse(message)
    assert isinstance(event, CarrierError) and event.kind == "unexpected_track"


# --- configuration -------------------------------------------------------------------------------


def test_a_configuration_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_bytes(b'[server]\nhost = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path)


@pytest.mark.parametrize(
    "line", ["_env_prefix = 5", '_env_file = "/etc/passwd"', "_cli_parse_args = true", '_secrets_dir = "/"']
)
def test_top_level_keys_pydantic_settings_would_take_as_options_are_unknown_keys(tmp_path: Path, line: str) -> None:
    # They used to reach BaseSettings.__init__ as its own options: TypeError for some values, and
    # for others a different env prefix, a dotenv file or the process's argv read as configuration.
    path = tmp_path / "bridge.toml"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key") as info:
        load_settings(path)
    assert line.split(" ")[0] in str(info.value)


@pytest.mark.parametrize("name", ["BRIDGE_SERVER", "BRIDGE_SERVER__OVERFLOW", "BRIDGE_ROUTES"])
def test_an_environment_override_that_is_not_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # pydantic-settings raised its SettingsError, which nothing caught: serve printed a traceback.
    monkeypatch.setenv(name, "{not json")
    with pytest.raises(ConfigError, match=name.split("__")[0]):
        load_settings(None)


# --- the call core ---------------------------------------------------------------------------------


def test_an_end_decided_while_the_session_opens_stays_the_end() -> None:
    # An operator (or a drain, a hang-up) ended the call while its model session was opening; the
    # session.updated that arrived next switched the closing call back to active and sent the
    # greeting's response.create on a session being closed.
    core = CallCore(Settings(realtime={"greeting": "Hello"}), "c1", 0.0, _carrier("twilio", False))
    core.on_carrier(Start("MZ1", "CA1", "AC1", "audio/x-mulaw", 8000, 1), 0.0)
    core.on_model_connected(0.1, session=1)
    frames = core.on_carrier(Media(base64.b64encode(b"\xff" * 160).decode()), 0.15)
    assert frames == []  # buffered until the session is ready
    ended = core.request_end(EndReason.OPERATOR, "by an operator")
    assert [a.reason for a in ended if isinstance(a, EndCall)] == [EndReason.OPERATOR]
    late = core.on_model(rt.SessionUpdated({}), 0.3, session=1)
    assert core.state is CallState.CLOSING
    assert not [a for a in late if isinstance(a, SendModel)]  # no buffered audio, no greeting
    core.finish()
    assert core.state is CallState.ENDED and core.end_reason is EndReason.OPERATOR


# --- usage the model reports ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transcription", "response"),
    [
        ({"type": "duration", "seconds": 1e308}, None),  # ×1000 → inf → round(): OverflowError
        ({"type": "duration", "seconds": 2**1100}, None),  # math.isfinite(huge int): OverflowError
        (None, {"input_tokens": 10**400, "output_tokens": 5}),  # pricing: int too large for a float
    ],
)
def test_absurd_usage_is_malformed_not_a_crash(transcription: object, response: object) -> None:
    # Found by bench/fuzz_bench.py: a hostile model's transcription usage crashed the call
    # (call_crashed, OverflowError in add_transcription_usage).
    meter = UsageMeter("gpt-realtime", PricingConfig(), "whisper-1")
    meter.add_transcription_usage(transcription)  # type: ignore[arg-type]
    meter.add_response_usage(response)  # type: ignore[arg-type]
    assert meter.malformed_usage == 1
    cost = meter.cost(60.0)
    assert cost.total_usd is not None and cost.total_usd < 1.0


# --- closing the caller's socket ----------------------------------------------------------------


def test_a_lone_surrogate_the_caller_sent_still_makes_a_close_reason() -> None:
    # Found by bench/fuzz_bench.py: a Telnyx start whose encoding was the JSON string "\ud800"
    # ended the call (format mismatch) with a detail quoting it; encoding the close reason raised
    # UnicodeEncodeError, so the caller's socket was closed without a close frame.
    carrier = _carrier("telnyx", False)
    start = json.dumps({"event": "start", "stream_id": "s1", "start": {"call_control_id": "c1",
                        "media_format": {"encoding": "\ud800", "sample_rate": 8000, "channels": 1}}})  # fmt: skip
    core = CallCore(Settings(), "c1", 0.0, carrier)
    [end] = [a for a in core.on_carrier(carrier.parse(start), 0.0) if isinstance(a, EndCall)]
    assert end.reason is EndReason.PROTOCOL_ERROR and "\ud800" in end.detail
    reason = end.close_reason.encode("utf-8")  # what the close frame carries
    assert reason.startswith(b"protocol_error: ") and len(reason) <= 123


def test_a_call_too_short_for_a_rate_has_no_per_minute_cost() -> None:
    # Found by test_fuzz_meter: 2.2e-311 s made total / (duration / 60) overflow to inf.
    from bridge.accounting.meter import UsageMeter
    from bridge.accounting.pricing import PricingConfig

    cost = UsageMeter("gpt-realtime", PricingConfig(), None).cost(2.225073858507e-311)
    assert cost.per_minute_usd is None
