"""Per-call usage meter: adds up the usage the Realtime API reports and prices it.

Pure: no trio and no clock; the call's duration is passed to :meth:`UsageMeter.cost`.

Usage comes from the network, so it is untrusted: a missing or mistyped field never raises. It
counts as 0 (or, where the total is known but its split is not, as the dearest kind, so the cost
errs high rather than low) and the report is counted in ``malformed_usage``, which surfaces as a
warning in the cost breakdown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.vocabulary import TokenKind

from .pricing import ModelPrice, PricingConfig, TranscriptionPrice

__all__ = ["TOKEN_KINDS", "CostBreakdown", "UsageMeter"]

_PER_TOKEN = 1e-6  # prices are USD per 1M tokens
# Bounds on one usage report. No response or transcription comes near a billion tokens or a
# million seconds; beyond them a report is malformed, and JSON's unbounded integers (or 1e308
# seconds, ×1000 in milliseconds) would overflow the float arithmetic of pricing and metrics.
_MAX_COUNT = 10**9
_MAX_SECONDS = 10**6

# The token buckets (and their meaning) are defined once, in bridge.vocabulary.
TOKEN_KINDS: tuple[str, ...] = tuple(kind.value for kind in TokenKind)


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """The cost of one call so far. A part is None when its price is unknown; then ``known`` is
    False, ``total_usd`` and ``per_minute_usd`` are None and ``warnings`` says why."""

    model_usd: float | None
    transcription_usd: float | None
    carrier_usd: float
    total_usd: float | None
    per_minute_usd: float | None
    known: bool
    carrier_minutes: int
    # Model cost by token kind (keys of TOKEN_KINDS): where the money goes. Empty when unknown.
    model_parts: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class _Reader:
    """Reads integer counts out of an untrusted mapping, remembering whether anything was bad."""

    __slots__ = ("bad",)

    def __init__(self) -> None:
        self.bad = False

    def map(self, parent: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.bad = True
            return None
        return value

    def count(self, parent: Mapping[str, Any] | None, key: str) -> int:
        if parent is None:
            return 0
        value = parent.get(key)
        if value is None:
            return 0
        # bool is an int subclass; True is not a token count.
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
            self.bad = True
            return 0
        return value

    def part(self, whole: int, part: int) -> int:
        """A subset count, clamped to its whole (a cached count above the total is malformed)."""
        if part > whole:
            self.bad = True
            return whole
        return part


class UsageMeter:
    """Adds up one call's Realtime and transcription usage and prices it.

    ``model`` is the Realtime model as configured or as ``session.created`` reports it (dated
    names resolve to their family); ``transcription_model`` is the input transcription model, if
    the session transcribes the caller.
    """

    def __init__(self, model: str, pricing: PricingConfig, transcription_model: str | None = None) -> None:
        self.model = model
        self.transcription_model = transcription_model
        self._pricing = pricing
        self._tokens: dict[str, int] = dict.fromkeys(TOKEN_KINDS, 0)
        self._transcription_seconds = 0.0
        self._transcription_reports = 0
        self.responses = 0
        self.malformed_usage = 0
        # Notes that only the data can reveal (e.g. an old server without cached details);
        # kept as a set so a 200-turn call does not repeat the same sentence 200 times.
        self._notes: set[str] = set()

    # -- input -----------------------------------------------------------------------------

    def add_response_usage(self, usage: Mapping[str, Any] | None) -> None:
        """Add ``response.done``'s ``response.usage``. Counts a response even without usage."""
        self.responses += 1
        if usage is None:
            # A cancelled/failed response may carry no usage at all; nothing to bill.
            return
        if not isinstance(usage, Mapping):
            self.malformed_usage += 1
            return
        r = _Reader()
        t = self._tokens

        input_total = r.count(usage, "input_tokens")
        details = r.map(usage, "input_token_details")
        text = r.count(details, "text_tokens")
        audio = r.count(details, "audio_tokens")
        image = r.count(details, "image_tokens")
        if details is None and input_total > 0:
            # The total is known but not its split: price it as uncached audio, the dearest input,
            # so the error is an over- rather than an under-estimate.
            r.bad = True
            audio = input_total
        cached_total = r.count(details, "cached_tokens")
        cached_details = r.map(details, "cached_tokens_details") if details is not None else None
        if cached_details is not None:
            cached_text = r.part(text, r.count(cached_details, "text_tokens"))
            cached_audio = r.part(audio, r.count(cached_details, "audio_tokens"))
            # Cached image tokens have no published price; they stay in image_in (an upper bound).
        else:
            # The beta shape has only the cached total. The cacheable prefix starts with the
            # instructions (text), so assign it to text first: that also errs high, since
            # uncached audio is the dearer input.
            cached_total = r.part(text + audio, cached_total)
            cached_text = min(cached_total, text)
            cached_audio = cached_total - cached_text
            if cached_total:
                self._notes.add("cached tokens were reported without a text/audio split; "
                                "they were assigned to text first")
        t["text_in"] += text - cached_text
        t["cached_text_in"] += cached_text
        t["audio_in"] += audio - cached_audio
        t["cached_audio_in"] += cached_audio
        t["image_in"] += image

        output_total = r.count(usage, "output_tokens")
        out = r.map(usage, "output_token_details")
        if out is None and output_total > 0:
            r.bad = True
            t["audio_out"] += output_total  # dearest output, as above
        else:
            t["text_out"] += r.count(out, "text_tokens")
            t["audio_out"] += r.count(out, "audio_tokens")

        if r.bad:
            self.malformed_usage += 1

    def add_transcription_usage(self, usage: Mapping[str, Any] | None) -> None:
        """Add the ``usage`` of ``conversation.item.input_audio_transcription.completed``:
        ``{type: "tokens", input_tokens, output_tokens, input_token_details{text_tokens,
        audio_tokens}}`` or ``{type: "duration", seconds}``."""
        if usage is None:
            return
        if not isinstance(usage, Mapping):
            self.malformed_usage += 1
            return
        r = _Reader()
        t = self._tokens
        kind = usage.get("type")
        if kind == "duration":
            seconds = usage.get("seconds")
            # One range check, no math.isfinite: it raises OverflowError for a huge int, and NaN
            # and the infinities fail the comparison anyway.
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= _MAX_SECONDS:
                self.malformed_usage += 1
                return
            self._transcription_seconds += float(seconds)
            t["transcription_audio_ms"] += round(seconds * 1000)
            self._transcription_reports += 1
            return
        if kind != "tokens" and "input_tokens" not in usage:
            self.malformed_usage += 1
            return
        input_total = r.count(usage, "input_tokens")
        details = r.map(usage, "input_token_details")
        if details is None:
            # Transcription input is the caller's audio (plus a short prompt at most).
            t["transcription_audio_in"] += input_total
        else:
            t["transcription_text_in"] += r.count(details, "text_tokens")
            t["transcription_audio_in"] += r.count(details, "audio_tokens")
        t["transcription_text_out"] += r.count(usage, "output_tokens")
        self._transcription_reports += 1
        if r.bad:
            self.malformed_usage += 1

    # -- read-outs -------------------------------------------------------------------------

    def tokens(self) -> dict[str, int]:
        """Totals by kind (see TOKEN_KINDS); a copy, safe to keep."""
        return dict(self._tokens)

    @property
    def transcription_seconds(self) -> float:
        return self._transcription_seconds

    def cost(self, duration_s: float) -> CostBreakdown:
        """Price everything added so far for a call that has lasted ``duration_s`` seconds."""
        warnings: list[str] = sorted(self._notes)
        if self.malformed_usage:
            warnings.append(f"{self.malformed_usage} usage report(s) were malformed; "
                            "unreadable counts were taken as 0")

        parts: dict[str, float] = {}
        model_usd: float | None = None
        price = self._pricing.model_price(self.model)
        if price is None:
            warnings.append(f"no price for model {self.model!r}: model cost unknown")
        else:
            parts = self._model_parts(price)
            if self._tokens["image_in"] and price.image_input is None:
                warnings.append(f"image tokens but no image price for model {self.model!r}: "
                                "model cost unknown")
                parts = {}
            else:
                model_usd = sum(parts.values())

        transcription_usd = self._transcription_cost(warnings)

        duration = duration_s if math.isfinite(duration_s) and duration_s > 0 else 0.0
        # Twilio bills a call per started minute (61 s is 2 minutes), so the carrier cost
        # rounds up; the per-minute figure below still divides by the real duration.
        minutes = math.ceil(duration / 60.0)
        carrier_usd = minutes * self._pricing.carrier_per_minute_usd

        known = model_usd is not None and transcription_usd is not None
        total_usd = model_usd + transcription_usd + carrier_usd \
            if model_usd is not None and transcription_usd is not None else None
        per_minute = total_usd / (duration / 60.0) if total_usd is not None and duration > 0 else None
        if per_minute is not None and not math.isfinite(per_minute):
            per_minute = None  # a duration so short (a denormal) that the rate overflows: no rate
        return CostBreakdown(model_usd=model_usd, transcription_usd=transcription_usd,
                             carrier_usd=carrier_usd, total_usd=total_usd, per_minute_usd=per_minute,
                             known=known, carrier_minutes=minutes, model_parts=parts,
                             warnings=warnings)

    # -- internals -------------------------------------------------------------------------

    def _model_parts(self, p: ModelPrice) -> dict[str, float]:
        t = self._tokens
        return {
            "text_in": t["text_in"] * p.text_input * _PER_TOKEN,
            "cached_text_in": t["cached_text_in"] * p.cached_text_input * _PER_TOKEN,
            "audio_in": t["audio_in"] * p.audio_input * _PER_TOKEN,
            "cached_audio_in": t["cached_audio_in"] * p.cached_audio_input * _PER_TOKEN,
            "image_in": t["image_in"] * (p.image_input or 0.0) * _PER_TOKEN,
            "text_out": t["text_out"] * p.text_output * _PER_TOKEN,
            "audio_out": t["audio_out"] * p.audio_output * _PER_TOKEN,
        }

    def _transcription_cost(self, warnings: list[str]) -> float | None:
        t = self._tokens
        token_count = t["transcription_text_in"] + t["transcription_audio_in"] + t["transcription_text_out"]
        used = self._transcription_reports > 0
        name = self.transcription_model
        if name is None:
            if used:
                warnings.append("transcription usage reported but no transcription model set: "
                                "transcription cost unknown")
                return None
            return 0.0
        price: TranscriptionPrice | None = self._pricing.transcription_price(name)
        if price is None:
            warnings.append(f"no price for transcription model {name!r}: transcription cost unknown")
            return None
        usd = 0.0
        if token_count:
            if not price.has_token_prices:
                warnings.append(f"transcription model {name!r} reported tokens but is priced per "
                                "minute only: transcription cost unknown")
                return None
            # has_token_prices guarantees these are set; the asserts are for the type checker.
            assert price.text_input is not None and price.audio_input is not None
            assert price.text_output is not None
            usd += (t["transcription_text_in"] * price.text_input
                    + t["transcription_audio_in"] * price.audio_input
                    + t["transcription_text_out"] * price.text_output) * _PER_TOKEN
        if self._transcription_seconds:
            if price.per_minute is None:
                warnings.append(f"transcription model {name!r} reported a duration but has no "
                                "per_minute price: transcription cost unknown")
                return None
            # Pro rata on the reported seconds: no per-started-minute rounding as with the carrier.
            usd += self._transcription_seconds / 60.0 * price.per_minute
        return usd
