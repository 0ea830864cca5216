"""A call's tools: what the model is offered, how its calls are checked, what it is told back. Pure.

Webhook tools are the business's HTTP endpoints; ``end_call`` and ``transfer_call`` are bridge's
own; MCP servers are called by the Realtime API itself and only declared here. The model's
arguments are untrusted text: they are parsed and checked against the tool's JSON Schema before
anything leaves the bridge, and a call that fails the check is answered at once with what was
wrong, so the model can correct itself or tell the caller.

The request a webhook tool gets (its body is the contract tool authors rely on)::

    POST <url>
    {"tool": NAME, "arguments": {...}, "tool_call_id": CALL_ID,
     "call": {"id", "call_sid", "stream_sid", "profile", "from", "to", "parameters"}}

The shell adds ``X-Bridge-Timestamp`` and ``X-Bridge-Signature`` when it sends it (that needs the
clock); see :mod:`bridge.signing`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema

from bridge.config import Secrets, SessionSettings
from bridge.httpmsg import Failure, HttpRequest, HttpResult
from bridge.toolspec import WebhookTool
from bridge.vocabulary import ToolOutcome

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
# The model's arguments are JSON text; anything this long is a runaway, not a tool call.
MAX_ARGUMENTS_CHARS = 64 * 1024

_END_CALL_TOOL: dict[str, Any] = {
    "type": "function",
    "name": END_CALL,
    "description": (
        "End the phone call. Say goodbye first: the caller hears everything you said before the "
        "line is closed. Use it when the conversation is over or the caller asks to hang up."
    ),
    "parameters": {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Why the call is ending, in a few words."}},
        "additionalProperties": False,
    },
}


def _transfer_tool(targets: Mapping[str, str]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": TRANSFER_CALL,
        "description": (
            "Transfer the caller to a person or another line. Tell the caller first; the transfer "
            "happens once they have heard you. Only the listed targets exist."
        ),
        "parameters": {
            "type": "object",
            "properties": {"target": {"type": "string", "enum": sorted(targets)}},
            "required": ["target"],
            "additionalProperties": False,
        },
    }


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """A webhook tool call for the shell to make (the body is final; signing happens at send time)."""

    call_id: str
    name: str
    http: HttpRequest


@dataclass(frozen=True, slots=True)
class Checked:
    """A call that passed the checks: which kind of tool, and its parsed arguments."""

    kind: Literal["webhook", "end_call", "transfer_call"]
    name: str
    arguments: dict[str, Any]
    tool: WebhookTool | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A call refused before anything was sent; ``message`` goes to the model as the output."""

    name: str
    outcome: ToolOutcome
    message: str


class ToolBox:
    """The tools of one call's session."""

    def __init__(self, session: SessionSettings, secrets: Secrets) -> None:
        self._session = session
        self._secrets = secrets
        self._webhooks = {t.name: t for t in session.tools}
        self._validators: dict[str, Any] = {}
        self.transfer_targets: dict[str, str] = dict(session.transfer_targets)

    @property
    def empty(self) -> bool:
        s = self._session
        return not (s.tools or s.mcp_servers or s.end_call_tool or s.transfer_targets)

    def session_fields(self) -> dict[str, Any]:
        """``tools`` and ``tool_choice`` for the GA ``session.update`` (nothing without tools)."""
        if self.empty:
            return {}
        tools: list[dict[str, Any]] = [
            {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
            for t in self._session.tools
        ]
        if self._session.end_call_tool:
            tools.append(_END_CALL_TOOL)
        if self.transfer_targets:
            tools.append(_transfer_tool(self.transfer_targets))
        for server in self._session.mcp_servers:
            mcp: dict[str, Any] = {
                "type": "mcp",
                "server_label": server.server_label,
                "server_url": server.server_url,
                "require_approval": server.require_approval,
            }
            if server.server_description:
                mcp["server_description"] = server.server_description
            if server.allowed_tools is not None:
                mcp["allowed_tools"] = list(server.allowed_tools)
            if server.authorization is not None:
                mcp["authorization"] = self._secrets.resolve(server.authorization)
            if server.headers:
                mcp["headers"] = {k: self._secrets.resolve(v) for k, v in server.headers.items()}
            tools.append(mcp)
        return {"tools": tools, "tool_choice": self._session.tool_choice}

    def check(self, name: str, arguments: str) -> Checked | Refused:
        """Parse and check a call the model made."""
        if name == END_CALL and self._session.end_call_tool:
            kind: Literal["webhook", "end_call", "transfer_call"] = "end_call"
            schema = _END_CALL_TOOL["parameters"]
        elif name == TRANSFER_CALL and self.transfer_targets:
            kind, schema = "transfer_call", _transfer_tool(self.transfer_targets)["parameters"]
        elif name in self._webhooks:
            kind, schema = "webhook", self._webhooks[name].parameters
        else:
            return Refused(name, ToolOutcome.UNKNOWN_TOOL, f"There is no tool called {name!r}; do not call it again.")
        if len(arguments) > MAX_ARGUMENTS_CHARS:
            return Refused(name, ToolOutcome.INVALID_ARGUMENTS, f"The arguments are longer than {MAX_ARGUMENTS_CHARS}.")
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError) as exc:
            return Refused(name, ToolOutcome.INVALID_ARGUMENTS, f"The arguments are not valid JSON ({exc}).")
        if not isinstance(parsed, dict):
            return Refused(name, ToolOutcome.INVALID_ARGUMENTS, "The arguments must be a JSON object.")
        problems = self._problems(name, schema, parsed)
        if problems:
            text = "; ".join(problems)
            return Refused(
                name, ToolOutcome.INVALID_ARGUMENTS, f"The call was not made: the arguments are invalid: {text}."
            )
        return Checked(kind, name, parsed, self._webhooks.get(name))

    def _problems(self, name: str, schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
        validator = self._validators.get(name)
        if validator is None:
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            validator = self._validators[name] = cls(schema)
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        out = []
        for error in errors[:3]:
            where = "/".join(str(p) for p in error.absolute_path)
            out.append(f"{where}: {error.message}" if where else error.message)
        return out

    def request(self, checked: Checked, call_id: str, call: Mapping[str, Any]) -> ToolRequest:
        """The HTTP request for a checked webhook call."""
        tool = checked.tool
        assert tool is not None
        body = {"tool": tool.name, "arguments": checked.arguments, "tool_call_id": call_id, "call": dict(call)}
        configured = ((k, self._secrets.resolve(v)) for k, v in tool.headers.items())
        headers = (("Content-Type", "application/json"), *configured)
        encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        http = HttpRequest("POST", tool.url, headers, encoded, tool.timeout_s, sign=True)
        return ToolRequest(call_id, tool.name, http)


def outcome_of(result: HttpResult) -> ToolOutcome:
    if result.failure is Failure.TIMEOUT:
        return ToolOutcome.TIMEOUT
    if result.failure is not None:
        return ToolOutcome.UNREACHABLE
    return ToolOutcome.OK if result.ok else ToolOutcome.HTTP_ERROR


def output_text(name: str, result: HttpResult, max_bytes: int) -> str:
    """What the model is told about a finished webhook call, in words it can pass on."""
    outcome = outcome_of(result)
    if outcome is ToolOutcome.OK:
        body = result.body
        if len(body) <= max_bytes:
            return body.decode("utf-8", "replace")
        kept = body[:max_bytes].decode("utf-8", "ignore")
        return f"{kept}\n[The answer was cut here: {len(body) - max_bytes} more bytes were not shown.]"
    if outcome is ToolOutcome.HTTP_ERROR:
        why = f"it answered with HTTP status {result.status}"
    elif outcome is ToolOutcome.TIMEOUT:
        why = "it did not answer in time"
    else:
        why = "it could not be reached"
    detail = f" ({result.detail})" if result.detail else ""
    return f"The tool {name} failed: {why}{detail}. Tell the caller you could not do this right now."
