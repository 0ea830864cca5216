"""The call core with carrier formats other than G.711 8 kHz, and bad payloads: what goes upstream."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from bridge.call.core import CallCore, EndCall, Note, SendCarrier, SendModel
from bridge.carrier import base as tel
from bridge.carrier.twilio import Twilio
from bridge.config import Settings
from bridge.realtime import events as rt
from bridge.vocabulary import CallState


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def active_core(encoding: str, rate: int, audio_format: str) -> CallCore:
    core = CallCore(Settings(realtime={"audio_format": audio_format}), "c1", 0.0, Twilio())
    core.on_carrier(tel.Start("MZ1", "CA1", "AC1", encoding, rate, 1, {}), 0.0)
    core.on_model_connected(0.1)
    core.on_model(rt.SessionUpdated({}), 0.2)
    assert core.state is CallState.ACTIVE
    return core


def appends(actions: list[Any]) -> list[str]:
    texts = [json.loads(a.text) for a in actions if isinstance(a, SendModel)]
    return [t["audio"] for t in texts if t["type"] == "input_audio_buffer.append"]


def tone(rate: int, ms: int) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return np.rint(8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def test_l16_16k_carrier_with_a_pcm16_session_is_resampled_both_ways() -> None:
    core = active_core("audio/l16;rate=16000", 16000, "pcm16")
    assert core.converter is not None and core.converter.carrier.id == "l16_16k"
    (sent,) = appends(core.on_carrier(tel.Media(b64(tone(16000, 20))), 1.0))
    assert len(base64.b64decode(sent)) == 960  # 20 ms at 24 kHz
    assert core.stats.bytes_in == 640
    # 100 ms of model audio → 100 ms of carrier audio (3200 bytes), tracked as 100 ms played
    out = core.on_model(rt.AudioDelta("r1", "i1", b64(tone(24000, 100))), 1.1)
    media = [json.loads(a.frame) for a in out if isinstance(a, SendCarrier)]
    assert len(base64.b64decode(media[0]["media"]["payload"])) == 3200
    item = core.tracker.item("i1")
    assert item is not None and item.sent_ms == pytest.approx(100.0) and item.received_ms == pytest.approx(100.0)


def test_l16_24k_carrier_with_a_pcm16_session_is_a_passthrough() -> None:
    core = active_core("L16", 24000, "pcm16")
    assert core.converter is not None and core.converter.passthrough
    payload = b64(tone(24000, 20))
    assert appends(core.on_carrier(tel.Media(payload), 1.0)) == [payload]


def test_samples_held_back_by_a_decimator_send_nothing_upstream() -> None:
    core = active_core("L16", 24000, "pcmu")  # 24 → 8 kHz: one output per three inputs
    sent = [appends(core.on_carrier(tel.Media(b64(b"\x10\x00")), 1.0 + i / 100)) for i in range(3)]
    assert [len(s) for s in sent] == [1, 0, 0]  # no empty input_audio_buffer.append


@pytest.mark.parametrize(("encoding", "rate"), [("audio/x-mulaw", 16000), ("L16", 22050), ("opus", 48000)])
def test_a_format_outside_the_table_ends_the_call_with_1003(encoding: str, rate: int) -> None:
    core = CallCore(Settings(), "c1", 0.0, Twilio())
    out = core.on_carrier(tel.Start("MZ1", "CA1", "AC1", encoding, rate, 1, {}), 0.0)
    ends = [a for a in out if isinstance(a, EndCall)]
    assert ends and ends[0].reason == "protocol_error" and ends[0].close_code == 1003


@pytest.mark.parametrize("payload", ["not base64!!", "AAAA====", "Zm9v\nYmFy", ""])
def test_invalid_payload_on_the_passthrough_never_goes_upstream(payload: str) -> None:
    # It used to be forwarded as is and answered by the Realtime API with invalid_value.
    core = active_core("audio/x-mulaw", 8000, "pcmu")
    out = core.on_carrier(tel.Media(payload), 1.0)
    assert appends(out) == []
    assert core.stats.audio_errors == 1
    notes = [a for a in out if isinstance(a, Note)]
    assert notes[0].kind == "audio_error" and notes[0].fields["direction"] == "to_model"
    good = b64(bytes([0x7F]) * 160)
    assert appends(core.on_carrier(tel.Media(good), 1.02)) == [good]
