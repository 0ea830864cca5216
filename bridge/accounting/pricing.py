"""Price tables for Realtime models, transcription models and the carrier.

These models are part of the TOML configuration (section ``[pricing]``), so they forbid unknown
keys: a misspelt price must be an error at start-up, not a silent default that under-bills every
call. All prices are USD.

Realtime and token-billed transcription prices are USD per 1M tokens, as OpenAI publishes them.
Sources: OpenAI's model pages for the Realtime models (e.g.
https://platform.openai.com/docs/models/gpt-realtime, .../gpt-realtime-mini,
.../gpt-realtime-2, .../gpt-4o-realtime-preview) and https://openai.com/api/pricing/ for the
transcription models, as published in 2026.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, field_validator, model_validator

__all__ = [
    "DEFAULT_MODEL_PRICES",
    "DEFAULT_TRANSCRIPTION_PRICES",
    "ModelPrice",
    "PricingConfig",
    "TranscriptionPrice",
    "resolve_model",
]


class ModelPrice(BaseModel):
    """USD per 1M tokens for one Realtime model family.

    Cached input is a subset of input (see the meter), so the cached prices replace the uncached
    ones for those tokens; they are not added on top.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_input: NonNegativeFloat
    cached_text_input: NonNegativeFloat
    audio_input: NonNegativeFloat
    cached_audio_input: NonNegativeFloat
    text_output: NonNegativeFloat
    audio_output: NonNegativeFloat
    # A phone bridge sends no images, but a session could carry them (tools, a gateway). When
    # image tokens show up and this is None the cost is reported unknown rather than silently
    # leaving them out.
    image_input: NonNegativeFloat | None = None


class TranscriptionPrice(BaseModel):
    """Price of the input-audio transcription model.

    Token-billed models report ``usage`` as ``{type: "tokens", ...}`` and need the three token
    prices; duration-billed ones (whisper) report ``{type: "duration", seconds}`` and need
    ``per_minute``. A model may carry both; it must carry at least one complete scheme.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_input: NonNegativeFloat | None = None
    audio_input: NonNegativeFloat | None = None
    text_output: NonNegativeFloat | None = None
    per_minute: NonNegativeFloat | None = None

    @property
    def has_token_prices(self) -> bool:
        return None not in (self.text_input, self.audio_input, self.text_output)

    @model_validator(mode="after")
    def _one_scheme(self) -> TranscriptionPrice:
        token_fields = (self.text_input, self.audio_input, self.text_output)
        partial_tokens = any(v is not None for v in token_fields) and not self.has_token_prices
        if partial_tokens:
            raise ValueError("token prices need all of text_input, audio_input and text_output")
        if not self.has_token_prices and self.per_minute is None:
            raise ValueError("set either the token prices (text_input, audio_input, text_output) "
                             "or per_minute")
        return self


def _realtime(text_in: float, text_cached: float, text_out: float, audio_in: float,
              audio_cached: float, audio_out: float, image_in: float | None = None) -> ModelPrice:
    # Argument order follows the columns of OpenAI's pricing table (text in, cached, out; audio in,
    # cached, out; image in) so each row below can be checked against it by eye.
    return ModelPrice(text_input=text_in, cached_text_input=text_cached, text_output=text_out,
                      audio_input=audio_in, cached_audio_input=audio_cached, audio_output=audio_out,
                      image_input=image_in)


# USD per 1M tokens (https://openai.com/api/pricing/). Image input ($5.00/1M) is published for the
# gpt-realtime* family only.
DEFAULT_MODEL_PRICES: dict[str, ModelPrice] = {
    "gpt-realtime": _realtime(4.00, 0.40, 16.00, 32.00, 0.40, 64.00, 5.00),
    "gpt-realtime-1.5": _realtime(4.00, 0.40, 16.00, 32.00, 0.40, 64.00, 5.00),
    # gpt-realtime-2 / 2.1: text out 24.00, otherwise as gpt-realtime.
    "gpt-realtime-2": _realtime(4.00, 0.40, 24.00, 32.00, 0.40, 64.00, 5.00),
    "gpt-realtime-2.1": _realtime(4.00, 0.40, 24.00, 32.00, 0.40, 64.00, 5.00),
    "gpt-realtime-mini": _realtime(0.60, 0.06, 2.40, 10.00, 0.30, 20.00, 5.00),
    "gpt-realtime-2.1-mini": _realtime(0.60, 0.06, 2.40, 10.00, 0.30, 20.00, 5.00),
    "gpt-4o-realtime-preview": _realtime(5.00, 2.50, 20.00, 40.00, 2.50, 80.00),
    # The launch snapshot kept its own, much higher audio prices; it is matched by its exact
    # name before the date is stripped (see resolve_model).
    "gpt-4o-realtime-preview-2024-10-01": _realtime(5.00, 2.50, 20.00, 100.00, 20.00, 200.00),
    "gpt-4o-mini-realtime-preview": _realtime(0.60, 0.30, 2.40, 10.00, 0.30, 20.00),
}

# https://openai.com/api/pricing/ as of 2026 (gpt-realtime-whisper:
# https://platform.openai.com/docs/models/gpt-realtime-whisper).
DEFAULT_TRANSCRIPTION_PRICES: dict[str, TranscriptionPrice] = {
    "gpt-4o-transcribe": TranscriptionPrice(text_input=2.50, audio_input=6.00, text_output=10.00),
    "gpt-4o-mini-transcribe": TranscriptionPrice(text_input=1.25, audio_input=3.00, text_output=5.00),
    "whisper-1": TranscriptionPrice(per_minute=0.006),
    "gpt-realtime-whisper": TranscriptionPrice(per_minute=0.017),
}

# Twilio's US inbound rate for a local number, USD per minute (twilio.com/en-us/voice/pricing/us).
# Twilio bills each call per started minute; the meter rounds up accordingly.
DEFAULT_CARRIER_PER_MINUTE_USD = 0.0085

_T = TypeVar("_T")
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def resolve_model(name: str, known: Collection[str] | None = None) -> str | None:
    """Map a model name as the API reports it to a key of the price table, or None.

    Order: the exact name (so a snapshot with its own prices, like
    ``gpt-4o-realtime-preview-2024-10-01``, wins), then the name without a trailing
    ``-YYYY-MM-DD`` snapshot date. There is deliberately no prefix matching: it would price
    ``gpt-realtime-mini`` or ``gpt-realtime-2`` as ``gpt-realtime`` whenever the table lacks
    them, a wrong number that looks right. An unknown model gives None, so the cost is reported
    unknown instead of zero. Comparison ignores case and surrounding blanks.

    ``known`` defaults to the keys of the default Realtime price table.
    """
    keys = DEFAULT_MODEL_PRICES.keys() if known is None else known
    by_lower = {k.strip().lower(): k for k in keys}
    wanted = name.strip().lower()
    if not wanted:
        return None
    if wanted in by_lower:
        return by_lower[wanted]
    family = _DATE_SUFFIX.sub("", wanted)
    if family != wanted and family in by_lower:
        return by_lower[family]
    return None


def _checked_keys(value: dict[str, _T]) -> dict[str, _T]:
    for key in value:
        if not key.strip():
            raise ValueError("a model name must not be empty")
    return value


class PricingConfig(BaseModel):
    """The ``[pricing]`` configuration section.

    Entries given in ``models`` / ``transcription`` are merged over the defaults (a key replaces
    the default entry of the same name), so adding one new model in the TOML file does not
    silently drop the prices of all the others.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_MODEL_PRICES))
    transcription: dict[str, TranscriptionPrice] = Field(
        default_factory=lambda: dict(DEFAULT_TRANSCRIPTION_PRICES))
    carrier_per_minute_usd: NonNegativeFloat = DEFAULT_CARRIER_PER_MINUTE_USD

    @field_validator("models", mode="after")
    @classmethod
    def _merge_models(cls, value: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        return {**DEFAULT_MODEL_PRICES, **_checked_keys(value)}

    @field_validator("transcription", mode="after")
    @classmethod
    def _merge_transcription(cls, value: dict[str, TranscriptionPrice]) -> dict[str, TranscriptionPrice]:
        return {**DEFAULT_TRANSCRIPTION_PRICES, **_checked_keys(value)}

    def model_price(self, name: str) -> ModelPrice | None:
        key = resolve_model(name, self.models.keys())
        return None if key is None else self.models[key]

    def transcription_price(self, name: str) -> TranscriptionPrice | None:
        key = resolve_model(name, self.transcription.keys())
        return None if key is None else self.transcription[key]
