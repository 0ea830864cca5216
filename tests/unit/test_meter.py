from __future__ import annotations

from typing import Any

import pytest

from bridge.accounting.meter import UsageMeter
from bridge.accounting.pricing import PricingConfig

# A response.done usage block as the API reports it
# (https://platform.openai.com/docs/api-reference/realtime-server-events/response/done).
EXAMPLE_USAGE: dict[str, Any] = {
    "total_tokens": 821, "input_tokens": 789, "output_tokens": 32,
    "input_token_details": {"text_tokens": 313, "audio_tokens": 476, "image_tokens": 0,
                            "cached_tokens": 640,
                            "cached_tokens_details": {"text_tokens": 256, "audio_tokens": 384,
                                                      "image_tokens": 0}},
    "output_token_details": {"text_tokens": 9, "audio_tokens": 23},
}

# gpt-realtime, USD per 1M tokens: text in 4.00, cached text 0.40, audio in 32.00, cached audio
# 0.40, text out 16.00, audio out 64.00. Cached tokens are a subset of input:
#   uncached text   313 - 256 =  57 × 4.00  =  228.0
#   cached text           256 × 0.40        =  102.4
#   uncached audio  476 - 384 =  92 × 32.00 = 2944.0
#   cached audio          384 × 0.40        =  153.6
#   text out                9 × 16.00       =  144.0
#   audio out              23 × 64.00       = 1472.0
#                                      sum  = 5044.0 per 1M → $0.005044
EXAMPLE_COST_GPT_REALTIME = 0.005044

PRICING = PricingConfig(carrier_per_minute_usd=0.0085)


def test_reference_example_on_gpt_realtime() -> None:
    m = UsageMeter("gpt-realtime", PRICING)
    m.add_response_usage(EXAMPLE_USAGE)
    assert m.responses == 1
    assert m.malformed_usage == 0
    t = m.tokens()
    assert (t["text_in"], t["cached_text_in"], t["audio_in"], t["cached_audio_in"]) == (57, 256, 92, 384)
    assert (t["text_out"], t["audio_out"]) == (9, 23)
    c = m.cost(60.0)
    assert c.known and c.warnings == []
    assert c.model_usd == pytest.approx(EXAMPLE_COST_GPT_REALTIME, abs=1e-9)
    assert c.model_parts["audio_in"] == pytest.approx(0.002944, abs=1e-12)
    assert c.transcription_usd == 0.0
    assert c.carrier_usd == pytest.approx(0.0085, abs=1e-12)
    assert c.total_usd == pytest.approx(0.005044 + 0.0085, abs=1e-9)
    assert c.per_minute_usd == pytest.approx(0.013544, abs=1e-9)


def test_dated_name_and_accumulation_across_responses() -> None:
    # gpt-realtime-mini: text 0.60, cached text 0.06, audio 10.00, cached audio 0.30,
    # text out 2.40, audio out 20.00. Two responses of the example above, doubled counts:
    #   57×2×0.60 + 256×2×0.06 + 92×2×10 + 384×2×0.30 + 9×2×2.40 + 23×2×20
    #   = 68.4 + 30.72 + 1840 + 230.4 + 43.2 + 920 = 3132.72 per 1M → $0.00313272
    m = UsageMeter("gpt-realtime-mini-2025-10-06", PRICING)
    m.add_response_usage(EXAMPLE_USAGE)
    m.add_response_usage(EXAMPLE_USAGE)
    c = m.cost(120.0)
    assert m.responses == 2
    assert c.known
    assert c.model_usd == pytest.approx(0.00313272, abs=1e-9)
    assert c.carrier_usd == pytest.approx(2 * 0.0085, abs=1e-12)


def test_launch_snapshot_uses_its_own_prices() -> None:
    # 100 audio tokens in at $100/1M and 100 out at $200/1M = $0.03 (the family would be $0.012).
    m = UsageMeter("gpt-4o-realtime-preview-2024-10-01", PRICING)
    m.add_response_usage({"input_tokens": 100, "output_tokens": 100,
                          "input_token_details": {"audio_tokens": 100, "text_tokens": 0},
                          "output_token_details": {"audio_tokens": 100}})
    assert m.cost(0).model_usd == pytest.approx(0.03, abs=1e-12)


def test_unknown_model_is_unknown_not_zero() -> None:
    m = UsageMeter("gpt-9-voice", PRICING)
    m.add_response_usage(EXAMPLE_USAGE)
    c = m.cost(90.0)
    assert not c.known
    assert c.model_usd is None and c.total_usd is None and c.per_minute_usd is None
    assert c.carrier_usd == pytest.approx(2 * 0.0085)  # the carrier part is still known
    assert any("gpt-9-voice" in w for w in c.warnings)
    assert m.tokens()["audio_in"] == 92  # usage is still counted for later repricing


@pytest.mark.parametrize(
    ("duration", "minutes"),
    [(0.0, 0), (-5.0, 0), (0.4, 1), (59.9, 1), (60.0, 1), (60.01, 2), (61.0, 2), (3600.0, 60),
     (float("nan"), 0)],
)
def test_carrier_bills_per_started_minute(duration: float, minutes: int) -> None:
    c = UsageMeter("gpt-realtime", PRICING).cost(duration)
    assert c.carrier_minutes == minutes
    assert c.carrier_usd == pytest.approx(minutes * 0.0085, abs=1e-12)


def test_per_minute_uses_real_duration_and_none_at_zero() -> None:
    m = UsageMeter("gpt-realtime", PRICING)
    assert m.cost(0.0).per_minute_usd is None
    # 90 s: carrier 2 started minutes = 0.017; per minute divides by 1.5 real minutes.
    assert m.cost(90.0).per_minute_usd == pytest.approx(0.017 / 1.5, abs=1e-12)


@pytest.mark.parametrize(
    "usage",
    [
        "not a mapping",
        ["a", "list"],
        {"input_tokens": "12", "input_token_details": {"audio_tokens": "many"}},
        {"input_token_details": {"audio_tokens": -5}},
        {"input_token_details": {"audio_tokens": True}},
        {"input_token_details": {"audio_tokens": 1.5}},
        {"input_token_details": "x", "output_token_details": 7},
        {"input_token_details": {"audio_tokens": 10, "cached_tokens_details": {"audio_tokens": 20}}},
        {"output_token_details": {"audio_tokens": None, "text_tokens": [1]}},
    ],
)
def test_malformed_usage_does_not_raise(usage: Any) -> None:
    m = UsageMeter("gpt-realtime", PRICING)
    m.add_response_usage(usage)
    assert m.malformed_usage == 1
    assert all(v >= 0 for v in m.tokens().values())
    c = m.cost(10.0)
    assert c.known  # bad counts are zeros, not an unknown price
    assert any("malformed" in w for w in c.warnings)


def test_cached_above_total_is_clamped() -> None:
    m = UsageMeter("gpt-realtime", PRICING)
    m.add_response_usage({"input_token_details": {"audio_tokens": 10,
                                                  "cached_tokens_details": {"audio_tokens": 20}}})
    t = m.tokens()
    assert (t["audio_in"], t["cached_audio_in"]) == (0, 10)


def test_missing_fields_are_zero_and_not_malformed() -> None:
    m = UsageMeter("gpt-realtime", PRICING)
    m.add_response_usage(None)  # a cancelled response may carry no usage
    m.add_response_usage({})
    m.add_response_usage({"input_tokens": 0, "input_token_details": None, "output_token_details": None})
    assert m.responses == 3
    assert m.malformed_usage == 0
    assert sum(m.tokens().values()) == 0


def test_total_without_split_is_priced_as_audio() -> None:
    # input 100 with no details → 100 uncached audio at $32; output 10 → audio out at $64.
    m = UsageMeter("gpt-realtime", PRICING)
    m.add_response_usage({"input_tokens": 100, "output_tokens": 10})
    assert m.malformed_usage == 1
    assert m.cost(0).model_usd == pytest.approx((100 * 32 + 10 * 64) / 1e6, abs=1e-12)


def test_beta_shape_cached_without_split_goes_to_text_first() -> None:
    m = UsageMeter("gpt-realtime", PRICING)
    m.add_response_usage({"input_token_details": {"text_tokens": 300, "audio_tokens": 500,
                                                  "cached_tokens": 400}})
    t = m.tokens()
    assert (t["text_in"], t["cached_text_in"], t["audio_in"], t["cached_audio_in"]) == (0, 300, 400, 100)
    assert m.malformed_usage == 0
    assert any("without a text/audio split" in w for w in m.cost(0).warnings)


def test_image_tokens_without_price_make_cost_unknown() -> None:
    usage = {"input_token_details": {"image_tokens": 1000}}
    priced = UsageMeter("gpt-realtime", PRICING)
    priced.add_response_usage(usage)
    assert priced.cost(0).model_usd == pytest.approx(1000 * 5.0 / 1e6)
    unpriced = UsageMeter("gpt-4o-realtime-preview", PRICING)
    unpriced.add_response_usage(usage)
    c = unpriced.cost(0)
    assert not c.known and c.model_usd is None


def test_transcription_tokens() -> None:
    # gpt-4o-mini-transcribe: text in 1.25, audio in 3.00, text out 5.00 per 1M.
    #   20×1.25 + 600×3.00 + 40×5.00 = 25 + 1800 + 200 = 2025 per 1M → $0.002025
    m = UsageMeter("gpt-realtime", PRICING, transcription_model="gpt-4o-mini-transcribe")
    m.add_transcription_usage({"type": "tokens", "input_tokens": 620, "output_tokens": 40,
                               "total_tokens": 660,
                               "input_token_details": {"text_tokens": 20, "audio_tokens": 600}})
    c = m.cost(60.0)
    assert c.known
    assert c.transcription_usd == pytest.approx(0.002025, abs=1e-12)
    assert c.total_usd == pytest.approx(0.002025 + 0.0085, abs=1e-12)
    assert m.tokens()["transcription_audio_in"] == 600


def test_transcription_duration() -> None:
    # whisper-1 at $0.006/min: 45 s = $0.0045.
    m = UsageMeter("gpt-realtime", PRICING, transcription_model="whisper-1")
    m.add_transcription_usage({"type": "duration", "seconds": 30})
    m.add_transcription_usage({"type": "duration", "seconds": 15.0})
    m.add_transcription_usage({"type": "duration", "seconds": "ten"})
    assert m.malformed_usage == 1
    assert m.transcription_seconds == 45.0
    assert m.tokens()["transcription_audio_ms"] == 45000
    assert m.cost(60.0).transcription_usd == pytest.approx(0.0045, abs=1e-12)


def test_transcription_unknown_cases() -> None:
    unknown = UsageMeter("gpt-realtime", PRICING, transcription_model="mystery-transcribe")
    c = unknown.cost(10)
    assert not c.known and c.transcription_usd is None and c.total_usd is None
    assert c.model_usd == 0.0

    unnamed = UsageMeter("gpt-realtime", PRICING)
    unnamed.add_transcription_usage({"type": "duration", "seconds": 3})
    assert unnamed.cost(10).transcription_usd is None

    # Tokens reported for a per-minute-only model cannot be priced.
    mismatch = UsageMeter("gpt-realtime", PRICING, transcription_model="whisper-1")
    mismatch.add_transcription_usage({"type": "tokens", "input_tokens": 5, "output_tokens": 1})
    c = mismatch.cost(10)
    assert c.transcription_usd is None and any("per minute" in w for w in c.warnings)


def test_transcription_malformed() -> None:
    m = UsageMeter("gpt-realtime", PRICING, transcription_model="gpt-4o-transcribe")
    for bad in (5, {"type": "weird"}, {"type": "tokens", "input_tokens": -1},
                {"type": "duration", "seconds": float("inf")}):
        m.add_transcription_usage(bad)  # type: ignore[arg-type]
    assert m.malformed_usage == 4
    assert m.cost(0).known
