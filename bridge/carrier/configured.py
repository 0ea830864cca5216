"""The carriers a service answers, built from its configuration and secrets. Pure.

The front door asks for a carrier by its route name (``/{name}/answer``, ``/{name}/media``); the
configuration says which carriers are answered and how (:func:`bridge.config.enabled_carriers`),
the registry knows how to build each (:mod:`bridge.carrier.registry`).
"""

from __future__ import annotations

from bridge.carrier import registry
from bridge.carrier.base import Carrier
from bridge.config import Secrets, Settings, enabled_carriers


def build_carriers(settings: Settings, secrets: Secrets) -> dict[str, Carrier]:
    """Every answered carrier, ready; ``ValueError`` naming the carrier when one cannot be built
    (a secret its verification needs is missing)."""
    values = secrets.carrier_values()
    carriers: dict[str, Carrier] = {}
    for name, table in enabled_carriers(settings).items():
        try:
            carriers[name] = registry.build(name, table, values)
        except ValueError as exc:
            raise ValueError(f"carriers.{name}: {exc}") from None
    return carriers
