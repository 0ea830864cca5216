"""The model's tool calls (``ToolBox.check``) against any name and any arguments text.

Contract: a call is ``Checked`` (its arguments parsed, a JSON object that satisfies the tool's
schema) or ``Refused`` (unknown tool or invalid arguments, with words for the model); never an
exception, whatever the model writes.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from hypothesis import given
from hypothesis import strategies as st

from bridge.call.tools import END_CALL, TRANSFER_CALL, Checked, Refused, ToolBox
from bridge.config import Secrets, SessionSettings
from bridge.vocabulary import ToolOutcome
from tests.fuzz.strategies import dumps, json_values

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{1,6}$"},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
        "express": {"type": "boolean"},
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]},
            "maxItems": 3,
        },
        "note": {"type": ["string", "null"], "maxLength": 20},
    },
    "required": ["order_id", "quantity"],
    "additionalProperties": False,
}
SESSION = SessionSettings(
    tools=[
        {"name": "order_status", "url": "https://tools.example/order", "parameters": ORDER_SCHEMA},
        {"name": "anything", "url": "https://tools.example/any"},
    ],
    end_call_tool=True,
    transfer_targets={"sales": "+15550001", "support": "sip:support@example.com"},
)
BOX = ToolBox(SESSION, Secrets(None, None, None))
SCHEMAS = {
    "order_status": ORDER_SCHEMA,
    "anything": {"type": "object", "properties": {}},
    END_CALL: {"type": "object", "properties": {"reason": {"type": "string"}}, "additionalProperties": False},
    TRANSFER_CALL: {
        "type": "object",
        "properties": {"target": {"type": "string", "enum": ["sales", "support"]}},
        "required": ["target"],
        "additionalProperties": False,
    },
}
ARG_KEYS = st.sampled_from(["order_id", "quantity", "express", "items", "sku", "note", "reason", "target"])
names = st.sampled_from([*SCHEMAS, "unknown", "", "END_CALL"]) | st.text(max_size=20)

valid_order = st.fixed_dictionaries(
    {"order_id": st.from_regex(r"^[A-Z]{2}[0-9]{1,6}$", fullmatch=True), "quantity": st.integers(1, 99)},
    optional={
        "express": st.booleans(),
        "items": st.lists(st.fixed_dictionaries({"sku": st.text(max_size=5)}), max_size=3),
        "note": st.none() | st.text(max_size=20),
    },
)


@given(
    name=names,
    arguments=st.text(max_size=100)
    | json_values(ARG_KEYS).map(dumps)
    | st.dictionaries(ARG_KEYS, json_values(ARG_KEYS)).map(dumps)
    | st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
    | st.just('{"reason": "' + "x" * 70_000 + '"}'),
)
def test_any_call_is_checked_or_refused(name: str, arguments: str) -> None:
    result = BOX.check(name, arguments)
    if isinstance(result, Refused):
        assert result.outcome in (ToolOutcome.UNKNOWN_TOOL, ToolOutcome.INVALID_ARGUMENTS)
        assert isinstance(result.message, str) and result.message
        assert (result.outcome is ToolOutcome.UNKNOWN_TOOL) == (name not in SCHEMAS)
        return
    assert isinstance(result, Checked) and result.name == name and name in SCHEMAS
    assert result.arguments == (json.loads(arguments) if arguments.strip() else {})
    jsonschema.validate(result.arguments, SCHEMAS[name])  # what passes really is valid


@given(arguments=valid_order, spaced=st.booleans())
def test_valid_arguments_pass_as_written(arguments: dict[str, Any], spaced: bool) -> None:
    text = json.dumps(arguments, indent=2 if spaced else None)
    result = BOX.check("order_status", text)
    assert isinstance(result, Checked), result
    assert result.kind == "webhook" and result.arguments == arguments


@given(target=st.text(max_size=12))
def test_only_configured_transfer_targets_pass(target: str) -> None:
    result = BOX.check(TRANSFER_CALL, json.dumps({"target": target}))
    assert isinstance(result, Checked) == (target in ("sales", "support"))
