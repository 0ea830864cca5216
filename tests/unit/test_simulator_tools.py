"""The pure Realtime simulator's tools: GA function and MCP tools, call triggers, tool outputs,
conversation seeding after a reconnect, and the session-level faults (drop, session_expired)."""

from __future__ import annotations

import base64
import json
import math
import warnings
from typing import Any

import numpy as np
import pytest

from bridge.testing.simulator import (
    PCMU,
    SimulatedSession,
    SimulatorOptions,
    assistant_audio,
    bytes_per_ms,
)
from bridge.testing.simulator_tools import (
    McpCall,
    ToolCall,
    ToolTrigger,
    build_triggers,
    parse_mcp_call,
    parse_preamble,
    parse_tool_call,
)
from tests.openai_types import validate_client, validate_server

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Event = dict[str, Any]

ORDER_TOOL: Event = {
    "type": "function",
    "name": "order_status",
    "description": "Look up an order by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}
END_CALL: Event = {
    "type": "function",
    "name": "end_call",
    "description": "Hang up once the conversation is over.",
    "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
}
MCP_TOOL: Event = {
    "type": "mcp",
    "server_label": "crm",
    "server_url": "https://mcp.example.com/sse",
    "allowed_tools": ["find_customer"],
    "require_approval": "never",
    "headers": {"X-Tenant": "acme"},
}


# ------------------------------------------------------------------------------------- helpers


def new_session(**options: Any) -> SimulatedSession:
    options.setdefault("response_audio_ms", 400)
    session = SimulatedSession(SimulatorOptions(seed=11, **options), model="gpt-realtime")
    session.connect(0.0)
    fmt = {"type": PCMU}
    update(session, {"audio": {"input": {"format": fmt, "turn_detection": None}, "output": {"format": fmt}}})
    return session


def send(session: SimulatedSession, event: Event, now: float = 0.0) -> list[Event]:
    return [json.loads(text) for text in session.receive(json.dumps(event), now)]


def update(session: SimulatedSession, patch: Event) -> list[Event]:
    return send(session, {"type": "session.update", "session": {"type": "realtime", **patch}})


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["type"] == kind]


def error_of(events: list[Event]) -> dict[str, Any]:
    errors = of_type(events, "error")
    assert len(errors) == 1, types(events)
    error: dict[str, Any] = errors[0]["error"]
    return error


def drain(session: SimulatedSession, now: float = 0.0) -> list[Event]:
    out: list[Event] = []
    while session.response_active:
        deadline = session.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        out += [json.loads(text) for text in session.tick(now)]
    return out


def caller_turn(session: SimulatedSession) -> None:
    """One caller turn in manual mode: 200 ms of audio, committed."""
    frame = base64.b64encode(b"\x10" * 1600).decode()
    send(session, {"type": "input_audio_buffer.append", "audio": frame})
    assert types(send(session, {"type": "input_audio_buffer.commit"}))[0] == "input_audio_buffer.committed"


def respond(session: SimulatedSession, event: Event | None = None) -> list[Event]:
    """response.create, then every event until the response is done."""
    out = send(session, event or {"type": "response.create"})
    return out + drain(session)


def validate_all(session: SimulatedSession) -> None:
    """Every event the simulator emitted parses as the openai package's GA server event."""
    assert session.emitted_events
    for event in session.emitted_events:
        validate_server(event)


def order_trigger(**kwargs: Any) -> tuple[ToolTrigger, ...]:
    return (ToolTrigger(1, (ToolCall("order_status", {"order_id": "A1234"}),), **kwargs),)


# ----------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("patch", "code", "param"),
    [
        ({"tools": {"type": "function"}}, "invalid_type", "session.tools"),
        ({"tools": ["order_status"]}, "invalid_type", "session.tools[0]"),
        ({"tools": [{"name": "x"}]}, "missing_required_parameter", "session.tools[0].type"),
        ({"tools": [{"type": "code_interpreter"}]}, "invalid_value", "session.tools[0].type"),
        ({"tools": [{"type": "function"}]}, "missing_required_parameter", "session.tools[0].name"),
        ({"tools": [{"type": "function", "name": "has space"}]}, "invalid_value", "session.tools[0].name"),
        ({"tools": [{"type": "function", "name": "x" * 65}]}, "invalid_value", "session.tools[0].name"),
        (
            {"tools": [{"type": "function", "name": "f", "strict": True}]},
            "unknown_parameter",
            "session.tools[0].strict",
        ),
        (
            {"tools": [{"type": "function", "name": "f", "parameters": {"type": "string"}}]},
            "invalid_function_parameters",
            "session.tools[0].parameters",
        ),
        (
            {"tools": [{"type": "function", "name": "f", "parameters": "{}"}]},
            "invalid_type",
            "session.tools[0].parameters",
        ),
        ({"tools": [ORDER_TOOL, ORDER_TOOL]}, "invalid_value", "session.tools[1].name"),
        (
            {"tools": [{"type": "mcp", "server_url": "https://x"}]},
            "missing_required_parameter",
            "session.tools[0].server_label",
        ),
        (
            {"tools": [{"type": "mcp", "server_label": "crm"}]},
            "missing_required_parameter",
            "session.tools[0].server_url",
        ),
        (
            {"tools": [{**MCP_TOOL, "server_url": "ftp://mcp.example.com"}]},
            "invalid_value",
            "session.tools[0].server_url",
        ),
        (
            {"tools": [{**MCP_TOOL, "require_approval": "sometimes"}]},
            "invalid_value",
            "session.tools[0].require_approval",
        ),
        ({"tools": [{**MCP_TOOL, "allowed_tools": [1]}]}, "invalid_type", "session.tools[0].allowed_tools"),
        ({"tools": [{**MCP_TOOL, "headers": {"X": 1}}]}, "invalid_type", "session.tools[0].headers.X"),
        ({"tool_choice": "always"}, "invalid_value", "session.tool_choice"),
        ({"tool_choice": {"type": "function", "name": "order_status"}}, "invalid_value", "session.tool_choice"),
        (
            {"tools": [ORDER_TOOL], "tool_choice": {"type": "function"}},
            "missing_required_parameter",
            "session.tool_choice.name",
        ),
        (
            {"tools": [ORDER_TOOL], "tool_choice": {"type": "mcp", "server_label": "crm"}},
            "invalid_value",
            "session.tool_choice",
        ),
        ({"parallel_tool_calls": "yes"}, "invalid_type", "session.parallel_tool_calls"),
    ],
)
def test_bad_tools_and_tool_choice_are_rejected_like_the_api(patch: Event, code: str, param: str) -> None:
    session = new_session()
    err = error_of(update(session, {"instructions": "ignored", **patch}))
    assert (err["code"], err["param"], err["type"]) == (code, param, "invalid_request_error")
    assert session.config["instructions"] != "ignored"  # the whole update is discarded
    assert session.config["tools"] == []
    validate_all(session)


def test_valid_tools_and_tool_choice_are_echoed_in_session_updated() -> None:
    session = new_session()
    tools = [ORDER_TOOL, END_CALL]
    choice = {"type": "function", "name": "end_call"}
    event = {"type": "session.update", "session": {"type": "realtime", "tools": tools, "tool_choice": choice}}
    validate_client(event)  # the shape a client sends is GA-valid
    [updated] = send(session, event)
    assert updated["type"] == "session.updated"
    assert updated["session"]["tools"] == tools
    assert updated["session"]["tool_choice"] == choice
    # Dropping the tool the choice names makes the old choice invalid.
    err = error_of(update(session, {"tools": [ORDER_TOOL]}))
    assert (err["code"], err["param"]) == ("invalid_value", "session.tool_choice")
    [updated] = update(session, {"tools": [ORDER_TOOL], "tool_choice": "required"})
    assert updated["session"]["tool_choice"] == "required"
    validate_all(session)


# ---------------------------------------------------------------------------------- function calls


def test_triggered_function_call_emits_the_ga_sequence() -> None:
    session = new_session(tool_triggers=order_trigger())
    update(session, {"tools": [ORDER_TOOL]})
    caller_turn(session)
    out = respond(session)

    assert types(out) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    added = of_type(out, "response.output_item.added")[0]["item"]
    assert added["type"] == "function_call" and added["arguments"] == "" and added["status"] == "in_progress"
    call_id = added["call_id"]
    assert added["name"] == "order_status" and call_id.startswith("call_")
    deltas = of_type(out, "response.function_call_arguments.delta")
    assert all(d["call_id"] == call_id and d["item_id"] == added["id"] for d in deltas)
    done = of_type(out, "response.function_call_arguments.done")[0]
    arguments = '{"order_id":"A1234"}'
    assert "".join(d["delta"] for d in deltas) == done["arguments"] == arguments
    assert (done["call_id"], done["name"], done["output_index"]) == (call_id, "order_status", 0)
    response = of_type(out, "response.done")[0]["response"]
    assert response["status"] == "completed"
    [item] = response["output"]
    assert (item["type"], item["call_id"], item["arguments"], item["status"]) == (
        "function_call",
        call_id,
        arguments,
        "completed",
    )
    usage = response["usage"]
    assert usage["output_token_details"] == {
        "text_tokens": math.ceil(len("order_status" + arguments) / 4),
        "audio_tokens": 0,
    }
    assert not of_type(out, "response.output_audio.delta")
    [record] = session.tool_calls
    assert (record.kind, record.name, record.arguments, record.call_id) == (
        "function",
        "order_status",
        arguments,
        call_id,
    )
    assert session.responses[0].call_ids == [call_id] and session.responses[0].item_id is None
    validate_all(session)


def test_tool_output_is_validated_recorded_and_spoken_in_the_next_reply() -> None:
    session = new_session(tool_triggers=order_trigger())
    update(session, {"tools": [ORDER_TOOL]})
    caller_turn(session)
    call_id = of_type(respond(session), "response.function_call_arguments.done")[0]["call_id"]

    def output_item(**item: Any) -> Event:
        return {"type": "conversation.item.create", "item": {"type": "function_call_output", **item}}

    err = error_of(send(session, output_item(call_id="call_nope", output="x")))
    assert (err["code"], err["param"]) == ("invalid_value", "item.call_id")
    assert "call_nope" in err["message"]
    err = error_of(send(session, output_item(call_id=call_id, output={"status": "shipped"})))
    assert (err["code"], err["param"]) == ("invalid_type", "item.output")
    err = error_of(send(session, output_item(output="x")))
    assert (err["code"], err["param"]) == ("missing_required_parameter", "item.call_id")
    assert session.tool_outputs == []

    answer = "Order A1234 shipped on Monday; it arrives Thursday.\nTracking: 1Z 999."
    event = output_item(call_id=call_id, output=answer)
    validate_client(event)
    out = send(session, event, now=1.0)
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    assert out[1]["item"]["call_id"] == call_id and out[1]["item"]["output"] == answer
    [recorded] = session.tool_outputs
    assert (recorded.call_id, recorded.output, recorded.name, recorded.at) == (call_id, answer, "order_status", 1.0)
    assert session.created_items[-1]["output"] == answer

    reply = send(session, {"type": "response.create"})
    again = send(session, {"type": "response.create", "event_id": "c2"})
    err = error_of(again)
    assert (err["code"], err["event_id"]) == ("conversation_already_has_active_response", "c2")
    reply += drain(session)
    transcript = of_type(reply, "response.output_audio_transcript.done")[0]["transcript"]
    assert answer in transcript  # exactly, whitespace and all: the model "read" the output
    assert transcript == "".join(d["delta"] for d in of_type(reply, "response.output_audio_transcript.delta"))
    assert len(base64.b64decode(of_type(reply, "response.output_audio.delta")[0]["delta"])) > 0
    assert session.responses[-1].transcript == transcript
    # The output is input context for that reply, billed as text.
    usage = of_type(reply, "response.done")[0]["response"]["usage"]
    assert usage["input_token_details"]["text_tokens"] >= math.ceil(len(answer) / 4)
    # The next caller turn gets an ordinary answer again.
    caller_turn(session)
    normal = respond(session)
    assert answer not in of_type(normal, "response.output_audio_transcript.done")[0]["transcript"]
    validate_all(session)


def test_several_calls_in_one_response_after_a_spoken_preamble() -> None:
    trigger = ToolTrigger(
        1,
        (ToolCall("order_status", {"order_id": "A1"}), ToolCall("order_status", {"order_id": "B2"})),
        preamble="Let me look both of those up.",
        preamble_ms=700,
    )
    session = new_session(tool_triggers=(trigger,), speed=math.inf)
    update(session, {"tools": [ORDER_TOOL]})
    caller_turn(session)
    out = respond(session)

    kinds = types(out)
    last_audio = max(i for i, k in enumerate(kinds) if k == "response.output_audio.delta")
    first_call = kinds.index("response.function_call_arguments.delta")
    assert last_audio < kinds.index("response.output_audio_transcript.done") < first_call
    added = of_type(out, "response.output_item.added")
    assert [(a["output_index"], a["item"]["type"]) for a in added] == [
        (0, "message"),
        (1, "function_call"),
        (2, "function_call"),
    ]
    audio = b"".join(base64.b64decode(d["delta"]) for d in of_type(out, "response.output_audio.delta"))
    assert audio == assistant_audio(PCMU)[: 700 * bytes_per_ms(PCMU)]
    assert of_type(out, "response.output_audio_transcript.done")[0]["transcript"] == "Let me look both of those up."
    done = of_type(out, "response.function_call_arguments.done")
    assert [d["arguments"] for d in done] == ['{"order_id":"A1"}', '{"order_id":"B2"}']
    assert done[0]["call_id"] != done[1]["call_id"]
    output = of_type(out, "response.done")[0]["response"]["output"]
    assert [o["type"] for o in output] == ["message", "function_call", "function_call"]
    assert session.responses[0].item_id == output[0]["id"]

    # Both outputs, then one response.create: the reply speaks both.
    for d, text in zip(done, ("A1 has shipped.", "B2 is being packed."), strict=True):
        send(
            session,
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": d["call_id"], "output": text},
            },
        )
    reply = respond(session)
    transcript = of_type(reply, "response.output_audio_transcript.done")[0]["transcript"]
    assert "A1 has shipped. B2 is being packed." in transcript
    validate_all(session)


def test_end_call_with_a_goodbye_preamble() -> None:
    trigger = ToolTrigger(1, (ToolCall("end_call", {"reason": "done"}),), preamble="Goodbye, and thanks for calling!")
    session = new_session(tool_triggers=(trigger,), speed=4.0, delta_ms=100)
    update(session, {"tools": [ORDER_TOOL, END_CALL]})
    caller_turn(session)
    out = send(session, {"type": "response.create"}, now=10.0)
    assert types(out) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    # The goodbye streams in time (1.5 s of audio at 4x: 15 deltas over 0.35 s), the call comes last.
    rest = drain(session, now=10.0)
    assert len(of_type(rest, "response.output_audio.delta")) == 15
    done = of_type(rest, "response.function_call_arguments.done")[0]
    assert (done["name"], json.loads(done["arguments"])) == ("end_call", {"reason": "done"})
    kinds = types(rest)
    assert kinds.index("response.output_item.done") < kinds.index("response.function_call_arguments.done")
    assert kinds[-2:] == ["response.done", "rate_limits.updated"]
    assert session.responses[0].audio_ms == pytest.approx(1500)
    validate_all(session)


def test_barge_in_during_the_preamble_cancels_the_call() -> None:
    trigger = ToolTrigger(1, (ToolCall("end_call", {}),), preamble="Goodbye then.")
    session = new_session(tool_triggers=(trigger,))
    update(session, {"tools": [END_CALL]})
    caller_turn(session)
    send(session, {"type": "response.create"})
    session.tick(0.0)
    out = send(session, {"type": "response.cancel"}, now=0.01)
    response = of_type(out, "response.done")[0]["response"]
    assert response["status"] == "cancelled"
    assert [o["type"] for o in response["output"]] == ["message"]
    assert session.tool_calls == []
    validate_all(session)


def test_undeclared_tools_are_not_called_and_the_skip_is_recorded() -> None:
    trigger = ToolTrigger(1, (ToolCall("order_status", {"order_id": "A1"}), ToolCall("end_call", {})))
    session = new_session(tool_triggers=(trigger,))
    update(session, {"tools": [END_CALL]})
    caller_turn(session)
    out = respond(session)
    assert [d["name"] for d in of_type(out, "response.function_call_arguments.done")] == ["end_call"]
    [skipped] = session.skipped_calls
    assert skipped.name == "order_status" and "not among the declared tools" in skipped.reason
    assert skipped.response_id == session.responses[0].id


def test_no_declared_tool_means_an_ordinary_answer() -> None:
    session = new_session(tool_triggers=order_trigger())
    caller_turn(session)
    out = respond(session)
    assert not of_type(out, "response.function_call_arguments.done")
    assert of_type(out, "response.output_audio.delta")
    assert len(session.skipped_calls) == 1
    # The trigger is spent: the next turn does not try again.
    caller_turn(session)
    respond(session)
    assert len(session.skipped_calls) == 1


@pytest.mark.parametrize(
    ("choice", "called", "reason"),
    [
        ("none", [], "tool_choice is 'none'"),
        ({"type": "function", "name": "end_call"}, ["end_call"], "tool_choice forces function 'end_call'"),
        ("required", ["order_status", "end_call"], None),
    ],
)
def test_tool_choice_limits_what_the_model_calls(choice: Any, called: list[str], reason: str | None) -> None:
    trigger = ToolTrigger(1, (ToolCall("order_status", {"order_id": "A1"}), ToolCall("end_call", {})))
    session = new_session(tool_triggers=(trigger,))
    update(session, {"tools": [ORDER_TOOL, END_CALL], "tool_choice": choice})
    caller_turn(session)
    out = respond(session)
    assert [d["name"] for d in of_type(out, "response.function_call_arguments.done")] == called
    assert [s.reason for s in session.skipped_calls][:1] == ([reason] if reason else [])


def test_parallel_tool_calls_false_makes_one_call_per_response() -> None:
    trigger = ToolTrigger(1, (ToolCall("order_status", {"order_id": "A1"}), ToolCall("end_call", {})))
    session = new_session(tool_triggers=(trigger,))
    update(session, {"tools": [ORDER_TOOL, END_CALL], "parallel_tool_calls": False})
    caller_turn(session)
    out = respond(session)
    assert [d["name"] for d in of_type(out, "response.function_call_arguments.done")] == ["order_status"]
    assert session.skipped_calls[0].name == "end_call"


def test_response_level_tools_replace_the_sessions_for_that_response() -> None:
    session = new_session(tool_triggers=order_trigger())
    caller_turn(session)
    event = {"type": "response.create", "response": {"tools": [ORDER_TOOL], "tool_choice": "auto"}}
    validate_client(event)
    out = respond(session, event)
    assert of_type(out, "response.function_call_arguments.done")[0]["name"] == "order_status"
    err = error_of(send(session, {"type": "response.create", "response": {"tools": [{"type": "function"}]}}))
    assert (err["code"], err["param"]) == ("missing_required_parameter", "response.tools[0].name")


def test_trigger_turns_count_committed_caller_audio_and_fire_once() -> None:
    triggers = (
        ToolTrigger(0, (ToolCall("end_call", {"reason": "greeting"}),)),
        ToolTrigger(2, (ToolCall("end_call", {"reason": "second"}),)),
    )
    session = new_session(tool_triggers=triggers)
    update(session, {"tools": [END_CALL]})

    def calls(out: list[Event]) -> list[Any]:
        return [json.loads(d["arguments"])["reason"] for d in of_type(out, "response.function_call_arguments.done")]

    assert calls(respond(session)) == ["greeting"]  # turn 0: the very first response
    caller_turn(session)
    assert calls(respond(session)) == []  # turn 1: nothing due
    caller_turn(session)
    assert session.caller_turns == 2
    out_of_band = respond(session, {"type": "response.create", "response": {"conversation": "none"}})
    assert calls(out_of_band) == []  # out-of-band responses never call tools
    assert calls(respond(session)) == ["second"]
    assert calls(respond(session)) == []
    validate_all(session)


def test_a_server_vad_turn_triggers_the_call_in_its_auto_response() -> None:
    transfer = {
        "type": "function",
        "name": "transfer_call",
        "parameters": {
            "type": "object",
            "properties": {"target": {"type": "string", "enum": ["sales", "support"]}},
            "required": ["target"],
        },
    }
    trigger = ToolTrigger(1, (ToolCall("transfer_call", {"target": "sales"}),), preamble="Connecting you to sales.")
    session = SimulatedSession(SimulatorOptions(seed=3, tool_triggers=(trigger,), response_audio_ms=300))
    session.connect(0.0)
    fmt = {"type": PCMU}
    update(session, {"tools": [transfer], "audio": {"input": {"format": fmt}, "output": {"format": fmt}}})
    t = np.arange(8000) / 8000
    pcm = np.concatenate([3000 * np.sin(2 * np.pi * 300 * t), np.zeros(6000)]).astype("<i2").tobytes()
    ulaw = audioop.lin2ulaw(pcm, 2)
    out: list[Event] = []
    for i in range(0, len(ulaw), 160):
        out += send(
            session, {"type": "input_audio_buffer.append", "audio": base64.b64encode(ulaw[i : i + 160]).decode()}
        )
    assert "input_audio_buffer.committed" in types(out) and "response.created" in types(out)
    out += drain(session)
    done = of_type(out, "response.function_call_arguments.done")[0]
    assert (done["name"], json.loads(done["arguments"])) == ("transfer_call", {"target": "sales"})
    assert of_type(out, "response.output_audio_transcript.done")[0]["transcript"] == "Connecting you to sales."
    validate_all(session)


def test_arguments_given_as_text_are_sent_verbatim() -> None:
    trigger = ToolTrigger(1, (ToolCall("order_status", '{"order_id": 42'),))  # not even JSON
    session = new_session(tool_triggers=(trigger,))
    update(session, {"tools": [ORDER_TOOL]})
    caller_turn(session)
    done = of_type(respond(session), "response.function_call_arguments.done")[0]
    assert done["arguments"] == '{"order_id": 42'


def test_text_sessions_call_tools_and_answer_in_text() -> None:
    trigger = ToolTrigger(1, (ToolCall("order_status", {"order_id": "A1"}),), preamble="One moment.")
    session = new_session(tool_triggers=(trigger,))
    update(session, {"output_modalities": ["text"], "tools": [ORDER_TOOL]})
    caller_turn(session)
    out = send(session, {"type": "response.create"})  # text is produced at once
    assert of_type(out, "response.output_text.done")[0]["text"] == "One moment."
    call_id = of_type(out, "response.function_call_arguments.done")[0]["call_id"]
    send(
        session,
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": "Shipped."},
        },
    )
    reply = send(session, {"type": "response.create"})
    assert "Shipped." in of_type(reply, "response.output_text.done")[0]["text"]
    validate_all(session)


# ---------------------------------------------------------------------------------------- MCP


def test_declaring_an_mcp_server_lists_its_tools() -> None:
    session = new_session()
    out = update(session, {"tools": [MCP_TOOL]})
    assert types(out) == [
        "session.updated",
        "conversation.item.added",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "conversation.item.done",
    ]
    item_id = out[1]["item"]["id"]
    assert out[1]["item"]["type"] == "mcp_list_tools" and out[1]["item"]["server_label"] == "crm"
    assert out[2]["item_id"] == out[3]["item_id"] == item_id
    assert [t["name"] for t in out[4]["item"]["tools"]] == ["find_customer"]
    [listing] = session.mcp_listings
    assert (listing.server_label, listing.server_url, listing.tools, listing.failed) == (
        "crm",
        "https://mcp.example.com/sse",
        ("find_customer",),
        False,
    )
    # The same server again is not listed again; a changed one is.
    assert types(update(session, {"tools": [MCP_TOOL], "instructions": "x"})) == ["session.updated"]
    changed = {**MCP_TOOL, "allowed_tools": ["find_customer", "open_ticket"]}
    assert "mcp_list_tools.completed" in types(update(session, {"tools": [changed]}))
    assert session.mcp_listings[-1].tools == ("find_customer", "open_ticket")
    validate_all(session)


def test_failed_mcp_listing_is_reported_and_its_calls_are_skipped() -> None:
    trigger = ToolTrigger(1, (McpCall("crm", "find_customer", {"phone": "+15550001111"}),))
    session = new_session(mcp_list_fail=True, tool_triggers=(trigger,))
    out = update(session, {"tools": [MCP_TOOL]})
    assert types(out)[-2:] == ["mcp_list_tools.in_progress", "mcp_list_tools.failed"]
    assert session.mcp_listings[0].failed
    caller_turn(session)
    out = respond(session)
    assert not of_type(out, "response.mcp_call.in_progress")
    assert "listing the tools" in session.skipped_calls[0].reason
    validate_all(session)


@pytest.mark.parametrize("fail", [False, True])
def test_triggered_mcp_call_runs_inside_the_response_and_is_then_spoken_about(fail: bool) -> None:
    call = McpCall(
        "crm", "find_customer", {"phone": "+15550001111"}, fail=fail, output="Customer: Ada Lovelace, gold tier."
    )
    session = new_session(tool_triggers=(ToolTrigger(1, (call,)),))
    update(session, {"tools": [MCP_TOOL]})
    caller_turn(session)
    out = respond(session)

    outcome = "response.mcp_call.failed" if fail else "response.mcp_call.completed"
    kinds = types(out)
    assert kinds[:8] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        outcome,
    ]
    item = of_type(out, "response.output_item.done")[0]["item"]
    assert (item["type"], item["server_label"], item["name"]) == ("mcp_call", "crm", "find_customer")
    assert json.loads(item["arguments"]) == {"phone": "+15550001111"}
    if fail:
        assert item["error"]["type"] == "tool_execution_error" and item["output"] is None
    else:
        assert item["output"] == "Customer: Ada Lovelace, gold tier." and item["error"] is None
    # Then the same response speaks: the result, or that the tool could not be reached.
    transcript = of_type(out, "response.output_audio_transcript.done")[0]["transcript"]
    assert ("could not reach the find_customer tool" in transcript) if fail else ("Ada Lovelace" in transcript)
    output = of_type(out, "response.done")[0]["response"]["output"]
    assert [o["type"] for o in output] == ["mcp_call", "message"]
    assert session.tool_calls[0].status == ("failed" if fail else "completed")
    validate_all(session)


def test_mcp_calls_need_require_approval_never() -> None:
    trigger = ToolTrigger(1, (McpCall("crm", "find_customer"),))
    session = new_session(tool_triggers=(trigger,))
    update(session, {"tools": [{k: v for k, v in MCP_TOOL.items() if k != "require_approval"}]})
    caller_turn(session)
    assert not of_type(respond(session), "response.mcp_call.in_progress")
    assert "requires approval" in session.skipped_calls[0].reason


def test_mcp_calls_to_tools_outside_allowed_tools_are_skipped() -> None:
    trigger = ToolTrigger(1, (McpCall("crm", "delete_everything"),))
    session = new_session(tool_triggers=(trigger,))
    update(session, {"tools": [MCP_TOOL]})
    caller_turn(session)
    respond(session)
    assert "allowed_tools" in session.skipped_calls[0].reason


# ------------------------------------------------------------------------------------- seeding


SEED: list[Event] = [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Where is my order A1234?"}]},
    {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Let me check that for you."}],
    },
    {"type": "function_call", "call_id": "call_old1", "name": "order_status", "arguments": '{"order_id":"A1234"}'},
    {"type": "function_call_output", "call_id": "call_old1", "output": "Shipped Monday, arrives Thursday."},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It arrives Thursday."}]},
]


def test_a_reconnect_can_seed_the_conversation_and_the_replay_is_billed() -> None:
    session = new_session()
    update(session, {"tools": [ORDER_TOOL]})
    for item in SEED:
        event = {"type": "conversation.item.create", "item": item}
        validate_client(event)  # the shapes a reconnecting client should send are GA-valid
        out = send(session, event)
        assert types(out) == ["conversation.item.added", "conversation.item.done"], out
    assert [it.type for it in session.items] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert [it.role for it in session.items] == ["user", "assistant", None, None, "assistant"]
    assert [{k: v for k, v in c.items() if k != "id"} for c in session.created_items] == SEED
    assert session.tool_outputs[0].call_id == "call_old1" and session.tool_outputs[0].name == "order_status"

    caller_turn(session)
    out = respond(session)
    usage = of_type(out, "response.done")[0]["response"]["usage"]
    instructions = session.config["instructions"]
    tools = json.dumps([ORDER_TOOL], sort_keys=True)
    replayed = ["Where is my order A1234?", "Let me check that for you.", 'order_status{"order_id":"A1234"}']
    replayed += ["Shipped Monday, arrives Thursday.", "It arrives Thursday."]
    expected = sum(math.ceil(len(t) / 4) for t in [instructions, tools, *replayed])
    assert usage["input_token_details"]["text_tokens"] == expected
    assert usage["input_token_details"]["audio_tokens"] == 2  # the 200 ms caller turn
    # A seeded pair followed by a caller turn is history, not a pending tool answer.
    transcript = of_type(out, "response.output_audio_transcript.done")[0]["transcript"]
    assert "Shipped Monday" not in transcript
    validate_all(session)


def test_an_output_for_a_seeded_call_is_answered_after_the_reconnect() -> None:
    session = new_session()
    send(session, {"type": "conversation.item.create", "item": SEED[2]})
    send(session, {"type": "conversation.item.create", "item": SEED[3]})
    reply = respond(session)
    assert (
        "Shipped Monday, arrives Thursday." in of_type(reply, "response.output_audio_transcript.done")[0]["transcript"]
    )


@pytest.mark.parametrize(
    ("item", "code", "param"),
    [
        (
            {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "x"}]},
            "invalid_value",
            "item.content[0].type",
        ),
        (
            {"type": "message", "role": "user", "content": [{"type": "output_text", "text": "x"}]},
            "invalid_value",
            "item.content[0].type",
        ),
        (
            {"type": "message", "role": "assistant", "content": [{"type": "output_text"}]},
            "invalid_type",
            "item.content[0].text",
        ),
        ({"type": "function_call", "call_id": "c", "arguments": "{}"}, "missing_required_parameter", "item.name"),
        ({"type": "function_call", "name": "f", "arguments": {}}, "invalid_type", "item.arguments"),
        ({"type": "function_call", "name": "f", "arguments": "{}", "output": "x"}, "unknown_parameter", "item.output"),
        (
            {"type": "function_call_output", "call_id": "call_never_made", "output": "x"},
            "invalid_value",
            "item.call_id",
        ),
    ],
)
def test_bad_seed_items_are_rejected(item: Event, code: str, param: str) -> None:
    session = new_session()
    err = error_of(send(session, {"type": "conversation.item.create", "item": item}))
    assert (err["code"], err["param"]) == (code, param)
    assert session.items == [] and session.created_items == []


def test_seeded_items_can_be_placed_with_previous_item_id() -> None:
    session = new_session()
    first = send(session, {"type": "conversation.item.create", "item": SEED[0]})[0]["item"]["id"]
    send(session, {"type": "conversation.item.create", "item": SEED[4]})
    out = send(session, {"type": "conversation.item.create", "previous_item_id": first, "item": SEED[1]})
    assert out[0]["previous_item_id"] == first
    assert [it.text for it in session.items] == [
        "Where is my order A1234?",
        "Let me check that for you.",
        "It arrives Thursday.",
    ]
    out = send(session, {"type": "conversation.item.create", "previous_item_id": "root", "item": SEED[0]})
    assert out[0]["previous_item_id"] is None and session.items[0].id == out[0]["item"]["id"]


def test_an_assistant_audio_turn_can_be_replayed_by_its_transcript() -> None:
    session = new_session()
    item = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "We open at nine."}],
    }
    send(session, {"type": "conversation.item.create", "item": item})
    assert session.items[0].text == "We open at nine."
    validate_all(session)


# ---------------------------------------------------------------------------------------- faults


def test_drop_fault_is_due_at_its_time_and_ends_the_session() -> None:
    session = SimulatedSession(SimulatorOptions(drop_after_s=2.0, drop_mode="reset"))
    session.connect(10.0)
    assert session.next_deadline() == pytest.approx(12.0)
    assert session.tick(11.9) == [] and session.fault is None
    assert session.tick(12.0) == []
    assert session.fault == "reset"
    assert session.next_deadline() is None
    assert session.receive(json.dumps({"type": "response.create"}), 12.1) == []


def test_a_client_event_after_the_drop_time_finds_the_session_gone() -> None:
    session = SimulatedSession(SimulatorOptions(drop_after_s=1.0))
    session.connect(0.0)
    assert session.receive(json.dumps({"type": "response.create"}), 1.5) == []
    assert session.fault == "close" and session.responses == []


def test_faults_hit_only_the_sessions_fault_sessions_selects() -> None:
    options = SimulatorOptions(drop_after_s=1.0, expire_after_s=0.5, fault_sessions=1)
    first, second = (SimulatedSession(options, index=i) for i in range(2))
    first.connect(0.0)
    second.connect(0.0)
    assert first.faulty and not second.faulty
    assert second.next_deadline() == pytest.approx(3600.0)
    [expired] = [json.loads(t) for t in first.tick(0.5)]
    assert expired["error"] == {
        "type": "invalid_request_error",
        "code": "session_expired",
        "message": "Your session hit the maximum duration of 60 minutes.",
        "param": None,
        "event_id": None,
    }
    assert first.expired and first.close_requested == (1000, "session_expired")
    assert second.tick(5.0) == []
    assert second.fault is None and not second.expired


def test_bad_fault_options_are_refused() -> None:
    with pytest.raises(ValueError, match="drop_mode"):
        SimulatorOptions(drop_mode="explode")
    with pytest.raises(ValueError, match="refuse_status"):
        SimulatorOptions(refuse_status=200)
    with pytest.raises(ValueError, match="output"):
        SimulatorOptions(tool_reply="no placeholder")


# ------------------------------------------------------------------------------- command line specs


def test_specs_parse_into_triggers() -> None:
    assert parse_tool_call('1:end_call:{"reason": "done"}') == (1, ToolCall("end_call", {"reason": "done"}))
    assert parse_tool_call("0:order_status") == (0, ToolCall("order_status", {}))
    assert parse_mcp_call('2:crm:find:{"q": "a:b"}', fail=True) == (2, McpCall("crm", "find", {"q": "a:b"}, fail=True))
    assert parse_preamble("1:Goodbye: see you.") == (1, "Goodbye: see you.")
    for bad in ("end_call", "x:end_call", "1:", '1:f:{"a"', "1:f:[1]"):
        with pytest.raises(ValueError):
            parse_tool_call(bad)
    with pytest.raises(ValueError):
        parse_mcp_call("1:crm")
    triggers = build_triggers(
        [parse_tool_call("2:a"), parse_tool_call("1:b"), parse_tool_call("2:c")], [parse_preamble("2:Hold on.")]
    )
    assert triggers == (
        ToolTrigger(1, (ToolCall("b", {}),)),
        ToolTrigger(2, (ToolCall("a", {}), ToolCall("c", {})), preamble="Hold on."),
    )
    with pytest.raises(ValueError, match="no tool call"):
        build_triggers([parse_tool_call("1:a")], [parse_preamble("3:Hi")])
