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

from bridge.carrier import exotel, plivo, signalwire, telnyx, twilio, vonage
from bridge.carrier.base import Carrier
from bridge.carrier.common import CarrierSettings

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


CARRIERS: Mapping[str, CarrierKind[Any]] = {
    kind.name: kind
    for kind in (
        CarrierKind("twilio", twilio.TwilioSettings, twilio.from_settings),
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
