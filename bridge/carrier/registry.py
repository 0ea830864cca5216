"""Every carrier the bridge speaks, by route name: its settings model and its factory.

Adding a carrier is one dialect module (a class implementing
:class:`~bridge.carrier.base.Carrier`, a settings model derived from
:class:`~bridge.carrier.common.CarrierSettings` and a ``from_settings(settings, secrets)``
factory) and one line in :data:`CARRIERS`. The configuration reads ``[carriers.NAME]`` with
``CARRIERS[NAME].settings``; the front door serves ``/{NAME}/answer`` and ``/{NAME}/media``
with the carrier :func:`build` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import field_validator

from bridge.carrier import exotel, plivo, signalwire, telnyx, vonage
from bridge.carrier.base import Carrier
from bridge.carrier.common import CarrierSettings, require, secret
from bridge.carrier.twilio import Twilio

S = TypeVar("S", bound=CarrierSettings)


@dataclass(frozen=True, slots=True)
class CarrierKind(Generic[S]):
    """One carrier: the model of its ``[carriers.NAME]`` table and how to build it."""

    name: str
    settings: type[S]
    factory: Callable[[S, Mapping[str, str]], Carrier]

    def build(self, settings: S | Mapping[str, Any] | None, secrets: Mapping[str, str]) -> Carrier:
        """The configured carrier; ``ValueError`` (pydantic's ``ValidationError`` is one) when the
        settings are invalid or a secret that verification needs is missing."""
        if settings is None:
            settings = self.settings()
        elif not isinstance(settings, self.settings):
            settings = self.settings.model_validate(settings)
        return self.factory(settings, secrets)


class TwilioSettings(CarrierSettings):
    """``[carriers.twilio]`` (the older ``twilio.*`` keys map onto these). Twilio's dialect predates
    the registry, so its table and factory live here rather than in ``twilio.py``."""

    auth_token_secret: str = "TWILIO_AUTH_TOKEN"
    """Name of the secret holding the account's auth token: signatures, and transfers without an API key."""
    api_base_url: str = "https://api.twilio.com"
    account_sid: str | None = None
    """Default: the account of the call's start message."""
    api_key_sid: str | None = None
    """An API key for REST calls instead of the auth token; its secret is named by ``api_key_secret``."""
    api_key_secret: str = "TWILIO_API_KEY_SECRET"

    @field_validator("api_base_url")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL such as https://api.twilio.com")
        return v.rstrip("/")

    def secret_names(self) -> tuple[str, ...]:
        return (self.auth_token_secret, self.api_key_secret)


def twilio_from_settings(settings: TwilioSettings, secrets: Mapping[str, str]) -> Twilio:
    token = secret(secrets, settings.auth_token_secret)
    if settings.verify:
        require(token, "carriers.twilio.verify: the Twilio auth token", settings.auth_token_secret)
    key_secret = secret(secrets, settings.api_key_secret)
    api_key = (settings.api_key_sid, key_secret) if settings.api_key_sid and key_secret else None
    return Twilio(
        token,
        verify=settings.verify,
        api_base_url=settings.api_base_url,
        account_sid=settings.account_sid,
        api_key=api_key,
    )


CARRIERS: Mapping[str, CarrierKind[Any]] = {
    kind.name: kind
    for kind in (
        CarrierKind("twilio", TwilioSettings, twilio_from_settings),
        CarrierKind("telnyx", telnyx.TelnyxSettings, telnyx.from_settings),
        CarrierKind("plivo", plivo.PlivoSettings, plivo.from_settings),
        CarrierKind("vonage", vonage.VonageSettings, vonage.from_settings),
        CarrierKind("signalwire", signalwire.SignalWireSettings, signalwire.from_settings),
        CarrierKind("exotel", exotel.ExotelSettings, exotel.from_settings),
    )
}


def build(name: str, settings: CarrierSettings | Mapping[str, Any] | None, secrets: Mapping[str, str]) -> Carrier:
    """The carrier ``name`` configured with ``settings`` (a model, its table, or None for defaults)."""
    kind = CARRIERS.get(name)
    if kind is None:
        raise ValueError(f"unknown carrier {name!r}: expected one of {', '.join(CARRIERS)}")
    return kind.build(settings, secrets)
