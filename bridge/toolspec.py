"""How tools are configured: HTTP webhook tools, remote MCP servers, and references to secrets.

A tool is an HTTP endpoint the business already runs (bridge calls it when the model asks) or a
remote MCP server (the Realtime API calls it itself). Definitions are checked when the
configuration loads, so a bad one stops ``serve`` and ``check-config`` with a message naming the
tool and the rule, never a call.

Secrets (an API token in a tool's headers, an MCP server's authorization) are never written in
the configuration file: a header value that looks like a credential must be a reference,
``{ env = "NAME" }`` or ``{ file = "/path" }``, resolved when the secrets are loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid", validate_default=True)

#: The name rule of the Realtime API's function tools.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Names bridge's own tools use; a webhook tool cannot take them.
BUILTIN_TOOL_NAMES = frozenset({"end_call", "transfer_call"})
# Header names whose values are credentials: they must come from the environment or a file.
_SECRET_HEADER = re.compile(r"(?i)^(authorization|proxy-authorization|cookie)$|token|secret|key|auth|passw")


class SecretRef(BaseModel):
    """A secret kept out of the configuration file: an environment variable or a file's content."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError('give exactly one of env = "NAME" or file = "/path"')
        return self

    def describe(self) -> str:
        return f"${self.env}" if self.env is not None else f"file {self.file}"


HeaderValue = str | SecretRef


@contextmanager
def _naming(what: str, name: object) -> Iterator[None]:
    """Prefix a rule's message with the tool it belongs to ("tool 'order_status': ...")."""
    try:
        yield
    except ValueError as exc:
        if isinstance(name, str):
            raise ValueError(f"{what} {name!r}: {exc}") from None
        raise


def _check_headers(headers: dict[str, HeaderValue]) -> dict[str, HeaderValue]:
    for name, value in headers.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ValueError(f"header {name!r} is not a valid HTTP header name")
        if isinstance(value, str) and _SECRET_HEADER.search(name):
            raise ValueError(
                f"header {name!r} carries a credential: its value must come from the environment or a file, "
                'written as { env = "NAME" } or { file = "/path" }, never inline'
            )
    return headers


class WebhookTool(BaseModel):
    """A function the model can call; bridge POSTs the call to ``url`` and gives the answer back."""

    model_config = _STRICT
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str
    timeout_s: float = Field(10.0, gt=0, le=120)
    headers: dict[str, HeaderValue] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TOOL_NAME.match(v):
            raise ValueError(f"tool name {v!r} must match {TOOL_NAME.pattern} (letters, digits, _ and -, 1-64)")
        if v in BUILTIN_TOOL_NAMES:
            raise ValueError(f"tool name {v!r} is bridge's own (see realtime.end_call_tool / transfer_targets)")
        return v

    # The name is validated first, so the other rules can say which tool broke them.
    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        with _naming("tool", info.data.get("name")):
            if not re.match(r"^https?://[^/\s]+", v):
                raise ValueError("url must be an http:// or https:// URL")
        return v

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        with _naming("tool", info.data.get("name")):
            check_parameters_schema(v)
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, HeaderValue], info: ValidationInfo) -> dict[str, HeaderValue]:
        with _naming("tool", info.data.get("name")):
            return _check_headers(v)


class McpServer(BaseModel):
    """A remote MCP server the Realtime API calls itself (a GA ``mcp`` tool)."""

    model_config = _STRICT
    server_label: str
    server_url: str
    server_description: str | None = None
    allowed_tools: list[str] | None = None
    require_approval: Literal["never", "always"] = "never"
    authorization: SecretRef | None = None
    headers: dict[str, HeaderValue] = Field(default_factory=dict)

    @field_validator("server_label")
    @classmethod
    def _label(cls, v: str) -> str:
        if not TOOL_NAME.match(v):
            raise ValueError(f"server_label {v!r} must match {TOOL_NAME.pattern}")
        return v

    @field_validator("server_url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        with _naming("mcp server", info.data.get("server_label")):
            if not re.match(r"^https?://[^/\s]+", v):
                raise ValueError("server_url must be an http:// or https:// URL")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, HeaderValue], info: ValidationInfo) -> dict[str, HeaderValue]:
        with _naming("mcp server", info.data.get("server_label")):
            return _check_headers(v)


ToolChoice = Literal["auto", "none", "required"]


def check_parameters_schema(schema: dict[str, Any]) -> None:
    """A tool's ``parameters`` must be a valid JSON Schema describing an object."""
    if schema.get("type") != "object":
        raise ValueError('parameters must be a JSON Schema with "type": "object"')
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ValueError(f"parameters is not a valid JSON Schema at {where}: {exc.message}") from None


def check_unique_names(tools: list[WebhookTool], servers: list[McpServer]) -> None:
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise ValueError(f"tool name {tool.name!r} is used twice")
        seen.add(tool.name)
    labels: set[str] = set()
    for server in servers:
        if server.server_label in labels:
            raise ValueError(f"mcp server_label {server.server_label!r} is used twice")
        labels.add(server.server_label)


def secret_refs(tools: list[WebhookTool], servers: list[McpServer]) -> list[tuple[str, SecretRef]]:
    """Every secret reference, named by where it is used (for loading and error messages)."""
    refs: list[tuple[str, SecretRef]] = []
    for tool in tools:
        refs += [(f"tool {tool.name} header {h}", v) for h, v in tool.headers.items() if isinstance(v, SecretRef)]
    for server in servers:
        if server.authorization is not None:
            refs.append((f"mcp server {server.server_label} authorization", server.authorization))
        refs += [
            (f"mcp server {server.server_label} header {h}", v)
            for h, v in server.headers.items()
            if isinstance(v, SecretRef)
        ]
    return refs
