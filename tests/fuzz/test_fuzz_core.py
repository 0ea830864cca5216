"""The whole call core as a state machine, fed random sequences of everything that can happen.

Carrier events (parsed by the call's own dialect from raw messages, or built directly), model
events of any session number, ticks of any length, tool, transfer and lookup results, closes,
ping timeouts and operator ends, in any order. Whatever the order:

* no input raises;
* at most one ``EndCall`` is ever decided, with a close code from the table and a close reason
  that fits a WebSocket close frame;
* nothing invalid leaves: every model message is a JSON object with a type, every audio append
  canonical base64 under the API's 15 MiB cap, every carrier text frame JSON;
* ``finish()`` always settles the call as ended or failed (ended exactly for the normal end
  reasons), and the record, summary and live snapshot can be built at any point.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bridge.accounting.records import CallRecord
from bridge.audio import is_base64
from bridge.audio.payload import MAX_EVENT_BYTES
from bridge.call import readout
from bridge.call.core import (
    Action,
    CallCore,
    CallTool,
    CloseModel,
    ConnectModel,
    EndCall,
    LookupSession,
    Note,
    SendCarrier,
    SendModel,
    Transfer,
    UseModel,
)
from bridge.carrier import base as tel
from bridge.carrier import registry
from bridge.config import Secrets, Settings
from bridge.httpmsg import Failure, HttpResult
from bridge.realtime import events as rt
from bridge.vocabulary import NORMAL_END_REASONS, CallState, CloseCode, EndReason, Side
from tests.fuzz.strategies import any_message, dumps, json_values, valid_carrier_message

ACTION_TYPES = (
    SendCarrier,
    SendModel,
    ConnectModel,
    UseModel,
    CloseModel,
    CallTool,
    LookupSession,
    Transfer,
    EndCall,
    Note,
)
TOOL = {
    "name": "lookup_order",
    "url": "https://tools.example/order",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
}


@dataclass(frozen=True)
class Setup:
    """One kind of call: a carrier (and its start), the session's settings."""

    carrier: str
    settings: dict[str, Any]
    encoding: str
    rate: int
    frame_bytes: int  # 20 ms of the carrier's audio


SETUPS = [
    Setup("twilio", {}, "audio/x-mulaw", 8000, 160),
    Setup("twilio", {"realtime": {"end_call_tool": True, "transfer_targets": {"sales": "+15550001"}, "tools": [TOOL],
                                  "greeting": "Hello {caller}", "transcription": {}}}, "audio/x-mulaw", 8000, 160),
    Setup("vonage", {"realtime": {"audio_format": "pcm16", "turn_detection": {"type": "none"},
                                  "end_call_tool": True}}, "audio/l16;rate=16000", 16000, 640),
    Setup("exotel", {"session_webhook": {"url": "https://crm.example/session"}, "realtime": {"tools": [TOOL]}},
          "audio/x-l16", 8000, 320),
    Setup("plivo", {"realtime": {"audio_format": "pcma", "greeting": "Hi", "dtmf_response": False}},
          "audio/x-mulaw", 8000, 160),
]  # fmt: skip
SECRETS = {"TWILIO_AUTH_TOKEN": "token"}
MARKS = [f"g{g}m{n}" for g in range(3) for n in range(1, 8)]
RIDS = ["r1", "r2", "r3"]
IIDS = ["i1", "i2", "i3"]
CALL_IDS = ["c1", "c2", "c3"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


junk_payloads = st.sampled_from(["", "not base64!!", "AAA", "AAAA====", "A" * 5, "////", "\u00e9\u00e9\u00e9\u00e9"])
ids = st.sampled_from(RIDS) | st.text(max_size=4)
items = st.sampled_from(IIDS) | st.text(max_size=4)


@st.composite
def carrier_events(draw: st.DrawFn, setup: Setup) -> tel.CarrierEvent:
    kind = draw(st.integers(0, 8))
    if kind == 0:
        encoding = draw(st.sampled_from([setup.encoding, "audio/x-mulaw", "audio/x-alaw", "L16", "opus", ""]))
        rate = draw(st.sampled_from([setup.rate, 8000, 16000, 24000, 44100, 0]))
        channels = draw(st.sampled_from([1, 1, 2]))
        params = draw(st.dictionaries(st.sampled_from(["profile", "caller", "from", "to", "x"]), st.text(max_size=6)))
        return tel.Start("MZ1", "CA1", "AC1", encoding, rate, channels, params, from_number=draw(st.none() | st.text()))
    if kind <= 3:  # media is most of a call
        frames = draw(st.integers(1, 5))
        raw = draw(st.binary(min_size=setup.frame_bytes * frames, max_size=setup.frame_bytes * frames))
        return tel.Media(draw(st.just(_b64(raw)) | junk_payloads), draw(st.none() | st.integers()))
    if kind == 4:
        return tel.MarkEcho(draw(st.sampled_from(MARKS) | st.text(max_size=6)))
    if kind == 5:
        return draw(st.sampled_from([tel.Cleared(), tel.Connected("Call", "1.0"), tel.Stop(None), tel.Stop("CA1")]))
    if kind == 6:
        return tel.Dtmf(draw(st.sampled_from("0123456789*#")))
    if kind == 7:
        return tel.CarrierError(draw(st.sampled_from(["invalid_json", "unknown_event"])), "x", draw(st.booleans()))
    return tel.Media(_b64(b"\x00" * setup.frame_bytes))


@st.composite
def model_events(draw: st.DrawFn, setup: Setup) -> rt.ModelEvent:
    kind = draw(st.integers(0, 15))
    rid, iid = draw(ids), draw(items)
    session_bytes = {"pcm16": 4800, "pcma": 800}.get(setup.settings.get("realtime", {}).get("audio_format", ""), 800)
    if kind <= 3:  # deltas are most of the model's traffic
        n = draw(st.integers(1, 3))
        return rt.AudioDelta(rid, iid, draw(st.just(_b64(b"\x55" * session_bytes * n)) | junk_payloads))
    if kind == 4:
        return rt.ResponseCreated(rid)
    if kind == 5:
        status = draw(st.sampled_from(["completed", "cancelled", "failed", "incomplete"]))
        usage = draw(st.none() | st.just({"input_tokens": 10, "output_tokens": 5}) | json_values())
        return rt.ResponseDone(rid, status, usage if isinstance(usage, dict) or usage is None else None)
    if kind == 6:
        return rt.SpeechStarted(draw(st.integers(0, 10**6)), iid)
    if kind == 7:
        return rt.SpeechStopped(draw(st.integers(0, 10**6)), iid)
    if kind == 8:
        session = draw(
            st.sampled_from(
                [
                    {},
                    {
                        "audio": {
                            "input": {"format": {"type": "audio/pcm"}},
                            "output": {"format": {"type": "audio/pcm"}},
                        }
                    },
                ]
            )
        )
        return rt.SessionUpdated(session)
    if kind == 9:
        name = draw(st.sampled_from(["end_call", "transfer_call", "lookup_order", "nope"]))
        arguments = draw(st.sampled_from(['{"reason": "bye"}', '{"target": "sales"}', '{"id": "7"}', "{}", "junk", ""]))
        return rt.FunctionCallDone(rid, iid, draw(st.sampled_from(CALL_IDS)), name, arguments)
    if kind == 10:
        code = draw(
            st.sampled_from(
                [
                    "response_cancel_not_active",
                    "conversation_already_has_active_response",
                    "session_expired",
                    "invalid_api_key",
                    "invalid_value",
                    "server_error",
                ]
            )
        )
        return rt.ModelError(code, "m", param=draw(st.sampled_from([None, "session.audio", "item_id"])))
    if kind == 11:
        return rt.InputTranscript(iid, draw(st.text(max_size=10)), draw(st.none() | st.just({"seconds": 1.5})))
    if kind == 12:
        return rt.OutputTranscript(iid, draw(st.text(max_size=10)))
    if kind == 13:
        return draw(
            st.sampled_from(
                [
                    rt.McpItem(iid, "mcp_call", "srv", "t", "failed"),
                    rt.McpProgress(iid, "call", "completed"),
                    rt.ItemTruncated(iid, 100),
                    rt.Committed(iid),
                    rt.SessionCreated(),
                ]
            )
        )
    if kind == 14:
        return draw(
            st.sampled_from([rt.Malformed("x", "bad"), rt.Ignored("rate_limits.updated"), rt.AudioDone(rid, iid)])
        )
    return rt.parse(draw(any_message(st.just({"type": "response.output_audio.delta", "response_id": rid}))))


results = st.builds(
    HttpResult,
    duration_s=st.floats(0, 5),
    status=st.none() | st.sampled_from([200, 204, 400, 404, 500]),
    body=st.sampled_from([b"", b"ok", b'{"instructions": "x"}', b'{"voice": 5}', b"\xff" * 3, b"{}"]),
    failure=st.none() | st.sampled_from(list(Failure)),
)
# Model-side reports name a session by its number, as the runner does (it only ever runs the
# sessions the core asked for, numbered from 1); a number not asked for yet is skipped below.
sessions = st.sampled_from([1, 1, 1, 1, 2, 2, 3, 4])


@st.composite
def steps(draw: st.DrawFn, setup: Setup) -> list[tuple[Any, ...]]:
    """A call's life: mostly valid traffic, with anything else mixed in."""
    carrier_message = any_message(valid_carrier_message(setup.carrier)) | valid_carrier_message(setup.carrier).map(
        dumps
    )
    rare = st.one_of(
        st.tuples(st.just("carrier_raw"), carrier_message),
        st.tuples(st.just("connected"), sessions),
        st.tuples(st.just("connect_failed"), sessions),
        st.tuples(st.just("model_closed"), sessions, st.none() | st.sampled_from([1000, 1006, 1011])),
        st.tuples(st.just("ping_timeout"), st.sampled_from(list(Side)), sessions),
        st.tuples(st.just("transfer_result"), results),
        st.tuples(st.just("lookup"), results),
        st.tuples(st.just("request_end"), st.sampled_from([EndReason.OPERATOR, EndReason.DRAIN])),
        st.tuples(st.just("carrier_closed"), st.none() | st.sampled_from([1000, 1006, 1007, 1009])),
        st.tuples(st.just("cleared"), st.floats(0, 1)),
        st.tuples(st.just("crash"), st.text(max_size=8)),
        st.tuples(st.just("look")),
    )

    @st.composite
    def op(draw: st.DrawFn) -> tuple[Any, ...]:
        # Weighted by hand (one_of would weigh every branch the same): a call is mostly traffic,
        # and most ends are rare, so that calls live long enough to get somewhere.
        roll = draw(st.integers(0, 99))
        if roll < 35:
            return ("carrier", draw(carrier_events(setup)))
        if roll < 75:
            return ("model", draw(sessions), draw(model_events(setup)))
        if roll < 85:
            return ("tick", draw(st.sampled_from([0.02, 0.25, 0.25, 0.25, 1.0, 5.0, 11.0, 31.0, 125.0, 3400.0])))
        if roll < 92:
            return ("tool_result", draw(st.sampled_from(CALL_IDS)), draw(results))
        return draw(rare)

    # A call that got going: start, the session opened and updated; then anything.
    opening = [
        ("carrier", tel.Start("MZ1", "CA1", "AC1", setup.encoding, setup.rate, 1)),
        ("connected", 1),
        ("lookup", HttpResult(0.1, status=200, body=b"{}")),
        ("connected", 1),
        ("model", 1, rt.SessionUpdated({})),
    ]
    prefix = opening[: draw(st.sampled_from([len(opening)] * 4 + list(range(len(opening)))))]
    return prefix + draw(st.lists(op(), min_size=20, max_size=100))


def _check_actions(actions: list[Action], setup: Setup) -> None:
    assert isinstance(actions, list)
    for action in actions:
        assert isinstance(action, ACTION_TYPES), action
        if isinstance(action, SendModel):
            event = json.loads(action.text)
            assert isinstance(event, dict) and isinstance(event.get("type"), str)
            assert len(action.text) <= MAX_EVENT_BYTES
            if event["type"] == "input_audio_buffer.append":
                assert event["audio"] and is_base64(event["audio"]), "invalid audio went upstream"
        elif isinstance(action, SendCarrier):
            assert isinstance(action.frame, str | bytes)
            if isinstance(action.frame, str):
                json.loads(action.frame)
            else:
                assert setup.carrier == "vonage" and len(action.frame) % 2 == 0
        elif isinstance(action, EndCall):
            assert action.close_code in set(CloseCode)
            assert len(action.close_reason.encode()) <= 123


@given(data=st.data())
def test_the_core_survives_any_sequence(data: st.DataObject) -> None:
    setup = data.draw(st.sampled_from(SETUPS))
    settings = Settings(**setup.settings)
    carrier = registry.build(setup.carrier, {"verify": False}, SECRETS)
    core = CallCore(settings, "call1", 0.0, carrier, Secrets(None, None, None))
    now = 0.0
    ends: list[EndCall] = []
    issued: set[int] = set()  # sessions the core asked to open (current, pending, old or closed)
    for step in data.draw(steps(setup)):
        now += 0.02
        kind, args = step[0], step[1:]
        session = args[0] if kind in ("model", "connected", "connect_failed", "model_closed") else None
        if kind == "ping_timeout" and args[0] is Side.MODEL:
            session = args[1]
        if session is not None and session not in issued:
            continue
        if kind == "carrier":
            out = core.on_carrier(args[0], now)
        elif kind == "carrier_raw":
            out = core.on_carrier(carrier.parse(args[0]), now)
        elif kind == "model":
            out = core.on_model(args[1], now, session=args[0])
        elif kind == "connected":
            out = core.on_model_connected(now, session=args[0])
        elif kind == "connect_failed":
            out = core.on_model_connect_failed("refused", now, session=args[0])
        elif kind == "model_closed":
            out = core.on_model_closed(args[1], "gone", now, session=args[0])
        elif kind == "ping_timeout":
            out = core.on_ping_timeout(args[0], now, session=args[1])
        elif kind == "tick":
            now += args[0]
            out = core.on_tick(now)
        elif kind == "tool_result":
            out = core.on_tool_result(args[0], args[1], now)
        elif kind == "transfer_result":
            out = core.on_transfer_result(args[0], now)
        elif kind == "lookup":
            out = core.on_session_lookup(args[0], now)
        elif kind == "request_end":
            out = core.request_end(args[0], "by the test")
        elif kind == "carrier_closed":
            out = core.on_carrier_closed(args[0], now)
        elif kind == "cleared":
            core.barge_in_cleared(args[0])
            out = []
        elif kind == "crash":
            out = core.on_crash(args[0])
        else:
            readout.snapshot(core, readout.CallMeta("call1", 1.7e9), now)
            readout.summary(core, now)
            out = []
        _check_actions(out, setup)
        issued.update(a.session for a in out if isinstance(a, ConnectModel))
        ends += [a for a in out if isinstance(a, EndCall)]
        assert len(ends) <= 1, f"two ends decided: {ends}"
        if ends:
            assert core.ending == ends[0] and core.state is CallState.CLOSING
        else:
            assert core.ending is None and core.state is not CallState.CLOSING
    final = core.finish()
    _check_actions(final, setup)
    assert not [a for a in final if isinstance(a, EndCall)], "finish() decides an end silently, never sends one"
    assert core.state in (CallState.ENDED, CallState.FAILED)
    assert core.end_reason is not None
    assert (core.state is CallState.ENDED) == (core.end_reason in NORMAL_END_REASONS)
    if ends:
        assert core.end_reason == ends[0].reason
    record = readout.fill_record(CallRecord(call_id="call1", started_at=1.7e9), core, now, 1.7e9 + now, final=True)
    assert record.end_reason == core.end_reason and record.status == "ended"
    json.dumps(record.to_dict())  # the record is storable as it is
    readout.summary(core, now)
