"""The carrier registry: six carriers by route name, each built from its [carriers.NAME] table."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from bridge.carrier.base import Answer, CallIds, InboundRequest
from bridge.carrier.common import CarrierSettings
from bridge.carrier.registry import CARRIERS, TwilioSettings, build
from bridge.carrier.registry import twilio_from_settings as from_settings
from bridge.carrier.twilio import Twilio
from bridge.carrier.twilio_signature import compute_signature

NAMES = ("twilio", "telnyx", "plivo", "vonage", "signalwire", "exotel")


def test_the_six_carriers() -> None:
    assert tuple(CARRIERS) == NAMES
    for name, kind in CARRIERS.items():
        assert kind.name == name
        assert issubclass(kind.settings, CarrierSettings)


@pytest.mark.parametrize("name", NAMES)
def test_each_builds_unverified_from_its_table_and_answers(name: str) -> None:
    carrier = build(name, {"verify": False}, {})
    assert carrier.name == name
    assert not carrier.verifies()
    assert isinstance(carrier.marks_echoed_on_clear, bool)
    answer = carrier.answer(f"wss://bridge.example/{name}/media", {"profile": "p", "from": "+1", "to": "+2"})
    assert isinstance(answer, Answer) and answer.status == 200 and answer.body
    request = InboundRequest("POST", f"https://bridge.example/{name}/answer", {})
    assert carrier.verify_request(request) and carrier.verify_upgrade(request)


@pytest.mark.parametrize("name", NAMES)
def test_each_verifies_by_default_and_refuses_to_start_without_its_secrets(name: str) -> None:
    settings = CARRIERS[name].settings()
    assert settings.verify
    assert settings.secret_names()  # what the loader must read (and the log redactor hide)
    with pytest.raises(ValueError):
        build(name, None, {})


@pytest.mark.parametrize("name", NAMES)
def test_unknown_keys_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        build(name, {"verify": False, "no_such_key": 1}, {})


def test_unknown_carrier() -> None:
    with pytest.raises(ValueError, match="twilio, telnyx"):
        build("skype", {}, {})


def test_a_settings_model_is_taken_as_is() -> None:
    settings = TwilioSettings(verify=False, account_sid="AC1")
    carrier = build("twilio", settings, {})
    assert isinstance(carrier, Twilio)


# --- Twilio's entry ---------------------------------------------------------------------------


def test_twilio_from_settings_checks_signatures_with_the_named_secret() -> None:
    carrier = from_settings(TwilioSettings(auth_token_secret="MY_TOKEN"), {"MY_TOKEN": "tok"})
    url = "https://bridge.example/twilio/answer"
    form = {"CallSid": "CA1", "From": "+1"}
    for token, accepted in (("tok", True), ("other", False)):
        headers = {"x-twilio-signature": compute_signature(token, url, form)}
        assert carrier.verify_request(InboundRequest("POST", url, headers, form=tuple(form.items()))) is accepted


def test_twilio_api_key_is_used_for_transfers_when_both_parts_are_there() -> None:
    secrets = {"TWILIO_AUTH_TOKEN": "tok", "TWILIO_API_KEY_SECRET": "ks"}
    carrier = from_settings(TwilioSettings(api_key_sid="SK1"), secrets)
    request = carrier.transfer(CallIds("CA1", "MZ1", "AC1"), "+15551230000")
    assert dict(request.headers)["Authorization"] == "Basic " + base64.b64encode(b"SK1:ks").decode()
    assert not from_settings(TwilioSettings(verify=False), {}).can_transfer
