"""The pure Realtime simulator: GA validation, VAD turns, responses, truncation, usage."""

from __future__ import annotations

import base64
import json
import math
import warnings
from typing import Annotated, Any, get_args

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import Field, TypeAdapter

from bridge.testing.simulator import (
    PCM,
    PCMA,
    PCMU,
    SimulatedSession,
    SimulatorOptions,
    assistant_audio,
    design_lowpass,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ServerEvents: TypeAdapter[Any] = TypeAdapter(
    Annotated[get_args(RealtimeServerEvent)[0], Field(discriminator="type")]
)

Event = dict[str, Any]


# ------------------------------------------------------------------------------------- helpers


def new_session(**options: Any) -> SimulatedSession:
    session = SimulatedSession(SimulatorOptions(seed=7, **options), model="gpt-realtime")
    session.connect(0.0)
    return session


def send(session: SimulatedSession, event: Event, now: float = 0.0) -> list[Event]:
    return [json.loads(text) for text in session.receive(json.dumps(event), now)]


def update(session: SimulatedSession, patch: Event, now: float = 0.0) -> list[Event]:
    return send(session, {"type": "session.update", "session": {"type": "realtime", **patch}}, now)


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["type"] == kind]


def error_of(events: list[Event]) -> dict[str, Any]:
    errors = of_type(events, "error")
    assert len(errors) == 1, types(events)
    error: dict[str, Any] = errors[0]["error"]
    return error


def ulaw_frames(pcm: np.ndarray[Any, Any]) -> list[bytes]:
    """8 kHz int16 samples -> 20 ms μ-law frames, as a carrier sends them."""
    ulaw = audioop.lin2ulaw(pcm.astype("<i2").tobytes(), 2)
    return [ulaw[i : i + 160] for i in range(0, len(ulaw), 160)]


def tone(ms: int, amplitude: float = 3000.0, rate: int = 8000) -> np.ndarray[Any, Any]:
    t = np.arange(rate * ms // 1000) / rate
    return amplitude * np.sin(2 * np.pi * 300.0 * t)


def silence(ms: int, rate: int = 8000) -> np.ndarray[Any, Any]:
    return np.zeros(rate * ms // 1000)


def append_all(session: SimulatedSession, frames: list[bytes], now: float = 0.0) -> list[Event]:
    out: list[Event] = []
    for frame in frames:
        out += send(
            session, {"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()}, now
        )
    return out


def drain(session: SimulatedSession, now: float = 0.0) -> tuple[list[Event], float]:
    """Tick at each deadline until no response is active; returns the events and the final time."""
    out: list[Event] = []
    while session.response_active:
        deadline = session.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        out += [json.loads(text) for text in session.tick(now)]
    return out, now


def manual_session(**options: Any) -> SimulatedSession:
    session = new_session(**options)
    fmt = {"type": PCMU}
    update(session, {"audio": {"input": {"format": fmt, "turn_detection": None}, "output": {"format": fmt}}})
    return session


def validate_all(session: SimulatedSession) -> None:
    """Every event the simulator emitted must parse as the openai package's GA server event."""
    assert session.emitted_events
    for event in session.emitted_events:
        ServerEvents.validate_python(event)


def decoded_deltas(events: list[Event]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in of_type(events, "response.output_audio.delta"))


# ------------------------------------------------------------------------------------- session


def test_connect_sends_session_created_with_ga_defaults() -> None:
    session = SimulatedSession(SimulatorOptions(seed=1), model="gpt-realtime-mini", created_at_unix=1_000)
    [created] = [json.loads(t) for t in session.connect(5.0)]
    assert created["type"] == "session.created"
    cfg = created["session"]
    assert cfg["type"] == "realtime" and cfg["model"] == "gpt-realtime-mini"
    assert cfg["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert cfg["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert cfg["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert cfg["expires_at"] == 1_000 + 3600
    validate_all(session)


def test_session_update_without_type_is_rejected_and_changes_nothing() -> None:
    session = new_session()
    out = send(
        session,
        {
            "type": "session.update",
            "event_id": "c1",
            "session": {"audio": {"input": {"format": {"type": PCMU}}}},
        },
    )
    err = error_of(out)
    assert (err["code"], err["param"], err["event_id"]) == (
        "missing_required_parameter",
        "session.type",
        "c1",
    )
    assert err["type"] == "invalid_request_error"
    assert session.input_format == PCM
    validate_all(session)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("voice", "alloy"),
        ("input_audio_format", "g711_ulaw"),
        ("turn_detection", {"type": "server_vad"}),
        ("input_audio_transcription", {"model": "whisper-1"}),
        ("modalities", ["audio", "text"]),
        ("temperature", 0.8),
    ],
)
def test_beta_session_keys_are_unknown_parameters(key: str, value: Any) -> None:
    session = new_session()
    err = error_of(update(session, {key: value}))
    assert err["code"] == "unknown_parameter"
    assert err["param"] == f"session.{key}"
    assert err["message"] == f"Unknown parameter: 'session.{key}'."


@pytest.mark.parametrize(
    ("fmt", "code", "param"),
    [
        ({"type": "audio/pcm", "rate": 16000}, "integer_below_min_value", "session.audio.input.format.rate"),
        ({"type": "audio/pcm", "rate": 48000}, "integer_above_max_value", "session.audio.input.format.rate"),
        ({"type": "audio/pcm"}, "missing_required_parameter", "session.audio.input.format.rate"),
        ({"type": "g711_ulaw"}, "invalid_value", "session.audio.input.format.type"),
        ("pcm16", "invalid_type", "session.audio.input.format"),
    ],
)
def test_bad_audio_formats_are_rejected(fmt: Any, code: str, param: str) -> None:
    session = new_session()
    err = error_of(update(session, {"instructions": "ignored", "audio": {"input": {"format": fmt}}}))
    assert (err["code"], err["param"]) == (code, param)
    # The whole update is discarded, not just the bad field.
    assert session.config["instructions"] != "ignored"


def test_session_update_merges_into_effective_session() -> None:
    session = new_session()
    out = update(
        session,
        {
            "instructions": "Be brief.",
            "audio": {
                "input": {
                    "format": {"type": PCMA},
                    "turn_detection": {"type": "server_vad", "threshold": 0.7},
                    "transcription": {"model": "gpt-4o-mini-transcribe"},
                },
                "output": {"format": {"type": PCMA}, "voice": "marin"},
            },
        },
    )
    [updated] = out
    cfg = updated["session"]
    assert updated["type"] == "session.updated"
    assert cfg["instructions"] == "Be brief."
    assert cfg["audio"]["input"]["format"] == {"type": PCMA}
    assert cfg["audio"]["output"] == {"format": {"type": PCMA}, "voice": "marin", "speed": 1.0}
    td = cfg["audio"]["input"]["turn_detection"]
    assert td["threshold"] == 0.7 and td["silence_duration_ms"] == 500 and td["create_response"] is True
    assert cfg["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert cfg["output_modalities"] == ["audio"]  # untouched keys keep their values
    # A later partial update keeps what the first one set.
    update(session, {"instructions": "Other."})
    assert session.output_format == PCMA
    validate_all(session)


def test_turn_detection_null_and_create_response_null() -> None:
    session = new_session()
    err = error_of(
        update(
            session, {"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": None}}}}
        )
    )
    assert (err["code"], err["param"]) == (
        "invalid_type",
        "session.audio.input.turn_detection.create_response",
    )
    [updated] = update(session, {"audio": {"input": {"turn_detection": None}}})
    assert updated["session"]["audio"]["input"]["turn_detection"] is None
    assert session.turn_detection is None


def test_invalid_json_unknown_event_and_binary_frames_get_errors() -> None:
    session = new_session()
    bad = [json.loads(t) for t in session.receive("not json", 0.0)]
    assert error_of(bad)["code"] == "invalid_json"
    err = error_of(send(session, {"type": "response.audio.delta"}))
    assert (err["code"], err["param"]) == ("invalid_value", "type")
    assert err["message"].startswith(
        "Invalid value: 'response.audio.delta'. Supported values are: 'session.update'"
    )
    binary = [json.loads(t) for t in session.receive_bytes(b"\x00\x01", 0.0)]
    assert error_of(binary)["code"] == "invalid_event"
    err = error_of(send(session, {"type": "input_audio_buffer.append", "audio": "!!not base64!!"}))
    assert (err["code"], err["param"]) == ("invalid_value", "audio")
    validate_all(session)


# ----------------------------------------------------------------------------------- VAD turns


def test_speech_burst_in_ulaw_makes_a_vad_turn_and_a_ulaw_response() -> None:
    session = new_session()
    fmt = {"type": PCMU}
    update(session, {"audio": {"input": {"format": fmt}, "output": {"format": fmt}}})
    frames = ulaw_frames(np.concatenate([silence(1000), tone(1000), silence(1000)]))
    out = append_all(session, frames)

    started = of_type(out, "input_audio_buffer.speech_started")
    stopped = of_type(out, "input_audio_buffer.speech_stopped")
    committed = of_type(out, "input_audio_buffer.committed")
    assert len(started) == len(stopped) == len(committed) == 1
    # Onset at 1000 ms minus the default 300 ms prefix padding; end = last speech + 500 ms of silence.
    assert started[0]["audio_start_ms"] == 700
    assert stopped[0]["audio_end_ms"] == 2500
    item_id = started[0]["item_id"]
    assert stopped[0]["item_id"] == committed[0]["item_id"] == item_id
    assert committed[0]["previous_item_id"] is None
    order = types(out)
    assert order.index("input_audio_buffer.speech_stopped") < order.index("input_audio_buffer.committed")
    assert order.index("conversation.item.done") < order.index("response.created")
    user_item = session.item(item_id)
    assert user_item is not None and user_item.role == "user" and user_item.audio_ms == pytest.approx(1800)

    rest, _ = drain(session)
    audio = decoded_deltas(rest)
    expected = assistant_audio(PCMU)
    assert audio == expected  # the whole recording, in μ-law, in order
    assert len(expected) == pytest.approx(6461.875 * 8, abs=8)
    deltas = of_type(rest, "response.output_audio.delta")
    assert all(len(base64.b64decode(d["delta"])) == 800 for d in deltas[:-1])  # 100 ms each
    done = of_type(rest, "response.done")[0]["response"]
    assert done["status"] == "completed"
    assert done["audio"]["output"]["format"] == {"type": PCMU}
    transcript = of_type(rest, "response.output_audio_transcript.done")[0]["transcript"]
    assert transcript == "".join(d["delta"] for d in of_type(rest, "response.output_audio_transcript.delta"))
    assert types(rest)[-2:] == ["response.done", "rate_limits.updated"]
    validate_all(session)


def test_quiet_line_noise_does_not_trigger_the_vad() -> None:
    session = manual_session()
    update(session, {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 30.0, 8000 * 3)  # about -61 dBFS
    assert append_all(session, ulaw_frames(noise)) == []
    assert session.audio_ms_written == pytest.approx(3000)


def test_short_clicks_shorter_than_60_ms_are_not_speech() -> None:
    session = manual_session()
    update(session, {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
    signal = np.concatenate([silence(500), tone(40), silence(500), tone(40), silence(500)])
    assert of_type(append_all(session, ulaw_frames(signal)), "input_audio_buffer.speech_started") == []


def test_higher_threshold_needs_louder_speech() -> None:
    quiet = np.concatenate([silence(400), tone(800, amplitude=600.0), silence(800)])  # about -35 dBFS
    low = manual_session()
    update(low, {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.5}}}})
    high = manual_session()
    update(high, {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.9}}}})
    assert of_type(append_all(low, ulaw_frames(quiet)), "input_audio_buffer.speech_started")
    assert not of_type(append_all(high, ulaw_frames(quiet)), "input_audio_buffer.speech_started")


def test_pcm16_input_is_measured_at_24k_and_odd_bytes_carry_over() -> None:
    session = new_session()
    pcm = np.concatenate([silence(500, 24000), tone(600, rate=24000), silence(700, 24000)])
    data = pcm.astype("<i2").tobytes()
    out: list[Event] = []
    # Odd-sized chunks split samples across appends; the VAD must still see the right audio.
    for i in range(0, len(data), 961):
        out += send(
            session,
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(data[i : i + 961]).decode()},
        )
    assert of_type(out, "input_audio_buffer.speech_started")[0]["audio_start_ms"] == 200
    assert of_type(out, "input_audio_buffer.speech_stopped")[0]["audio_end_ms"] == 1600
    assert bytes(session.appended_audio) == data
    assert session.audio_ms_written == pytest.approx(1800)


def test_speech_during_a_response_cancels_it_with_turn_detected() -> None:
    session = new_session()
    fmt = {"type": PCMU}
    update(session, {"audio": {"input": {"format": fmt}, "output": {"format": fmt}}})
    append_all(session, ulaw_frames(np.concatenate([tone(600), silence(600)])))
    assert session.response_active
    session.tick(0.0)  # first delta out
    out = append_all(session, ulaw_frames(tone(200)), now=0.01)
    order = types(out)
    assert order[0] == "input_audio_buffer.speech_started"
    done = of_type(out, "response.done")[0]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert order.index("response.output_audio.done") < order.index("response.done")
    assert not session.response_active
    assert session.tick(100.0) == []  # no more deltas for the cancelled response
    assert session.responses[0].status == "cancelled"
    validate_all(session)


def test_interrupt_response_false_keeps_the_response_going() -> None:
    session = new_session()
    fmt = {"type": PCMU}
    td = {"type": "server_vad", "interrupt_response": False}
    update(session, {"audio": {"input": {"format": fmt, "turn_detection": td}, "output": {"format": fmt}}})
    append_all(session, ulaw_frames(np.concatenate([tone(600), silence(600)])))
    out = append_all(session, ulaw_frames(tone(200)), now=0.01)
    assert types(out) == ["input_audio_buffer.speech_started"]
    assert session.response_active


def test_create_response_false_commits_without_answering() -> None:
    session = new_session()
    fmt = {"type": PCMU}
    td = {"type": "server_vad", "create_response": False}
    update(session, {"audio": {"input": {"format": fmt, "turn_detection": td}}})
    out = append_all(session, ulaw_frames(np.concatenate([tone(600), silence(600)])))
    assert "input_audio_buffer.committed" in types(out)
    assert "response.created" not in types(out)


def test_input_transcription_reports_token_usage() -> None:
    session = new_session()
    fmt = {"type": PCMU}
    update(
        session, {"audio": {"input": {"format": fmt, "transcription": {"model": "gpt-4o-mini-transcribe"}}}}
    )
    out = append_all(session, ulaw_frames(np.concatenate([tone(2000), silence(600)])))
    [completed] = of_type(out, "conversation.item.input_audio_transcription.completed")
    usage = completed["usage"]
    assert usage["type"] == "tokens"
    assert usage["input_token_details"]["audio_tokens"] == 25  # 2.5 s at 10 tokens/s (incl. silence tail)
    assert usage["input_tokens"] + usage["output_tokens"] == usage["total_tokens"]
    assert completed["transcript"]
    validate_all(session)


# --------------------------------------------------------------------------------- manual mode


def test_manual_mode_commit_and_response_create() -> None:
    session = manual_session()
    out = append_all(session, ulaw_frames(tone(60)))
    assert out == []  # no VAD events with turn_detection null
    err = error_of(send(session, {"type": "input_audio_buffer.commit"}))
    assert err["code"] == "input_audio_buffer_commit_empty"
    append_all(session, ulaw_frames(tone(1000)))
    out = send(session, {"type": "input_audio_buffer.commit"})
    assert types(out) == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    user = session.item(out[0]["item_id"])
    assert user is not None and user.audio_ms == pytest.approx(1060)
    assert not session.response_active  # commit alone does not answer

    out = send(session, {"type": "response.create"})
    assert types(out)[:2] == ["response.created", "response.output_item.added"]
    assert out[0]["response"]["status"] == "in_progress"
    assert out[1]["item"]["id"].startswith("item_")
    again = send(session, {"type": "response.create", "event_id": "c9"})
    err = error_of(again)
    assert (err["code"], err["event_id"]) == ("conversation_already_has_active_response", "c9")
    validate_all(session)


def test_clear_discards_the_buffer() -> None:
    session = manual_session()
    append_all(session, ulaw_frames(tone(500)))
    assert types(send(session, {"type": "input_audio_buffer.clear"})) == ["input_audio_buffer.cleared"]
    assert (
        error_of(send(session, {"type": "input_audio_buffer.commit"}))["code"]
        == "input_audio_buffer_commit_empty"
    )


def test_deltas_come_faster_than_real_time_at_the_configured_speed() -> None:
    session = manual_session(speed=4.0, delta_ms=100)
    send(session, {"type": "response.create"}, now=10.0)
    assert session.next_deadline() == pytest.approx(10.0)
    first = [json.loads(t) for t in session.tick(10.0)]
    assert len(of_type(first, "response.output_audio.delta")) == 1
    # 100 ms of wall time carries 400 ms of audio at 4x.
    more = [json.loads(t) for t in session.tick(10.1)]
    assert len(of_type(more, "response.output_audio.delta")) == 4
    assert session.next_deadline() == pytest.approx(10.125)


def test_response_length_is_configurable() -> None:
    short = manual_session(response_audio_ms=1000)
    send(short, {"type": "response.create"})
    out, _ = drain(short)
    assert len(decoded_deltas(out)) == 8000
    assert len(of_type(out, "response.output_audio.delta")) == 10

    long = manual_session(response_audio_ms=15000, speed=math.inf)
    send(long, {"type": "response.create"})
    out, _ = drain(long)
    audio = decoded_deltas(out)
    source = assistant_audio(PCMU)
    assert len(audio) == 120000
    assert audio[len(source) : 2 * len(source)] == source  # longer answers loop the recording


def test_pcm_output_is_the_24k_recording() -> None:
    session = new_session(response_audio_ms=500)
    send(session, {"type": "response.create"})
    out, _ = drain(session)
    assert decoded_deltas(out) == assistant_audio(PCM)[: 500 * 48]


def test_greeting_response_with_instructions() -> None:
    session = manual_session(response_audio_ms=300)
    out = send(session, {"type": "response.create", "response": {"instructions": "Greet the caller."}})
    assert types(out)[0] == "response.created"
    rest, _ = drain(session)
    usage = of_type(rest, "response.done")[0]["response"]["usage"]
    assert usage["input_token_details"]["text_tokens"] == math.ceil(len("Greet the caller.") / 4)
    err = error_of(send(session, {"type": "response.create", "response": {"voice": "alloy"}}))
    assert (err["code"], err["param"]) == ("unknown_parameter", "response.voice")


def test_text_only_session_answers_in_text() -> None:
    session = new_session()
    update(session, {"output_modalities": ["text"]})
    out = send(session, {"type": "response.create"})
    assert "response.output_text.delta" in types(out)
    assert "response.output_audio.delta" not in types(out)
    assert of_type(out, "response.done")[0]["response"]["status"] == "completed"
    validate_all(session)


# ------------------------------------------------------------------------------- cancel, truncate


def test_cancel() -> None:
    session = manual_session()
    err = error_of(send(session, {"type": "response.cancel"}))
    assert err["code"] == "response_cancel_not_active"
    send(session, {"type": "response.create"})
    session.tick(0.0)
    out = send(session, {"type": "response.cancel"}, now=0.01)
    done = of_type(out, "response.done")[0]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "client_cancelled"
    assert done["usage"]["output_token_details"]["audio_tokens"] == 2  # 100 ms generated at 20 tok/s
    assert session.tick(50.0) == []
    assert error_of(send(session, {"type": "response.cancel"}))["code"] == "response_cancel_not_active"
    validate_all(session)


def test_truncate_accepts_heard_audio_and_rejects_past_the_end() -> None:
    session = manual_session()
    send(session, {"type": "response.create"})
    session.tick(0.0)
    session.tick(0.225)  # 10 deltas: 1000 ms generated so far
    item_id = session.responses[0].item_id
    assert item_id is not None

    out = send(
        session,
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1500},
    )
    err = error_of(out)
    assert err["code"] == "invalid_value"
    assert err["param"] == "audio_end_ms"
    assert err["message"] == "Audio content of 1000ms is already shorter than 1500ms"

    out = send(
        session,
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 600},
    )
    assert out[0]["type"] == "conversation.item.truncated"
    assert (out[0]["item_id"], out[0]["content_index"], out[0]["audio_end_ms"]) == (item_id, 0, 600)
    # The response keeps going: truncation cancels nothing by itself.
    assert session.response_active
    assert of_type([json.loads(t) for t in session.tick(0.3)], "response.output_audio.delta")

    out = send(
        session,
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 700},
    )
    assert error_of(out)["message"] == "Audio content of 600ms is already shorter than 700ms"
    assert session.truncations == [(item_id, 1500, False), (item_id, 600, True), (item_id, 700, False)]
    validate_all(session)


def test_truncate_unknown_and_user_items() -> None:
    session = manual_session()
    err = error_of(
        send(
            session,
            {
                "type": "conversation.item.truncate",
                "item_id": "item_nope",
                "content_index": 0,
                "audio_end_ms": 0,
            },
        )
    )
    assert err["code"] == "item_truncate_invalid_item_id"
    append_all(session, ulaw_frames(tone(500)))
    [committed, *_] = send(session, {"type": "input_audio_buffer.commit"})
    err = error_of(
        send(
            session,
            {
                "type": "conversation.item.truncate",
                "item_id": committed["item_id"],
                "content_index": 0,
                "audio_end_ms": 0,
            },
        )
    )
    assert err["message"] == "Only model output audio messages can be truncated"


# ---------------------------------------------------------------------------------------- usage


def usage_of(events: list[Event]) -> dict[str, Any]:
    usage: dict[str, Any] = of_type(events, "response.done")[0]["response"]["usage"]
    return usage


def check_usage_shape(usage: dict[str, Any]) -> None:
    inp, outp = usage["input_token_details"], usage["output_token_details"]
    cached = inp["cached_tokens_details"]
    assert usage["input_tokens"] == inp["text_tokens"] + inp["audio_tokens"] + inp["image_tokens"]
    assert usage["output_tokens"] == outp["text_tokens"] + outp["audio_tokens"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert inp["cached_tokens"] == cached["text_tokens"] + cached["audio_tokens"] + cached["image_tokens"]
    assert inp["cached_tokens"] <= usage["input_tokens"]
    assert cached["text_tokens"] <= inp["text_tokens"]
    assert cached["audio_tokens"] <= inp["audio_tokens"]


def run_turn(session: SimulatedSession, speech_ms: int) -> dict[str, Any]:
    append_all(session, ulaw_frames(tone(speech_ms)))
    send(session, {"type": "input_audio_buffer.commit"})
    send(session, {"type": "response.create"})
    out, _ = drain(session)
    return usage_of(out)


def test_usage_rebills_the_conversation_with_the_prefix_cached() -> None:
    session = manual_session()
    instructions = "You answer phone calls for a shop. " * 10
    update(session, {"instructions": instructions})
    first = run_turn(session, 2000)
    second = run_turn(session, 3000)
    for usage in (first, second):
        check_usage_shape(usage)

    instr_tokens = math.ceil(len(instructions) / 4)
    assistant_in = round(6461.875 / 100)  # the whole first answer stays in context at 10 tok/s
    assert first["input_token_details"]["text_tokens"] == instr_tokens
    assert first["input_token_details"]["audio_tokens"] == 20
    assert first["input_token_details"]["cached_tokens"] == 0
    assert second["input_token_details"]["audio_tokens"] == 20 + assistant_in + 30
    assert second["input_tokens"] > first["input_tokens"]
    prefix = instr_tokens + 20 + assistant_in
    assert second["input_token_details"]["cached_tokens"] == prefix // 64 * 64
    assert second["input_token_details"]["cached_tokens"] > 0
    # Output: 20 tokens/s of audio generated plus the transcript's text.
    assert first["output_token_details"]["audio_tokens"] == round(6461.875 / 50)
    assert first["output_token_details"]["text_tokens"] > 0
    validate_all(session)


def test_truncation_shrinks_later_context_and_breaks_the_cache_there() -> None:
    session = manual_session()
    update(session, {"instructions": "x" * 600})  # 150 text tokens
    run_turn(session, 2000)
    item_id = session.responses[0].item_id
    send(
        session,
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1000},
    )
    second = run_turn(session, 1000)
    check_usage_shape(second)
    assert second["input_token_details"]["audio_tokens"] == 20 + 10 + 10
    # The cache stops at the truncated item: instructions + first user turn = 170 -> 128 cached.
    assert second["input_token_details"]["cached_tokens"] == 128


def test_text_items_count_as_text_tokens() -> None:
    session = manual_session(response_audio_ms=200)
    text = "The caller pressed 1 2 3 4 on the keypad."
    out = send(
        session,
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        },
    )
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    assert out[0]["item"]["content"][0]["text"] == text
    send(session, {"type": "response.create"})
    rest, _ = drain(session)
    usage = usage_of(rest)
    assert usage["input_token_details"]["text_tokens"] == math.ceil(
        len(session.config["instructions"]) / 4
    ) + math.ceil(len(text) / 4)
    validate_all(session)


# ------------------------------------------------------------------------------ misc behaviour


def test_voice_is_locked_after_the_first_audio() -> None:
    session = manual_session(response_audio_ms=200)
    assert update(session, {"audio": {"output": {"voice": "cedar"}}})[0]["type"] == "session.updated"
    send(session, {"type": "response.create"})
    drain(session)
    err = error_of(update(session, {"audio": {"output": {"voice": "marin"}}}))
    assert err["code"] == "cannot_update_voice"
    assert update(session, {"audio": {"output": {"voice": "cedar"}}})[0]["type"] == "session.updated"


def test_appended_audio_is_kept_byte_for_byte() -> None:
    session = manual_session()
    frames = [bytes([i % 256]) * 160 for i in range(30)]
    append_all(session, frames)
    assert bytes(session.appended_audio) == b"".join(frames)
    assert [e["type"] for e in session.received_events].count("input_audio_buffer.append") == 30


def test_session_expires() -> None:
    session = new_session(max_session_s=60.0)
    assert session.next_deadline() == pytest.approx(60.0)
    assert session.tick(59.0) == []
    [expired] = [json.loads(t) for t in session.tick(60.0)]
    assert expired["error"]["code"] == "session_expired"
    assert expired["error"]["message"] == "Your session hit the maximum duration of 1 minutes."
    assert session.close_requested is not None
    assert session.receive(json.dumps({"type": "response.create"}), 61.0) == []


def test_event_ids_are_unique() -> None:
    session = manual_session(response_audio_ms=2000)
    send(session, {"type": "response.create"})
    drain(session)
    ids = [e["event_id"] for e in session.emitted_events]
    assert len(ids) == len(set(ids))


def test_lowpass_has_60_db_stopband_above_4_khz() -> None:
    taps = design_lowpass(3600.0, 24000)
    spectrum = np.abs(np.fft.rfft(taps, 1 << 16))
    freqs = np.fft.rfftfreq(1 << 16, 1 / 24000)
    assert 20 * np.log10(spectrum[freqs >= 4000].max()) < -60
    assert abs(20 * np.log10(spectrum[freqs <= 3000]).min()) < 0.1  # flat passband
    assert len(assistant_audio(PCMA)) == len(assistant_audio(PCM)) // 6
