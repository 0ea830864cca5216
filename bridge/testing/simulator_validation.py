"""Validation of client input the way the GA Realtime endpoint does it, and its ``error`` events.

The real API answers a bad field with an ``error`` event (``invalid_request_error``) whose ``code``,
``message`` and ``param`` name the field; the session stays open and a rejected ``session.update``
changes nothing. The helpers here raise :class:`ClientError` with those three values; the session
turns it into the event. Error texts follow live captures of ``wss://api.openai.com/v1/realtime``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from bridge.testing.simulator_audio import PCM, PCM_RATE, PCMA, PCMU

JSON = dict[str, Any]

VOICES: Final = frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"})

SESSION_KEYS: Final = frozenset(
    {
        "type",
        "model",
        "output_modalities",
        "instructions",
        "audio",
        "include",
        "max_output_tokens",
        "tools",
        "tool_choice",
        "tracing",
        "truncation",
        "prompt",
        "reasoning",
        "parallel_tool_calls",
    }
)
AUDIO_INPUT_KEYS: Final = frozenset({"format", "transcription", "noise_reduction", "turn_detection"})
AUDIO_OUTPUT_KEYS: Final = frozenset({"format", "voice", "speed"})
SERVER_VAD_KEYS: Final = frozenset(
    {
        "type",
        "threshold",
        "prefix_padding_ms",
        "silence_duration_ms",
        "create_response",
        "interrupt_response",
        "idle_timeout_ms",
    }
)
SEMANTIC_VAD_KEYS: Final = frozenset({"type", "eagerness", "create_response", "interrupt_response"})
TRANSCRIPTION_KEYS: Final = frozenset({"model", "language", "prompt", "delay", "keywords", "languages"})
RESPONSE_KEYS: Final = frozenset(
    {
        "output_modalities",
        "instructions",
        "audio",
        "conversation",
        "input",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "metadata",
        "prompt",
    }
)

# semantic_vad decides from the words; the energy stand-in waits longer the less eager it is.
SEMANTIC_SILENCE_MS: Final = {"low": 1500, "medium": 800, "auto": 800, "high": 400}


class ClientError(Exception):
    """A client event the real API would answer with an ``error`` event (the session stays open)."""

    def __init__(self, code: str | None, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def normalize_turn_detection(td: JSON) -> JSON:
    if td["type"] == "server_vad":
        return {
            "type": "server_vad",
            "threshold": td.get("threshold", 0.5),
            "prefix_padding_ms": td.get("prefix_padding_ms", 300),
            "silence_duration_ms": td.get("silence_duration_ms", 500),
            "idle_timeout_ms": td.get("idle_timeout_ms"),
            "create_response": td.get("create_response", True),
            "interrupt_response": td.get("interrupt_response", True),
        }
    return {
        "type": "semantic_vad",
        "eagerness": td.get("eagerness", "auto"),
        "create_response": td.get("create_response", True),
        "interrupt_response": td.get("interrupt_response", True),
    }


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def invalid_type(param: str, expected: str, value: Any) -> ClientError:
    return ClientError(
        "invalid_type",
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param,
    )


def unknown(param: str) -> ClientError:
    return ClientError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def missing(param: str) -> ClientError:
    return ClientError("missing_required_parameter", f"Missing required parameter: '{param}'.", param)


def check_keys(obj: JSON, allowed: frozenset[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise unknown(f"{prefix}.{key}")


def require_obj(value: Any, param: str) -> JSON:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_format(value: Any, param: str) -> JSON:
    """Validate a GA audio format object; returns it normalised."""
    fmt = require_obj(value, param)
    if "type" not in fmt:
        raise missing(f"{param}.type")
    kind = fmt["type"]
    if kind not in (PCM, PCMU, PCMA):
        raise ClientError(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: 'audio/pcm', 'audio/pcmu', and 'audio/pcma'.",
            f"{param}.type",
        )
    if kind != PCM:
        check_keys(fmt, frozenset({"type"}), param)
        return {"type": kind}
    check_keys(fmt, frozenset({"type", "rate"}), param)
    if "rate" not in fmt:
        # The real API rejects audio/pcm without a rate (the GA type lists rate as required for it).
        raise missing(f"{param}.rate")
    rate = fmt["rate"]
    if not is_int(rate):
        raise invalid_type(f"{param}.rate", "an integer", rate)
    # Codes as seen live: 16000 got integer_below_min_value ("Expected a value >= 24000").
    if rate < PCM_RATE:
        raise ClientError(
            "integer_below_min_value",
            f"Invalid '{param}.rate': integer below minimum value. "
            f"Expected a value >= {PCM_RATE}, but got {rate} instead.",
            f"{param}.rate",
        )
    if rate > PCM_RATE:
        raise ClientError(
            "integer_above_max_value",
            f"Invalid '{param}.rate': integer above maximum value. "
            f"Expected a value <= {PCM_RATE}, but got {rate} instead.",
            f"{param}.rate",
        )
    return {"type": PCM, "rate": PCM_RATE}


def validate_turn_detection(value: Any, param: str) -> JSON | None:
    if value is None:
        return None
    td = require_obj(value, param)
    if "type" not in td:
        raise missing(f"{param}.type")
    kind = td["type"]
    if kind == "server_vad":
        check_keys(td, SERVER_VAD_KEYS, param)
    elif kind == "semantic_vad":
        check_keys(td, SEMANTIC_VAD_KEYS, param)
        eagerness = td.get("eagerness", "auto")
        if eagerness not in SEMANTIC_SILENCE_MS:
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{eagerness}'. Supported values are: 'low', 'medium', 'high', and 'auto'.",
                f"{param}.eagerness",
            )
    else:
        raise ClientError(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: 'server_vad' and 'semantic_vad'.",
            f"{param}.type",
        )
    for key in ("create_response", "interrupt_response"):
        # `create_response: null` is rejected as invalid_type by the real API (seen live).
        if key in td and not isinstance(td[key], bool):
            raise invalid_type(f"{param}.{key}", "a boolean", td[key])
    if "threshold" in td:
        threshold = td["threshold"]
        if not is_number(threshold):
            raise invalid_type(f"{param}.threshold", "a decimal", threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ClientError(
                "invalid_value",
                f"Invalid '{param}.threshold': expected a value between 0.0 and 1.0, got {threshold}.",
                f"{param}.threshold",
            )
    for key in ("prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"):
        if key in td and not (td[key] is None and key == "idle_timeout_ms"):
            v = td[key]
            if not is_int(v):
                raise invalid_type(f"{param}.{key}", "an integer", v)
            if v < 0:
                raise ClientError(
                    "integer_below_min_value",
                    f"Invalid '{param}.{key}': integer below minimum value. "
                    f"Expected a value >= 0, but got {v} instead.",
                    f"{param}.{key}",
                )
    return normalize_turn_detection(td)


def validate_voice(value: Any, param: str) -> Any:
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return {"id": value["id"]}
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    if value not in VOICES:
        listed = ", ".join(f"'{v}'" for v in sorted(VOICES))
        raise ClientError("invalid_value", f"Invalid value: '{value}'. Supported values are: {listed}.", param)
    return value


def validate_modalities(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise invalid_type(param, "an array of strings", value)
    if len(value) != 1 or value[0] not in ("audio", "text"):
        # Both at once is not allowed in GA (https://platform.openai.com/docs/api-reference/realtime).
        raise ClientError(
            "invalid_value",
            f"Invalid value for '{param}': expected exactly one of 'audio' or 'text'.",
            param,
        )
    return list(value)


def validate_max_tokens(value: Any, param: str) -> Any:
    if value == "inf":
        return value
    if not is_int(value):
        raise invalid_type(param, "an integer or 'inf'", value)
    if not 1 <= value <= 4096:
        raise ClientError("invalid_value", f"Invalid '{param}': expected a value between 1 and 4096.", param)
    return value


def error_payload(
    event_id: str, code: str | None, message: str, param: str | None, client_event_id: str | None
) -> JSON:
    return {
        "type": "error",
        "event_id": event_id,
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }


def error_event(code: str | None, message: str, *, event_id: str = "event_sim_error") -> str:
    """A connection-level ``error`` event (auth, beta shape, model), for the server to send before closing."""
    return json.dumps(error_payload(event_id, code, message, None, None), separators=(",", ":"))
