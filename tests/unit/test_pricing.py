from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.accounting.pricing import (
    DEFAULT_MODEL_PRICES,
    ModelPrice,
    PricingConfig,
    TranscriptionPrice,
    resolve_model,
)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("gpt-realtime", "gpt-realtime"),
        ("gpt-realtime-2025-08-28", "gpt-realtime"),
        ("gpt-realtime-mini", "gpt-realtime-mini"),
        ("gpt-realtime-mini-2025-10-06", "gpt-realtime-mini"),
        ("gpt-realtime-mini-2025-12-15", "gpt-realtime-mini"),
        ("gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview"),
        ("gpt-4o-realtime-preview-2025-06-03", "gpt-4o-realtime-preview"),
        # The launch snapshot has its own prices: the exact key wins over stripping the date.
        ("gpt-4o-realtime-preview-2024-10-01", "gpt-4o-realtime-preview-2024-10-01"),
        ("gpt-4o-mini-realtime-preview-2024-12-17", "gpt-4o-mini-realtime-preview"),
        ("gpt-realtime-2", "gpt-realtime-2"),
        (" GPT-Realtime-2025-08-28 ", "gpt-realtime"),
    ],
)
def test_resolve_model_known(name: str, family: str) -> None:
    assert resolve_model(name) == family


@pytest.mark.parametrize("name", ["", "gpt-4o", "gpt-realtime-3", "gpt-realtime-turbo", "whisper-1"])
def test_resolve_model_unknown(name: str) -> None:
    assert resolve_model(name) is None


def test_no_prefix_fallback_to_a_wrong_family() -> None:
    # With only gpt-realtime known, the (cheaper) mini must not be priced as gpt-realtime.
    assert resolve_model("gpt-realtime-mini", {"gpt-realtime"}) is None
    assert resolve_model("gpt-realtime-mini-2025-10-06", {"gpt-realtime"}) is None


def test_reference_prices() -> None:
    p = DEFAULT_MODEL_PRICES
    assert (p["gpt-realtime"].audio_input, p["gpt-realtime"].cached_audio_input,
            p["gpt-realtime"].audio_output) == (32.0, 0.40, 64.0)
    assert p["gpt-realtime-2"].text_output == 24.0
    assert p["gpt-realtime-1.5"] == p["gpt-realtime"]
    assert p["gpt-realtime-mini"].cached_text_input == 0.06
    assert p["gpt-4o-realtime-preview-2024-10-01"].audio_output == 200.0
    assert p["gpt-4o-mini-realtime-preview"].cached_text_input == 0.30


def test_config_merges_over_defaults_and_resolves() -> None:
    custom = ModelPrice(text_input=1, cached_text_input=0.1, audio_input=2, cached_audio_input=0.2,
                        text_output=3, audio_output=4)
    cfg = PricingConfig.model_validate({"models": {"my-model": custom.model_dump()},
                                        "carrier_per_minute_usd": 0.01})
    assert cfg.model_price("my-model-2026-01-02") == custom
    # Adding a model keeps the defaults.
    price = cfg.model_price("gpt-realtime-2025-08-28")
    assert price is not None and price.audio_input == 32.0
    assert cfg.model_price("nope") is None
    tp = cfg.transcription_price("gpt-4o-mini-transcribe")
    assert tp is not None and tp.audio_input == 3.0
    whisper = cfg.transcription_price("whisper-1")
    assert whisper is not None and whisper.per_minute == 0.006
    assert PricingConfig().carrier_per_minute_usd == 0.0085


@pytest.mark.parametrize(
    "data",
    [
        {"carrier_per_minute_usd": -1},
        {"carier_per_minute_usd": 0.01},  # misspelt key must fail, not fall back to the default
        {"models": {"m": {"text_input": 1, "cached_text_input": 1, "audio_input": 1,
                          "cached_audio_input": 1, "text_output": 1, "audio_output": -0.1}}},
        {"models": {"m": {"text_input": 1}}},
        {"models": {" ": DEFAULT_MODEL_PRICES["gpt-realtime"].model_dump()}},
        {"transcription": {"t": {}}},
        {"transcription": {"t": {"text_input": 1, "audio_input": 1}}},
        {"transcription": {"t": {"per_minute": 0.1, "price": 1}}},
    ],
)
def test_invalid_config(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PricingConfig.model_validate(data)


def test_transcription_price_schemes() -> None:
    both = TranscriptionPrice(text_input=1, audio_input=2, text_output=3, per_minute=0.5)
    assert both.has_token_prices
    assert not TranscriptionPrice(per_minute=0.5).has_token_prices
