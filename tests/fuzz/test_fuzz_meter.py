"""The usage meter against whatever usage the model reports (``response.done``, transcriptions).

Contract (bridge/accounting/meter.py): usage is untrusted; any JSON there is counted or set aside
as malformed, never an exception, and the cost stays a finite number (or None when a price is
unknown) that metrics and records can hold.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bridge.accounting.meter import UsageMeter
from bridge.accounting.pricing import PricingConfig
from tests.fuzz.strategies import json_values

USAGE_KEYS = st.sampled_from([
    "type", "seconds", "input_tokens", "output_tokens", "total_tokens", "input_token_details",
    "output_token_details", "text_tokens", "audio_tokens", "image_tokens", "cached_tokens",
    "cached_tokens_details",
])  # fmt: skip
# Counts that break float arithmetic: JSON integers have no bound (json.loads reads 4,300 digits).
huge = st.sampled_from([10**400, 2**1100, 1e308, 1.7e308, -(10**400), float("inf"), float("nan")])
counts = st.integers(0, 5000) | st.integers() | huge
usages = (
    st.dictionaries(USAGE_KEYS, counts | json_values(USAGE_KEYS), max_size=6)
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["duration", "tokens"]), "seconds": counts},
        optional={"input_tokens": counts, "output_tokens": counts,
                  "input_token_details": st.dictionaries(USAGE_KEYS, counts, max_size=4)},
    )
    | json_values(USAGE_KEYS)
)  # fmt: skip


@given(
    model=st.sampled_from(["gpt-realtime", "gpt-realtime-mini", "unknown-model"]),
    transcription=st.sampled_from([None, "gpt-4o-mini-transcribe", "whisper-1"]),
    reports=st.lists(st.tuples(st.booleans(), usages), max_size=6),
    duration=st.floats(0, 4 * 3600),
)
def test_any_usage_is_counted_or_set_aside_and_the_cost_stays_finite(
    model: str, transcription: str | None, reports: list[tuple[bool, Any]], duration: float
) -> None:
    meter = UsageMeter(model, PricingConfig(), transcription)
    for is_response, usage in reports:
        if is_response:
            meter.add_response_usage(usage)
        else:
            meter.add_transcription_usage(usage)
    tokens = meter.tokens()
    assert all(isinstance(v, int) and v >= 0 for v in tokens.values())
    assert math.isfinite(meter.transcription_seconds) and meter.transcription_seconds >= 0
    cost = meter.cost(duration)
    for usd in (cost.model_usd, cost.transcription_usd, cost.total_usd, cost.per_minute_usd, cost.carrier_usd):
        assert usd is None or (math.isfinite(usd) and usd >= 0)
    assert all(math.isfinite(v) for v in cost.model_parts.values())
