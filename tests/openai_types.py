"""The openai package's GA Realtime event types as pydantic TypeAdapters.

The SDK's unions are ``Annotated[Union[...], PropertyInfo(discriminator="type")]``; re-annotating
the inner union with a real pydantic discriminator gives O(1) dispatch and short errors. The SDK
models allow extra keys, so validation catches missing or ill-typed fields and wrong literals,
not stray (for example beta) keys: tests check those separately.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import Field, TypeAdapter


def _adapter(sdk_union: Any) -> TypeAdapter[Any]:
    return TypeAdapter(Annotated[get_args(sdk_union)[0], Field(discriminator="type")])


ClientEvents: TypeAdapter[Any] = _adapter(RealtimeClientEvent)
ServerEvents: TypeAdapter[Any] = _adapter(RealtimeServerEvent)


def validate_client(event: dict[str, Any]) -> Any:
    """Validate one outbound event (as the dict we would ``json.dumps``); returns the SDK model.

    Raises ``pydantic.ValidationError`` when the event does not fit the GA client schema.
    """
    return ClientEvents.validate_python(event)


def validate_server(event: dict[str, Any]) -> Any:
    """Validate one inbound event against the GA server schema (to keep test fixtures honest)."""
    return ServerEvents.validate_python(event)
