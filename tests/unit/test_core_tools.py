"""Tool calls in the call core, driven by hand: function calls, outputs, end_call, transfer_call, MCP."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from pydantic import SecretStr

from bridge.call.core import CallCore, CallTool, EndCall, Note, SendModel, Transfer
from bridge.carrier import base as tel
from bridge.carrier.twilio import Twilio
from bridge.config import Secrets, Settings
from bridge.httpmsg import Failure, HttpResult
from bridge.realtime import events as rt
from bridge.toolspec import SecretRef
from bridge.vocabulary import CallState, EndReason, NoteKind, ToolOutcome
from tests.openai_types import validate_client

ORDER_TOOL = {
    "name": "order_status",
    "description": "Look up an order",
    "url": "https://crm.example/tools/order",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^[0-9]+$"}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
    "headers": {"X-Tenant": "acme", "Authorization": {"env": "CRM_TOKEN"}},
}
CRM_TOKEN = "Bearer crm-secret-value"


def make_core(*, transcripts: bool = True, **realtime: Any) -> CallCore:
    settings = Settings(realtime={"tools": [ORDER_TOOL], **realtime}, log={"transcripts": transcripts})
    refs = {SecretRef(env="CRM_TOKEN"): SecretStr(CRM_TOKEN), SecretRef(env="MCP_TOKEN"): SecretStr("mcp-secret")}
    secrets = Secrets(None, SecretStr("twilio-token"), None, refs=refs)
    core = CallCore(settings, "c1", 0.0, Twilio("twilio-token"), secrets)
    core.on_carrier(tel.Start("MZ1", "CA1", "AC1", "audio/x-mulaw", 8000, 1, {"from": "+4420", "to": "+1555"}), 0.0)
    core.on_model_connected(0.1)
    core.on_model(rt.SessionUpdated({}), 0.2)
    assert core.state is CallState.ACTIVE
    return core


def sent(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, SendModel)]


def creates(actions: list[Any]) -> int:
    return sum(1 for m in sent(actions) if m["type"] == "response.create")


def outputs(actions: list[Any]) -> dict[str, str]:
    return {
        m["item"]["call_id"]: m["item"]["output"]
        for m in sent(actions)
        if m["type"] == "conversation.item.create" and m["item"]["type"] == "function_call_output"
    }


def fn_call(call_id: str, arguments: str, name: str = "order_status", response: str = "resp_1") -> rt.FunctionCallDone:
    return rt.FunctionCallDone(response, f"item_{call_id}", call_id, name, arguments)


def test_session_update_offers_the_tools_and_validates_against_the_ga_types() -> None:
    core = make_core(
        end_call_tool=True,
        transfer_targets={"sales": "+15551230000", "support": "sip:help@pbx.example.com"},
        mcp_servers=[
            {"server_label": "kb", "server_url": "https://mcp.example/sse", "authorization": {"env": "MCP_TOKEN"}}
        ],
        tool_choice="required",
    )
    update = core._session_update
    assert update is not None
    validate_client(update)
    session = update["session"]
    assert session["tool_choice"] == "required"
    by_name = {t.get("name") or t.get("server_label"): t for t in session["tools"]}
    assert by_name["order_status"]["parameters"] == ORDER_TOOL["parameters"]
    assert by_name["transfer_call"]["parameters"]["properties"]["target"]["enum"] == ["sales", "support"]
    assert "end_call" in by_name
    assert by_name["kb"] == {
        "type": "mcp",
        "server_label": "kb",
        "server_url": "https://mcp.example/sse",
        "require_approval": "never",
        "authorization": "mcp-secret",
    }


def test_no_tools_no_tool_fields() -> None:
    core = CallCore(Settings(), "c1", 0.0, Twilio())
    core.on_carrier(tel.Start("MZ1", "CA1", "AC1", "audio/x-mulaw", 8000, 1), 0.0)
    assert core._session_update is not None
    assert "tools" not in core._session_update["session"]


def test_a_valid_call_goes_to_the_webhook_with_the_documented_body_and_its_answer_to_the_model() -> None:
    core = make_core()
    out = core.on_model(fn_call("call_1", '{"order_id": "123"}'), 1.0)
    (action,) = [a for a in out if isinstance(a, CallTool)]
    request = action.request
    assert request.call_id == "call_1" and request.name == "order_status"
    http = request.http
    assert (http.method, http.url, http.timeout_s, http.sign) == ("POST", ORDER_TOOL["url"], 10.0, True)
    headers = dict(http.headers)
    assert headers["Authorization"] == CRM_TOKEN and headers["X-Tenant"] == "acme"
    body = json.loads(http.body)
    assert body == {
        "tool": "order_status",
        "arguments": {"order_id": "123"},
        "tool_call_id": "call_1",
        "call": {
            "id": "c1",
            "call_sid": "CA1",
            "stream_sid": "MZ1",
            "profile": "default",
            "from": "+4420",
            "to": "+1555",
            "parameters": {"from": "+4420", "to": "+1555"},
        },
    }
    assert core.tools_pending == ["order_status"]
    # The response that made the call finishes before the tool answers: no response.create yet.
    core.on_model(rt.ResponseCreated("resp_1"), 1.0)
    assert creates(core.on_model(rt.ResponseDone("resp_1", "completed", None), 1.1)) == 0
    out = core.on_tool_result("call_1", HttpResult(0.4, 200, b"Order 123 shipped on Monday."), 1.5)
    assert outputs(out) == {"call_1": "Order 123 shipped on Monday."}
    assert creates(out) == 1
    assert core.tools_pending == []
    (entry,) = core.tool_log
    assert entry["outcome"] is ToolOutcome.OK and entry["arguments"] == {"order_id": "123"}
    for message in sent(out):
        validate_client(message)


def test_two_calls_in_one_response_get_one_response_create_after_both_and_after_done() -> None:
    core = make_core()
    core.on_model(rt.ResponseCreated("resp_1"), 1.0)
    core.on_model(fn_call("a", '{"order_id": "1"}'), 1.0)
    core.on_model(fn_call("b", '{"order_id": "2"}'), 1.0)
    out = core.on_tool_result("a", HttpResult(0.1, 200, b"one"), 1.1)
    assert outputs(out) == {"a": "one"} and creates(out) == 0  # b still running, response not done
    out = core.on_tool_result("b", HttpResult(0.2, 200, b"two"), 1.2)
    assert outputs(out) == {"b": "two"} and creates(out) == 0  # response not done yet
    out = core.on_model(rt.ResponseDone("resp_1", "completed", None), 1.3)
    assert creates(out) == 1


def test_arguments_that_break_the_schema_are_never_sent_and_the_model_is_told_why() -> None:
    core = make_core()
    core.on_model(rt.ResponseCreated("resp_1"), 1.0)
    out = core.on_model(fn_call("c", '{"order_id": "abc", "extra": 1}'), 1.0)
    assert not any(isinstance(a, CallTool) for a in out)
    text = outputs(out)["c"]
    assert "invalid" in text and "order_id" in text and "extra" in text
    assert creates(core.on_model(rt.ResponseDone("resp_1", "completed", None), 1.1)) == 1
    assert core.tool_log[0]["outcome"] is ToolOutcome.INVALID_ARGUMENTS


@pytest.mark.parametrize(
    ("arguments", "name", "expected"),
    [
        ("not json", "order_status", "not valid JSON"),
        ("[1, 2]", "order_status", "JSON object"),
        ('{"order_id": "1"}', "no_such_tool", "no tool called"),
    ],
)
def test_bad_calls_are_answered_at_once(arguments: str, name: str, expected: str) -> None:
    out = make_core().on_model(fn_call("c", arguments, name), 1.0)
    assert expected in outputs(out)["c"]
    assert not any(isinstance(a, CallTool) for a in out)


@pytest.mark.parametrize(
    ("result", "words", "outcome"),
    [
        (HttpResult(10.0, failure=Failure.TIMEOUT, detail="no answer in 10 s"), "did not answer in time", "timeout"),
        (HttpResult(0.1, 500, b"boom"), "HTTP status 500", "http_error"),
        (HttpResult(0.01, failure=Failure.UNREACHABLE, detail="refused"), "could not be reached", "unreachable"),
    ],
)
def test_tool_failures_become_plain_words_and_the_call_goes_on(result: HttpResult, words: str, outcome: str) -> None:
    core = make_core()
    core.on_model(rt.ResponseCreated("resp_1"), 1.0)
    core.on_model(fn_call("c", '{"order_id": "9"}'), 1.0)
    core.on_model(rt.ResponseDone("resp_1", "completed", None), 1.1)
    out = core.on_tool_result("c", result, 2.0)
    assert words in outputs(out)["c"]
    assert creates(out) == 1
    assert core.tool_log[0]["outcome"] == outcome
    assert core.state is CallState.ACTIVE


def test_a_long_answer_is_cut_and_says_so() -> None:
    core = make_core(transcripts=False)
    core.on_model(fn_call("c", '{"order_id": "9"}'), 1.0)
    body = ("x" * 100 + "\n").encode() * 400
    text = outputs(core.on_tool_result("c", HttpResult(0.1, 200, body), 1.5))["c"]
    assert len(text.encode()) < 16 * 1024 + 200
    assert "cut here" in text and str(len(body) - 16 * 1024) in text
    assert "arguments" not in core.tool_log[0]  # transcripts off: arguments not kept


def test_a_call_reported_twice_is_handled_once() -> None:
    core = make_core()
    first = core.on_model(fn_call("c", '{"order_id": "9"}'), 1.0)
    again = core.on_model(fn_call("c", '{"order_id": "9"}'), 1.0)
    assert len([a for a in first if isinstance(a, CallTool)]) == 1
    assert again == []


def test_output_item_done_alone_also_makes_the_call() -> None:
    raw = {
        "type": "response.output_item.done",
        "event_id": "e",
        "response_id": "resp_1",
        "output_index": 0,
        "item": {"id": "item_c", "type": "function_call", "call_id": "c", "name": "order_status",
                 "arguments": '{"order_id": "5"}', "status": "completed"},
    }
    out = make_core().on_model(rt.parse(json.dumps(raw)), 1.0)
    assert [a.request.call_id for a in out if isinstance(a, CallTool)] == ["c"]


def test_a_call_from_an_interrupted_response_is_not_made() -> None:
    core = make_core()
    core.on_model(rt.ResponseCreated("resp_1"), 1.0)
    delta = base64.b64encode(b"\xff" * 800).decode()
    core.on_model(rt.AudioDelta("resp_1", "item_a", delta), 1.0)
    core.on_model(rt.SpeechStarted(1000, "item_u"), 1.01)  # barge-in mutes resp_1
    out = core.on_model(fn_call("c", '{"order_id": "9"}'), 1.02)
    assert not any(isinstance(a, CallTool) for a in out)
    assert "interrupted" in outputs(out)["c"]
    assert creates(core.on_model(rt.ResponseDone("resp_1", "cancelled", None), 1.1)) == 0


def test_end_call_waits_until_the_goodbye_has_been_heard() -> None:
    core = make_core(end_call_tool=True)
    core.on_model(rt.ResponseCreated("resp_1"), 1.0)
    delta = base64.b64encode(b"\xff" * 8000).decode()  # one second of goodbye
    out = core.on_model(rt.AudioDelta("resp_1", "item_a", delta), 1.0)
    mark = json.loads(next(a.frame for a in out if getattr(a, "frame", None) and '"mark"' in a.frame))["mark"]["name"]
    out = core.on_model(fn_call("h", '{"reason": "caller said bye"}', name="end_call"), 1.05)
    assert "end" in outputs(out)["h"]
    assert not any(isinstance(a, EndCall) for a in out)
    out = core.on_model(rt.ResponseDone("resp_1", "completed", None), 1.1)
    assert creates(out) == 0  # no new response: the goodbye was said
    assert not any(isinstance(a, EndCall) for a in out)  # still playing
    assert not any(isinstance(a, EndCall) for a in core.on_tick(1.5))
    out = core.on_carrier(tel.MarkEcho(mark), 2.05)  # the carrier played the last chunk
    (end,) = [a for a in out if isinstance(a, EndCall)]
    assert (end.reason, end.detail, end.close_code) == (EndReason.AGENT_HANGUP, "caller said bye", 1000)


def test_end_call_has_a_cap_when_the_carrier_never_echoes() -> None:
    core = make_core(end_call_tool=True, tools=[])
    core.on_model(rt.ResponseCreated("resp_1"), 1.0)
    core.on_model(rt.AudioDelta("resp_1", "item_a", base64.b64encode(b"\xff" * 80000).decode()), 1.0)
    core.on_model(fn_call("h", "{}", name="end_call"), 1.0)
    core.on_model(rt.ResponseDone("resp_1", "completed", None), 1.1)
    assert not any(isinstance(a, EndCall) for a in core.on_tick(10.9))
    assert [a.reason for a in core.on_tick(11.1) if isinstance(a, EndCall)] == [EndReason.AGENT_HANGUP]


def _transfer_core() -> CallCore:
    core = make_core(transfer_targets={"sales": "+15551230000"}, tools=[])
    core.on_model(rt.ResponseCreated("resp_1"), 1.0)
    return core


def test_transfer_to_an_unknown_target_is_refused_without_any_request() -> None:
    core = _transfer_core()
    out = core.on_model(fn_call("t", '{"target": "+19995550000"}', name="transfer_call"), 1.0)
    assert "invalid" in outputs(out)["t"]
    out += core.on_model(rt.ResponseDone("resp_1", "completed", None), 1.1) + core.on_tick(30.0)
    assert not any(isinstance(a, Transfer) for a in out)


def test_transfer_redirects_the_live_call_after_the_audio_and_a_stop_ends_it_transferred() -> None:
    core = _transfer_core()
    out = core.on_model(fn_call("t", '{"target": "sales"}', name="transfer_call"), 1.0)
    assert not any(isinstance(a, Transfer) for a in out)  # the response is still running
    out = core.on_model(rt.ResponseDone("resp_1", "completed", None), 1.1)
    (transfer,) = [a for a in out if isinstance(a, Transfer)]
    http = transfer.request
    assert http.url == "https://api.twilio.com/2010-04-01/Accounts/AC1/Calls/CA1.json"
    assert dict(http.headers)["Authorization"] == "Basic " + base64.b64encode(b"AC1:twilio-token").decode()
    dial = "<Response><Dial><Number>+15551230000</Number></Dial></Response>"
    assert parse_qs(http.body.decode()) == {"Twiml": [dial]}
    out = core.on_transfer_result(HttpResult(0.2, 200, b"{}"), 1.3)
    assert "Transferred" in outputs(out)["t"] and creates(out) == 0
    (end,) = [a for a in core.on_carrier(tel.Stop("CA1"), 1.5) if isinstance(a, EndCall)]
    assert (end.reason, end.detail) == (EndReason.TRANSFERRED, "sales")


def test_a_failed_transfer_is_told_to_the_model_and_the_call_goes_on() -> None:
    core = _transfer_core()
    core.on_model(fn_call("t", '{"target": "sales"}', name="transfer_call"), 1.0)
    core.on_model(rt.ResponseDone("resp_1", "completed", None), 1.1)
    out = core.on_transfer_result(HttpResult(0.2, 401, b"auth"), 1.3)
    assert "transfer to sales failed" in outputs(out)["t"]
    assert creates(out) == 1
    assert core.state is CallState.ACTIVE
    (end,) = [a for a in core.on_carrier(tel.Stop("CA1"), 5.0) if isinstance(a, EndCall)]
    assert end.reason is EndReason.CALLER_HANGUP


def test_mcp_listing_and_call_failures_are_noted_and_logged() -> None:
    core = make_core(mcp_servers=[{"server_label": "kb", "server_url": "https://mcp.example"}])
    out = core.on_model(rt.McpItem("item_l", "mcp_list_tools", "kb"), 1.0)
    out += core.on_model(rt.McpProgress("item_l", "list_tools", "completed"), 1.1)
    out += core.on_model(rt.McpItem("item_c", "mcp_call", "kb", "search"), 2.0)
    out += core.on_model(rt.McpProgress("item_c", "call", "failed"), 2.5)
    notes = [n.fields for n in out if isinstance(n, Note) and n.kind is NoteKind.MCP]
    assert [(n["kind"], n["status"], n["server_label"]) for n in notes] == [
        ("list_tools", "completed", "kb"),
        ("call", "failed", "kb"),
    ]
    assert notes[1]["tool"] == "search"
    assert core.mcp_log == notes
