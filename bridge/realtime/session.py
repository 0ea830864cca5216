"""The GA ``session.update`` a call sends, built from its session settings. Pure.

GA shape only (https://platform.openai.com/docs/api-reference/realtime-client-events/session/update):
``session.type`` is required, audio settings are nested under ``audio.input``/``audio.output``,
formats are MIME-typed objects. Beta keys are rejected by the
API, and a missing ``session.type`` makes the server keep its defaults silently, so this module
is the one place the shape is written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.config import LocalVad, SemanticVad, ServerVad, SessionSettings

AUDIO_FORMATS: dict[str, dict[str, Any]] = {
    "pcmu": {"type": "audio/pcmu"},
    "pcma": {"type": "audio/pcma"},
    "pcm16": {"type": "audio/pcm", "rate": 24000},
}


def turn_detection_wire(td: ServerVad | SemanticVad | LocalVad) -> dict[str, Any] | None:
    """The GA ``turn_detection`` object; ``None`` (JSON null) when the bridge detects turns."""
    if isinstance(td, LocalVad):
        return None
    data = td.model_dump(exclude_none=True)
    return data


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """``{name}`` from the stream's custom parameters; everything else is left as written.

    A plain pattern rather than ``str.format``: instructions are prose that may quote JSON or
    contain stray braces, and an unknown name must survive untouched (``{x!r}``, ``{x[0]}``).
    """
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def build_session_update(
    settings: SessionSettings, parameters: Mapping[str, str] | None = None, tools: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``session.update`` client event for one call; ``tools`` adds ``tools``/``tool_choice``."""
    fmt = AUDIO_FORMATS[settings.audio_format]
    audio_in: dict[str, Any] = {
        "format": dict(fmt),
        # Always sent, null included: leaving it out would keep the server's default VAD on.
        "turn_detection": turn_detection_wire(settings.turn_detection),
    }
    if settings.transcription is not None:
        audio_in["transcription"] = settings.transcription.model_dump(exclude_none=True)
    if settings.noise_reduction is not None:
        audio_in["noise_reduction"] = {"type": settings.noise_reduction}
    session: dict[str, Any] = {
        "type": "realtime",
        "model": settings.model,
        "output_modalities": ["audio"],
        "instructions": fill_placeholders(settings.instructions, parameters or {}),
        "audio": {
            "input": audio_in,
            "output": {"format": dict(fmt), "voice": settings.voice},
        },
    }
    session.update(tools or {})
    return {"type": "session.update", "session": session}


def greeting_response(settings: SessionSettings, parameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``response.create`` that makes the model speak first."""
    assert settings.greeting is not None
    return {
        "type": "response.create",
        "response": {"instructions": fill_placeholders(settings.greeting, parameters or {})},
    }


def format_mismatch(sent: dict[str, Any], updated_session: Mapping[str, Any]) -> str | None:
    """Compare ``session.updated`` with what we asked for (a format the server did not apply is silent static:
    https://github.com/openai/openai-agents-js/pull/1366)."""
    try:
        audio = updated_session["audio"]
        got_in = audio["input"]["format"]["type"]
        got_out = audio["output"]["format"]["type"]
    except (KeyError, TypeError):
        return None  # a server that does not echo formats: nothing to compare
    want = sent["session"]["audio"]["input"]["format"]["type"]
    if got_in != want or got_out != want:
        return f"asked for {want} both ways, server uses {got_in} in and {got_out} out"
    return None
