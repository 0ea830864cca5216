"""The GA session.update, greeting and format check, validated against the openai package."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.config import LocalVad, SemanticVad, ServerVad, SessionSettings, Transcription
from bridge.realtime.session import (
    build_session_update,
    fill_placeholders,
    format_mismatch,
    greeting_response,
    turn_detection_wire,
)

try:
    from tests.openai_types import validate_client
except ModuleNotFoundError:  # bare `pytest` does not put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.openai_types import validate_client

BETA_SESSION_KEYS = {
    "modalities",
    "voice",
    "turn_detection",
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "input_audio_noise_reduction",
    "temperature",
    "max_response_output_tokens",
    "speed",
}


def _wire(event: dict[str, Any]) -> dict[str, Any]:
    """What goes on the socket, read back: the event must survive json.dumps unchanged."""
    text = json.dumps(event)
    back: dict[str, Any] = json.loads(text)
    assert back == event
    return back


def _all_keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _all_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _all_keys(v)}
    return set()


def _assert_ga_only(event: dict[str, Any]) -> None:
    session = event["session"]
    assert not BETA_SESSION_KEYS & set(session), set(session)
    assert not {"input_audio_format", "output_audio_format", "modalities", "input_audio_transcription"} & _all_keys(
        event
    )
    assert session["type"] == "realtime"


# --- turn detection modes -----------------------------------------------------------------


def test_server_vad_with_every_field() -> None:
    td = ServerVad(
        threshold=0.62,
        prefix_padding_ms=240,
        silence_duration_ms=650,
        idle_timeout_ms=8000,
        create_response=False,
        interrupt_response=False,
    )
    event = _wire(build_session_update(SessionSettings(turn_detection=td)))
    assert event["session"]["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.62,
        "prefix_padding_ms": 240,
        "silence_duration_ms": 650,
        "idle_timeout_ms": 8000,
        "create_response": False,
        "interrupt_response": False,
    }
    model = validate_client(event)
    got = model.session.audio.input.turn_detection
    assert got.type == "server_vad"
    assert (got.threshold, got.prefix_padding_ms, got.silence_duration_ms, got.idle_timeout_ms) == (
        0.62,
        240,
        650,
        8000,
    )
    _assert_ga_only(event)


def test_server_vad_defaults_omit_idle_timeout() -> None:
    event = _wire(build_session_update(SessionSettings()))
    td = event["session"]["audio"]["input"]["turn_detection"]
    assert td == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }
    validate_client(event)


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
def test_semantic_vad(eagerness: str) -> None:
    td = SemanticVad(eagerness=eagerness, create_response=True, interrupt_response=False)  # type: ignore[arg-type]
    event = _wire(build_session_update(SessionSettings(turn_detection=td)))
    assert event["session"]["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": eagerness,
        "create_response": True,
        "interrupt_response": False,
    }
    assert validate_client(event).session.audio.input.turn_detection.eagerness == eagerness
    _assert_ga_only(event)


def test_local_vad_sends_explicit_json_null() -> None:
    event = build_session_update(SessionSettings(turn_detection=LocalVad()))
    text = json.dumps(event)
    audio_in = json.loads(text)["session"]["audio"]["input"]
    assert "turn_detection" in audio_in
    assert audio_in["turn_detection"] is None
    assert '"turn_detection": null' in text
    assert validate_client(event).session.audio.input.turn_detection is None
    # None of the bridge's own VAD settings leak onto the wire.
    assert not {"start_dbfs", "stop_dbfs", "start_ms", "end_silence_ms"} & _all_keys(event)


def test_turn_detection_wire_is_a_fresh_dict() -> None:
    td = ServerVad()
    wire = turn_detection_wire(td)
    assert wire is not None
    wire["threshold"] = 0.9
    assert td.threshold == 0.5


# --- a profile with every setting ---------------------------------------------------------


@pytest.mark.parametrize(
    ("audio_format", "wire_format"),
    [
        ("pcmu", {"type": "audio/pcmu"}),
        ("pcma", {"type": "audio/pcma"}),
        ("pcm16", {"type": "audio/pcm", "rate": 24000}),
    ],
)
def test_every_setting(audio_format: str, wire_format: dict[str, Any]) -> None:
    settings = SessionSettings(
        model="gpt-realtime-mini",
        voice="cedar",
        instructions="You help {caller_name} book tables at {restaurant}.",
        audio_format=audio_format,  # type: ignore[arg-type]
        turn_detection=SemanticVad(eagerness="low"),
        greeting="Greet {caller_name} warmly.",
        transcription=Transcription(model="gpt-4o-transcribe", language="fr", prompt="Restaurant names"),
        noise_reduction="near_field",
    )
    params = {"caller_name": "Amélie", "profile": "bookings"}
    event = _wire(build_session_update(settings, params))
    assert event == {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": "gpt-realtime-mini",
            "output_modalities": ["audio"],
            "instructions": "You help Amélie book tables at {restaurant}.",
            "audio": {
                "input": {
                    "format": wire_format,
                    "turn_detection": {
                        "type": "semantic_vad",
                        "eagerness": "low",
                        "create_response": True,
                        "interrupt_response": True,
                    },
                    "transcription": {"model": "gpt-4o-transcribe", "language": "fr", "prompt": "Restaurant names"},
                    "noise_reduction": {"type": "near_field"},
                },
                "output": {"format": wire_format, "voice": "cedar"},
            },
        },
    }
    _assert_ga_only(event)
    model = validate_client(event)
    session = model.session
    assert session.type == "realtime"
    assert session.model == "gpt-realtime-mini"
    assert session.output_modalities == ["audio"]
    assert session.audio.input.format.type == wire_format["type"]
    assert session.audio.output.format.type == wire_format["type"]
    if audio_format == "pcm16":
        assert session.audio.input.format.rate == 24000
        assert session.audio.output.format.rate == 24000
    assert session.audio.output.voice == "cedar"
    assert session.audio.input.transcription.model == "gpt-4o-transcribe"
    assert session.audio.input.transcription.language == "fr"
    assert session.audio.input.noise_reduction.type == "near_field"

    greeting = _wire(greeting_response(settings, params))
    assert greeting == {"type": "response.create", "response": {"instructions": "Greet Amélie warmly."}}
    assert validate_client(greeting).response.instructions == "Greet Amélie warmly."


def test_transcription_without_language_omits_it() -> None:
    event = _wire(build_session_update(SessionSettings(transcription=Transcription())))
    assert event["session"]["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    validate_client(event)


def test_minimal_settings_have_no_optional_blocks() -> None:
    event = _wire(build_session_update(SessionSettings()))
    audio_in = event["session"]["audio"]["input"]
    assert set(audio_in) == {"format", "turn_detection"}
    assert event["session"]["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin"}
    _assert_ga_only(event)


def test_input_and_output_formats_are_separate_objects() -> None:
    event = build_session_update(SessionSettings(audio_format="pcm16"))
    audio = event["session"]["audio"]
    assert audio["input"]["format"] is not audio["output"]["format"]
    audio["input"]["format"]["rate"] = 16000
    assert build_session_update(SessionSettings(audio_format="pcm16"))["session"]["audio"]["input"]["format"] == {
        "type": "audio/pcm",
        "rate": 24000,
    }


def test_pcm_rate_other_than_24000_is_rejected_by_the_sdk() -> None:
    # Keeps the adapter honest: it does check the format object.
    event = build_session_update(SessionSettings(audio_format="pcm16"))
    event["session"]["audio"]["input"]["format"]["rate"] = 16000
    with pytest.raises(ValueError):
        validate_client(event)


# --- placeholders -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello {caller_name}.", "Hello Ann."),
        ("{caller_name}{caller_name}", "AnnAnn"),
        ("Hello {unknown}.", "Hello {unknown}."),
        ("Hello {}.", "Hello {}."),
        ("Hello {0}.", "Hello {0}."),
        ("Hello {caller_name!r}.", "Hello {caller_name!r}."),
        ("Hello {x[0]} {caller_name}.", "Hello {x[0]} Ann."),
        ("Hello {x.y} {caller_name}.", "Hello {x.y} Ann."),
        ("Pad {x:>10}", "Pad {x:>10}"),
        ("Stray { brace and {caller_name}", "Stray { brace and Ann"),
        ("Stray } brace and {caller_name}", "Stray } brace and Ann"),
        ('Reply as JSON like {"name": "..."} to {caller_name}', 'Reply as JSON like {"name": "..."} to Ann'),
        ("{ caller_name }", "{ caller_name }"),
        ("no placeholders", "no placeholders"),
        ("", ""),
    ],
)
def test_fill_placeholders(text: str, expected: str) -> None:
    assert fill_placeholders(text, {"caller_name": "Ann"}) == expected


def test_placeholder_values_are_inserted_literally() -> None:
    # A value that itself looks like a placeholder or has braces is not expanded again.
    values = {"a": "{b}", "b": "B", "c": "\\1 {"}
    assert fill_placeholders("{a} {b} {c}", values) == "{b} B \\1 {"


def test_instructions_without_parameters() -> None:
    settings = SessionSettings(instructions="Hi {caller_name} {")
    assert build_session_update(settings)["session"]["instructions"] == "Hi {caller_name} {"
    assert build_session_update(settings, {})["session"]["instructions"] == "Hi {caller_name} {"


def test_greeting_response_without_parameters_validates() -> None:
    event = greeting_response(SessionSettings(greeting="Say hello."))
    assert event == {"type": "response.create", "response": {"instructions": "Say hello."}}
    validate_client(event)


# --- format_mismatch ----------------------------------------------------------------------


def _updated(fmt_in: str, fmt_out: str) -> dict[str, Any]:
    return {
        "type": "realtime",
        "audio": {"input": {"format": {"type": fmt_in}}, "output": {"format": {"type": fmt_out}, "voice": "marin"}},
    }


def test_format_mismatch_none_when_formats_match() -> None:
    sent = build_session_update(SessionSettings(audio_format="pcmu"))
    assert format_mismatch(sent, _updated("audio/pcmu", "audio/pcmu")) is None
    sent16 = build_session_update(SessionSettings(audio_format="pcm16"))
    assert format_mismatch(sent16, _updated("audio/pcm", "audio/pcm")) is None


@pytest.mark.parametrize(
    ("got_in", "got_out"), [("audio/pcm", "audio/pcm"), ("audio/pcmu", "audio/pcm"), ("audio/pcma", "audio/pcmu")]
)
def test_format_mismatch_detected(got_in: str, got_out: str) -> None:
    sent = build_session_update(SessionSettings(audio_format="pcmu"))
    problem = format_mismatch(sent, _updated(got_in, got_out))
    assert problem is not None
    assert "audio/pcmu" in problem
    assert got_in in problem and got_out in problem


@pytest.mark.parametrize(
    "session",
    [
        {},
        {"audio": None},
        {"audio": {}},
        {"audio": {"input": {}}},
        {"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
        {"audio": {"input": {"format": "audio/pcmu"}, "output": {"format": "audio/pcmu"}}},
    ],
)
def test_format_mismatch_none_when_formats_absent(session: dict[str, Any]) -> None:
    sent = build_session_update(SessionSettings())
    assert format_mismatch(sent, session) is None
