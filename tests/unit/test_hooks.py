"""What a worker counts from a call's notes: labels that mean what they say."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
from prometheus_client import REGISTRY

from bridge import metrics
from bridge.accounting.meter import UsageMeter
from bridge.accounting.pricing import PricingConfig
from bridge.call.core import BENIGN_MODEL_ERRORS, CallStats, Note
from bridge.server.hooks import WorkerHooks, outcome
from bridge.vocabulary import EndReason, NoteKind

pytestmark = pytest.mark.skipif(metrics.multiprocess_enabled(), reason="reads the in-process metrics")


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counted(hooks: WorkerHooks, note: Note, name: str, **labels: str) -> float:
    before = value(name, **labels)
    hooks.note(SimpleNamespace(call_id="c1"), note)  # type: ignore[arg-type]
    return value(name, **labels) - before


def test_an_oversized_carrier_message_is_counted_by_its_kind() -> None:
    hooks = WorkerHooks(None)
    note = Note(NoteKind.CARRIER_ERROR, {"kind": "message_too_big", "reason": "2097152 bytes"})
    labels = {"source": "carrier", "kind": "message_too_big"}
    assert counted(hooks, note, "bridge_protocol_errors_total", **labels) == 1


@pytest.mark.parametrize("code", sorted(BENIGN_MODEL_ERRORS))
def test_benign_races_are_counted_apart_from_model_errors(code: str) -> None:
    hooks = WorkerHooks(None)
    note = Note(NoteKind.MODEL_ERROR, {"code": code, "message": "race", "benign": True})
    errors_before = value("bridge_model_errors_total", code=code)
    assert counted(hooks, note, "bridge_model_races_total", code=code) == 1
    assert value("bridge_model_errors_total", code=code) == errors_before


def test_real_model_errors_are_model_errors() -> None:
    hooks = WorkerHooks(None)
    note = Note(NoteKind.MODEL_ERROR, {"code": "rate_limit_exceeded", "message": "slow down", "benign": False})
    assert counted(hooks, note, "bridge_model_errors_total", code="rate_limit_exceeded") == 1
    assert value("bridge_model_races_total", code="rate_limit_exceeded") == 0


@pytest.mark.parametrize(
    ("end_reason", "label"),
    [*((r.value, r.value) for r in EndReason), (None, "bridge_error"), ("rejected", "bridge_error")],
)
def test_outcome_is_an_end_reason(end_reason: str | None, label: str) -> None:
    assert outcome(end_reason) == label
    assert label in metrics.OUTCOMES


def test_token_kinds_are_the_meters_and_transcription_time_is_seconds() -> None:
    async def main() -> None:
        meter = UsageMeter("gpt-realtime", PricingConfig(), transcription_model="whisper-1")
        meter.add_response_usage(
            {"input_tokens": 150, "output_tokens": 70, "input_token_details": {"text_tokens": 50, "audio_tokens": 100},
             "output_token_details": {"text_tokens": 20, "audio_tokens": 50}}
        )
        meter.add_transcription_usage({"type": "duration", "seconds": 2.5})
        core: Any = SimpleNamespace(stats=CallStats(), meter=meter, started_at=trio.current_time())
        call: Any = SimpleNamespace(call_id="c-tokens", core=core)
        hooks = WorkerHooks(None)
        hooks.call_started(call)
        tokens = {kind: value("bridge_tokens_total", model="gpt-realtime", kind=kind) for kind in metrics.TOKEN_KINDS}
        seconds = value("bridge_transcription_audio_seconds_total", model="whisper-1")
        hooks.flush(call)
        hooks.flush(call)  # a second flush adds nothing
        gained = {k: value("bridge_tokens_total", model="gpt-realtime", kind=k) - v for k, v in tokens.items()}
        assert {k: v for k, v in gained.items() if v} == dict(
            (k, float(n)) for k, n in meter.tokens().items() if n and k != "transcription_audio_ms"
        )
        assert gained["audio_in"] == 100 and gained["audio_out"] == 50
        assert value("bridge_tokens_total", model="gpt-realtime", kind="transcription_audio_ms") == 0
        assert value("bridge_transcription_audio_seconds_total", model="whisper-1") - seconds == 2.5
        metrics.calls_active.dec()

    trio.run(main)


def test_reconnects_handovers_and_gaps_are_counted_by_cause() -> None:
    hooks = WorkerHooks(None)
    restored = Note(NoteKind.RECONNECT, {"phase": "restored", "cause": "closed", "gap_ms": 350})
    gaps_before = value("bridge_model_gap_seconds_count")
    sum_before = value("bridge_model_gap_seconds_sum")
    assert counted(hooks, restored, "bridge_model_reconnects_total", cause="closed", result="restored") == 1
    assert value("bridge_model_gap_seconds_count") - gaps_before == 1
    assert value("bridge_model_gap_seconds_sum") - sum_before == pytest.approx(0.35)
    lost = Note(NoteKind.RECONNECT, {"phase": "lost", "cause": "closed"})
    assert counted(hooks, lost, "bridge_model_reconnects_total", cause="closed", result="restored") == 0
    failed = Note(NoteKind.RECONNECT, {"phase": "failed", "cause": "ping_timeout", "gap_ms": 5000})
    assert counted(hooks, failed, "bridge_model_reconnects_total", cause="ping_timeout", result="failed") == 1
    done = Note(NoteKind.HANDOVER, {"phase": "done", "cause": "age"})
    assert counted(hooks, done, "bridge_model_handovers_total", cause="age") == 1
