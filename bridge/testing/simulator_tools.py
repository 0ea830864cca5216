"""Tools in the Realtime simulator: GA ``function`` and ``mcp`` tool validation, and call triggers.

The real model decides by itself when to call a tool; a test cannot wait for that. The simulator
calls tools only on a **trigger** set in its options: "on the first response after caller turn N,
(optionally say a short preamble, then) call these tools with these arguments". Everything else
follows the GA protocol as the real endpoint speaks it (event names and fields from the ``openai``
package's ``types/realtime``; guides: https://developers.openai.com/api/docs/guides/realtime-conversations
and https://developers.openai.com/api/docs/guides/realtime-mcp):

* ``session.update`` / ``response.create`` accept ``tools`` (``function`` and ``mcp``) and
  ``tool_choice`` (``auto``, ``none``, ``required``, ``{"type": "function", "name"}``,
  ``{"type": "mcp", "server_label"[, "name"]}``), validated like the API (bad shapes are ``error``
  events naming the field).
* A triggered function call appears as a ``function_call`` output item with a ``call_id``; the
  client answers with a ``function_call_output`` item for that ``call_id`` and a ``response.create``,
  and that reply's transcript carries the output text.
* An MCP server is "listed" after the update that declares it (``mcp_list_tools.*``); a triggered
  MCP call runs inside the response (``response.mcp_call*``) and the same response then speaks its
  result, because the API, not the client, runs MCP tools.

A trigger never calls a tool the session (or the response) did not declare: such a call is skipped
and recorded in ``SimulatedSession.skipped_calls`` with the reason, so a test sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from bridge.testing.simulator_validation import (
    JSON,
    ClientError,
    check_keys,
    invalid_type,
    missing,
    require_obj,
)

_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FUNCTION_KEYS: Final = frozenset({"type", "name", "description", "parameters"})
_MCP_KEYS: Final = frozenset(
    {
        "type",
        "server_label",
        "server_url",
        "connector_id",
        "tunnel_id",
        "allowed_tools",
        "allowed_callers",
        "require_approval",
        "headers",
        "authorization",
        "server_description",
        "defer_loading",
    }
)
_TOOL_FILTER_KEYS: Final = frozenset({"tool_names", "read_only"})
TOOL_CHOICE_MODES: Final = ("auto", "none", "required")

DEFAULT_TOOL_REPLY: Final = "Thanks for waiting. {output}"
DEFAULT_MCP_OUTPUT: Final = "The {name} lookup on {server_label} found what you asked for."
DEFAULT_MCP_FAILURE_REPLY: Final = "Sorry, I could not reach the {name} tool just now."
DEFAULT_PREAMBLE_MS: Final = 1500


# ------------------------------------------------------------------------------------- triggers


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the simulated model makes.

    ``arguments``: a mapping is sent as its JSON text; a string is sent verbatim, so a test can
    make the model produce arguments that are not JSON or break the tool's schema.
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class McpCall:
    """A call the simulated model makes to a tool of a declared remote MCP server.

    The API runs MCP calls itself: ``fail`` picks ``response.mcp_call.failed`` (with an
    ``error``) over ``.completed`` (with ``output``). ``output`` may use ``{name}``,
    ``{server_label}`` and ``{arguments}``.
    """

    server_label: str
    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    fail: bool = False
    output: str = DEFAULT_MCP_OUTPUT
    error_message: str = "MCP server returned HTTP 500"

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ToolTrigger:
    """On the first in-band response that starts once ``after_turn`` caller turns have been
    committed in this session (VAD or manual commits of caller audio; 0: the very first response),
    say ``preamble`` (if set, ``preamble_ms`` of audio), then make ``calls`` in that one response.

    Each trigger fires at most once per session. Function calls end the response (the model waits
    for their outputs); MCP calls are followed, in the same response, by a spoken answer.
    """

    after_turn: int
    calls: tuple[ToolCall | McpCall, ...]
    preamble: str | None = None
    preamble_ms: int = DEFAULT_PREAMBLE_MS

    def __post_init__(self) -> None:
        if self.after_turn < 0:
            raise ValueError("after_turn must be >= 0")
        if not self.calls:
            raise ValueError("a trigger needs at least one call")
        if self.preamble_ms <= 0:
            raise ValueError("preamble_ms must be positive")


# -------------------------------------------------------------------------------------- records


@dataclass(slots=True)
class ToolCallRecord:
    """A tool call the simulator made (function or MCP), kept in ``SimulatedSession.tool_calls``."""

    kind: str  # "function" or "mcp"
    name: str
    arguments: str  # the JSON text as sent
    item_id: str
    response_id: str
    call_id: str | None = None  # function calls only
    server_label: str | None = None  # MCP calls only
    status: str = "completed"  # MCP: "completed" or "failed"


@dataclass(frozen=True, slots=True)
class ToolOutputRecord:
    """A ``function_call_output`` the client sent, kept in ``SimulatedSession.tool_outputs``."""

    call_id: str
    output: str
    item_id: str
    name: str | None  # the function it answers (None when the call came from a seeded item without name)
    at: float


@dataclass(frozen=True, slots=True)
class SkippedCall:
    """A triggered call the simulated model could not make, and why (kept in ``skipped_calls``)."""

    name: str
    server_label: str | None
    reason: str
    response_id: str


@dataclass(frozen=True, slots=True)
class McpListing:
    """One ``mcp_list_tools`` the simulator ran after a ``session.update`` (``mcp_listings``)."""

    server_label: str
    server_url: str | None
    item_id: str
    tools: tuple[str, ...]
    failed: bool


# ----------------------------------------------------------------------------------- validation


def validate_tools(value: Any, param: str) -> list[JSON]:
    """Validate a GA ``tools`` array (``function`` and ``mcp`` entries); returns it as given."""
    if not isinstance(value, list):
        raise invalid_type(param, "an array", value)
    names: set[str] = set()
    labels: set[str] = set()
    out: list[JSON] = []
    for i, raw in enumerate(value):
        p = f"{param}[{i}]"
        tool = require_obj(raw, p)
        if "type" not in tool:
            raise missing(f"{p}.type")
        kind = tool["type"]
        if kind == "function":
            name = _validate_function(tool, p)
            if name in names:
                raise ClientError("invalid_value", f"Duplicate tool name: '{name}'.", f"{p}.name")
            names.add(name)
        elif kind == "mcp":
            label = _validate_mcp(tool, p)
            if label in labels:
                raise ClientError("invalid_value", f"Duplicate MCP server_label: '{label}'.", f"{p}.server_label")
            labels.add(label)
        else:
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: 'function' and 'mcp'.",
                f"{p}.type",
            )
        out.append(dict(tool))
    return out


def _check_name(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    if not _NAME_PATTERN.match(value):
        raise ClientError(
            "invalid_value",
            f"Invalid '{param}': string does not match pattern. Expected a string that matches the "
            "pattern '^[a-zA-Z0-9_-]{1,64}$'.",
            param,
        )
    return value


def _validate_function(tool: JSON, p: str) -> str:
    check_keys(tool, _FUNCTION_KEYS, p)
    if "name" not in tool:
        raise missing(f"{p}.name")
    name = _check_name(tool["name"], f"{p}.name")
    if "description" in tool and not isinstance(tool["description"], str):
        raise invalid_type(f"{p}.description", "a string", tool["description"])
    if "parameters" in tool:
        schema = tool["parameters"]
        if not isinstance(schema, dict):
            raise invalid_type(f"{p}.parameters", "an object", schema)
        # Function parameters must be an object schema (the API's wording for other types).
        if schema.get("type") != "object":
            got = schema.get("type")
            raise ClientError(
                "invalid_function_parameters",
                f"Invalid schema for function '{name}': schema must be a JSON Schema of 'type: \"object\"', "
                f"got 'type: \"{got}\"'.",
                f"{p}.parameters",
            )
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            raise ClientError(
                "invalid_function_parameters",
                f"Invalid schema for function '{name}': 'properties' must be an object.",
                f"{p}.parameters",
            )
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ClientError(
                "invalid_function_parameters",
                f"Invalid schema for function '{name}': 'required' must be an array of strings.",
                f"{p}.parameters",
            )
    return name


def _validate_mcp(tool: JSON, p: str) -> str:
    check_keys(tool, _MCP_KEYS, p)
    if "server_label" not in tool:
        raise missing(f"{p}.server_label")
    label = _check_name(tool["server_label"], f"{p}.server_label")
    if not any(k in tool for k in ("server_url", "connector_id", "tunnel_id")):
        raise ClientError(
            "missing_required_parameter",
            f"Missing required parameter: one of '{p}.server_url', '{p}.connector_id' or '{p}.tunnel_id'.",
            f"{p}.server_url",
        )
    if "server_url" in tool:
        url = tool["server_url"]
        if not isinstance(url, str):
            raise invalid_type(f"{p}.server_url", "a string", url)
        if not url.startswith(("https://", "http://")):
            raise ClientError("invalid_value", f"Invalid URL in '{p}.server_url': '{url}'.", f"{p}.server_url")
    for key in ("authorization", "server_description"):
        if key in tool and tool[key] is not None and not isinstance(tool[key], str):
            raise invalid_type(f"{p}.{key}", "a string", tool[key])
    headers = tool.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise invalid_type(f"{p}.headers", "an object", headers)
        for k, v in headers.items():
            if not isinstance(v, str):
                raise invalid_type(f"{p}.headers.{k}", "a string", v)
    allowed = tool.get("allowed_tools")
    if allowed is not None:
        _validate_tool_filter(allowed, f"{p}.allowed_tools", list_ok=True)
    approval = tool.get("require_approval")
    if approval is not None and approval not in ("always", "never"):
        if not isinstance(approval, dict):
            raise ClientError(
                "invalid_value",
                f"Invalid value for '{p}.require_approval': expected 'always', 'never' or a filter object.",
                f"{p}.require_approval",
            )
        check_keys(approval, frozenset({"always", "never"}), f"{p}.require_approval")
        for key, value in approval.items():
            if value is not None:
                _validate_tool_filter(value, f"{p}.require_approval.{key}", list_ok=False)
    return label


def _validate_tool_filter(value: Any, param: str, *, list_ok: bool) -> None:
    if isinstance(value, list) and list_ok:
        if not all(isinstance(v, str) for v in value):
            raise invalid_type(param, "an array of strings", value)
        return
    flt = require_obj(value, param)
    check_keys(flt, _TOOL_FILTER_KEYS, param)
    names = flt.get("tool_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(v, str) for v in names)):
        raise invalid_type(f"{param}.tool_names", "an array of strings", names)
    if "read_only" in flt and flt["read_only"] is not None and not isinstance(flt["read_only"], bool):
        raise invalid_type(f"{param}.read_only", "a boolean", flt["read_only"])


def validate_tool_choice(value: Any, param: str, tools: list[JSON]) -> Any:
    """Validate ``tool_choice`` against the tools it will be used with; returns it as given."""
    if isinstance(value, str):
        if value not in TOOL_CHOICE_MODES:
            raise ClientError(
                "invalid_value",
                f"Invalid value: '{value}'. Supported values are: 'none', 'auto', and 'required'.",
                param,
            )
        return value
    choice = require_obj(value, param)
    if "type" not in choice:
        raise missing(f"{param}.type")
    if choice["type"] == "function":
        check_keys(choice, frozenset({"type", "name"}), param)
        if "name" not in choice:
            raise missing(f"{param}.name")
        name = choice["name"]
        if not any(t.get("type") == "function" and t.get("name") == name for t in tools):
            raise ClientError(
                "invalid_value", f"Tool choice 'function' with name '{name}' not found in 'tools' parameter.", param
            )
        return dict(choice)
    if choice["type"] == "mcp":
        check_keys(choice, frozenset({"type", "server_label", "name"}), param)
        if "server_label" not in choice:
            raise missing(f"{param}.server_label")
        label = choice["server_label"]
        if not any(t.get("type") == "mcp" and t.get("server_label") == label for t in tools):
            raise ClientError(
                "invalid_value",
                f"Tool choice 'mcp' with server_label '{label}' not found in 'tools' parameter.",
                param,
            )
        return dict(choice)
    raise ClientError(
        "invalid_value",
        f"Invalid value: '{choice['type']}'. Supported values are: 'function' and 'mcp'.",
        f"{param}.type",
    )


def allowed_tool_names(tool: JSON) -> set[str] | None:
    """The MCP tool names ``allowed_tools`` permits (None: no name filter)."""
    allowed = tool.get("allowed_tools")
    if isinstance(allowed, list):
        return {str(n) for n in allowed}
    if isinstance(allowed, dict) and isinstance(allowed.get("tool_names"), list):
        return {str(n) for n in allowed["tool_names"]}
    return None


def needs_approval(tool: JSON, name: str) -> bool:
    """Whether calling ``name`` on this MCP server would need an approval round trip first."""
    approval = tool.get("require_approval")
    if approval is None or approval == "always":
        # The API's default for require_approval is "always" (https://developers.openai.com/api/docs/guides/tools-connectors-mcp).
        return True
    if approval == "never":
        return False
    never = approval.get("never") or {}
    names = never.get("tool_names")
    return not (isinstance(names, list) and name in names)


def why_not_callable(call: ToolCall | McpCall, tools: list[JSON], tool_choice: Any) -> str | None:
    """None when the model may make ``call`` with these tools and this choice, else the reason."""
    if tool_choice == "none":
        return "tool_choice is 'none'"
    if isinstance(call, ToolCall):
        if not any(t.get("type") == "function" and t.get("name") == call.name for t in tools):
            return f"function '{call.name}' is not among the declared tools"
        if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
            if tool_choice.get("name") != call.name:
                return f"tool_choice forces function '{tool_choice.get('name')}'"
        elif isinstance(tool_choice, dict):
            return f"tool_choice forces MCP server '{tool_choice.get('server_label')}'"
        return None
    server = next((t for t in tools if t.get("type") == "mcp" and t.get("server_label") == call.server_label), None)
    if server is None:
        return f"MCP server '{call.server_label}' is not among the declared tools"
    allowed = allowed_tool_names(server)
    if allowed is not None and call.name not in allowed:
        return f"'{call.name}' is not in allowed_tools of MCP server '{call.server_label}'"
    if needs_approval(server, call.name):
        return "the MCP server requires approval for this tool (approval requests are not simulated)"
    if isinstance(tool_choice, dict):
        if tool_choice.get("type") == "function":
            return f"tool_choice forces function '{tool_choice.get('name')}'"
        if tool_choice.get("server_label") != call.server_label or tool_choice.get("name") not in (None, call.name):
            return "tool_choice forces another MCP tool"
    return None


def mcp_listed_tools(server: JSON, triggers: tuple[ToolTrigger, ...]) -> tuple[str, ...]:
    """What a simulated MCP server lists: the names allowed_tools gives, else the ones triggers use."""
    label = server.get("server_label")
    allowed = allowed_tool_names(server)
    used = [c.name for t in triggers for c in t.calls if isinstance(c, McpCall) and c.server_label == label]
    names = sorted(allowed) if allowed is not None else list(dict.fromkeys(used))
    return tuple(names) if names else ("lookup",)


def mcp_identity(server: JSON) -> str:
    """What makes a declared MCP server "the same" across updates (a change is listed again)."""
    keys = ("server_label", "server_url", "connector_id", "tunnel_id", "allowed_tools", "headers", "authorization")
    return json.dumps({k: server.get(k) for k in keys}, sort_keys=True)


# ----------------------------------------------------------------------------- command line specs


def _parse_arguments(text: str, spec: str) -> Any:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"arguments in {spec!r} are not JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ValueError(f"arguments in {spec!r} must be a JSON object")
    return value


def _parse_turn(text: str, spec: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{spec!r}: the turn must be a whole number >= 0")
    return int(text)


def parse_tool_call(spec: str) -> tuple[int, ToolCall]:
    """``TURN:NAME[:ARGS_JSON]`` (``bridge simulator --tool-call``), e.g. ``1:end_call:{"reason":"done"}``."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[1]:
        raise ValueError(f"tool calls look like TURN:NAME[:ARGS_JSON], got {spec!r}")
    return _parse_turn(parts[0], spec), ToolCall(parts[1], _parse_arguments(parts[2] if len(parts) > 2 else "", spec))


def parse_mcp_call(spec: str, *, fail: bool = False) -> tuple[int, McpCall]:
    """``TURN:SERVER_LABEL:NAME[:ARGS_JSON]`` (``bridge simulator --mcp-call``)."""
    parts = spec.split(":", 3)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        raise ValueError(f"MCP calls look like TURN:SERVER_LABEL:NAME[:ARGS_JSON], got {spec!r}")
    args = _parse_arguments(parts[3] if len(parts) > 3 else "", spec)
    return _parse_turn(parts[0], spec), McpCall(parts[1], parts[2], args, fail=fail)


def parse_preamble(spec: str) -> tuple[int, str]:
    """``TURN:TEXT`` (``bridge simulator --preamble``)."""
    turn, sep, text = spec.partition(":")
    if not sep or not text:
        raise ValueError(f"preambles look like TURN:TEXT, got {spec!r}")
    return _parse_turn(turn, spec), text


def build_triggers(
    calls: Sequence[tuple[int, ToolCall]],
    preambles: Sequence[tuple[int, str]] = (),
    mcp_calls: Sequence[tuple[int, McpCall]] = (),
) -> tuple[ToolTrigger, ...]:
    """Group calls by turn into one trigger each (several calls in one response), with preambles.

    Within a turn, function calls come first, then MCP calls, each in the order given.
    """
    by_turn: dict[int, list[ToolCall | McpCall]] = {}
    for turn, call in calls:
        by_turn.setdefault(turn, []).append(call)
    for turn, mcp in mcp_calls:
        by_turn.setdefault(turn, []).append(mcp)
    said = dict(preambles)
    for turn in said:
        if turn not in by_turn:
            raise ValueError(f"a preamble for turn {turn}, which has no tool call")
    return tuple(ToolTrigger(turn, tuple(by_turn[turn]), preamble=said.get(turn)) for turn in sorted(by_turn))


__all__ = [
    "DEFAULT_MCP_FAILURE_REPLY",
    "DEFAULT_MCP_OUTPUT",
    "DEFAULT_PREAMBLE_MS",
    "DEFAULT_TOOL_REPLY",
    "McpCall",
    "McpListing",
    "SkippedCall",
    "ToolCall",
    "ToolCallRecord",
    "ToolOutputRecord",
    "ToolTrigger",
    "build_triggers",
    "mcp_identity",
    "mcp_listed_tools",
    "parse_mcp_call",
    "parse_preamble",
    "parse_tool_call",
    "validate_tool_choice",
    "validate_tools",
    "why_not_callable",
]
