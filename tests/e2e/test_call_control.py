"""Call control end to end: the agent hangs up, transfers, the business hears of every call, and
personalises a call before its first word."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from bridge.testing.caller import CallResult, Pause, Say, WaitForReply
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.simulator_tools import ToolCall, ToolTrigger
from bridge.testing.stack import Stack, open_stack
from bridge.testing.tool_server import Reply, Route, open_tool_server
from bridge.testing.twilio_rest import open_twilio_rest
from tests.e2e.conftest import call, run

TOKEN = "twilio-test-auth-token"
SECRET = "webhook-secret-for-the-e2e-tests"


async def call_and_listen(
    stack: Stack, *, script: list[Any] | None = None, realtime: bool = False, **kw: Any
) -> CallResult:
    """A simulated call (as fast as the socket takes it, unless ``realtime``) that speaks and waits
    for the reply, unless given its own script."""
    script = script or [Pause(200), Say(), WaitForReply(timeout_ms=20_000, settle_ms=1500), Pause(3000)]
    return await call(stack, script=script, realtime=realtime, **kw)


def goodbye(call: ToolCall, preamble: str = "Thank you for calling, goodbye!") -> SimulatorOptions:
    return SimulatorOptions(tool_triggers=(ToolTrigger(after_turn=1, calls=(call,), preamble=preamble),))


def test_end_call_closes_the_stream_only_after_the_goodbye_was_heard(tmp_path: Path) -> None:
    async def main() -> None:
        sim = goodbye(ToolCall("end_call", {"reason": "the caller has what they needed"}))
        overrides = {"realtime": {"end_call_tool": True}}
        async with open_stack(overrides=overrides, simulator=sim, records=tmp_path / "calls.sqlite") as stack:
            result = await call_and_listen(
                stack, script=[Pause(200), Say(), WaitForReply(timeout_ms=20_000, settle_ms=5000)]
            )
            assert result.closed_by == "server" and result.close_code == 1000
            # The last mark of the goodbye came back before the socket was closed, and all of the
            # goodbye was played: nothing was left in the caller's buffer.
            assert result.last_mark_echoed_at is not None and result.closed_at is not None
            assert result.last_mark_echoed_at <= result.closed_at
            assert result.unplayed_bytes == 0
            (sim_session,) = stack.simulator.sessions
            assert result.played_bytes == sum(r.audio_bytes for r in sim_session.responses) > 0
            await stack.wait_idle()
            assert stack.store is not None
            (record,) = stack.store.query()
            assert record.end_reason == "agent_hangup"
            assert record.end_detail == "the caller has what they needed"
            assert [t["tool"] for t in record.tool_calls] == ["end_call"]

    run(main)


def test_transfer_redirects_the_call_after_the_audio_and_records_the_target(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_twilio_rest(auth_token=TOKEN) as rest:
            overrides = {
                "realtime": {"transfer_targets": {"sales": "+15551230000", "support": "sip:help@pbx.example.com"}},
                "twilio": {"api_base_url": rest.base_url},
            }
            sim = goodbye(ToolCall("transfer_call", {"target": "support"}), "Let me put you through to support.")
            env = {"TWILIO_AUTH_TOKEN": TOKEN}
            async with open_stack(overrides=overrides, simulator=sim, env=env, records=tmp_path / "c.sqlite") as stack:
                result = await call_and_listen(
                    stack, script=[Pause(200), Say(), WaitForReply(timeout_ms=20_000, settle_ms=5000)]
                )
                (redirect,) = rest.redirects()
                assert redirect.call_sid == result.call_sid and redirect.account_sid == result.account_sid
                assert redirect.auth_user == result.account_sid
                assert redirect.twiml == "<Response><Dial><Sip>sip:help@pbx.example.com</Sip></Dial></Response>"
                assert redirect.dial == ("sip:help@pbx.example.com",)
                # The redirect came after the model's audio had played (its last mark echoed).
                assert result.last_mark_echoed_at is not None and result.redirected_at is not None
                assert result.last_mark_echoed_at <= result.redirected_at
                assert result.redirected
                await stack.wait_idle()
                assert stack.store is not None
                (record,) = stack.store.query()
                assert (record.end_reason, record.end_detail) == ("transferred", "support")

    run(main)


def test_transfer_to_a_target_that_is_not_configured_makes_no_request() -> None:
    async def main() -> None:
        async with open_twilio_rest(auth_token=TOKEN) as rest:
            overrides = {
                "realtime": {"transfer_targets": {"sales": "+15551230000"}},
                "twilio": {"api_base_url": rest.base_url},
            }
            sim = goodbye(ToolCall("transfer_call", {"target": "+19005550100"}), "Transferring you.")
            async with open_stack(overrides=overrides, simulator=sim, env={"TWILIO_AUTH_TOKEN": TOKEN}) as stack:
                result = await call_and_listen(stack)
                assert rest.requests == []
                (session,) = stack.simulator.sessions
                (output,) = session.tool_outputs
                assert "invalid" in output.output
                assert result.closed_by == "caller"  # the call went on until the caller hung up

    run(main)


def test_call_webhooks_arrive_with_cost_and_end_reason_signed(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_tool_server({"/hooks": Route(body="")}, secret=SECRET) as hooks:
            overrides = {"webhooks": {"endpoints": [{"url": hooks.url("/hooks")}], "retry_initial_s": 0.2}}
            env = {"BRIDGE_TOOLS_SECRET": SECRET}
            async with open_stack(overrides=overrides, records=tmp_path / "c.sqlite", env=env) as stack:
                result = await call_and_listen(stack, params={"caller_name": "Ada"})
                await stack.wait_idle()
                assert stack.sender is not None
                stack.sender.kick()
                with trio.fail_after(5):
                    while len(hooks.requests) < 2:
                        await trio.sleep(0.05)
                started, ended = (r.json() for r in sorted(hooks.requests, key=lambda r: r.received_at))
                assert all(r.notes["signature"] == "ok" for r in hooks.requests)
                assert started["type"] == "call.started" and ended["type"] == "call.ended"
                assert started["id"] != ended["id"]
                data = ended["data"]
                assert data["call_sid"] == result.call_sid and data["end_reason"] == "caller_hangup"
                assert data["cost_total_usd"] > 0 and data["cost_per_minute_usd"] > 0
                assert data["parameters"]["caller_name"] == "Ada"
                assert data["ended_at"].endswith("Z") and data["turns"] >= 1
                assert {r.header("X-Bridge-Event-Id") for r in hooks.requests} == {started["id"], ended["id"]}
                assert stack.store is not None
                assert stack.store.outbox_counts() == {"pending": 0, "delivered": 2, "failed": 0}

    run(main)


def test_session_lookup_sets_the_instructions_the_session_update_carries() -> None:
    async def main() -> None:
        def lookup(request: Any) -> Reply:
            details = json.loads(request.body)["call"]
            return Reply(200, {"instructions": f"You are talking to {details['parameters']['caller_name']}, a VIP."})

        async with open_tool_server({"/lookup": Route(handler=lookup)}) as crm:
            overrides = {"session_webhook": {"url": crm.url("/lookup")}}
            async with open_stack(overrides=overrides) as stack:
                await call_and_listen(stack, params={"caller_name": "Grace"}, script=[Pause(300), Say(), Pause(500)])
                (session,) = stack.simulator.sessions
                update = next(e for e in session.received_events if e["type"] == "session.update")
                assert update["session"]["instructions"] == "You are talking to Grace, a VIP."
                (request,) = crm.requests
                assert json.loads(request.body)["call"]["parameters"]["caller_name"] == "Grace"
                # The caller's audio sent while the lookup ran reached the model, none lost.
                assert len(session.appended_audio) > 0

    run(main)


def test_a_slow_session_lookup_falls_back_to_the_profile_within_its_timeout() -> None:
    async def main() -> None:
        async with open_tool_server({"/lookup": Route(hang=True)}) as crm:
            overrides = {
                "session_webhook": {"url": crm.url("/lookup"), "timeout_s": 0.5},
                "realtime": {"instructions": "The profile's own instructions."},
            }
            async with open_stack(overrides=overrides) as stack:
                began = trio.current_time()
                # In real time, as a phone sends it: the lookup's half second is 25 frames to keep.
                result = await call_and_listen(
                    stack, realtime=True, script=[Pause(200), Say(), WaitForReply(timeout_ms=15_000)]
                )
                assert result.ok
                (session,) = stack.simulator.sessions
                update = next(e for e in session.received_events if e["type"] == "session.update")
                assert update["session"]["instructions"] == "The profile's own instructions."
                assert session.connected_at is not None
                assert session.connected_at - began < 0.5 + 1.0  # the lookup's timeout, plus connecting
                # Audio the caller sent during the wait still reached the model, in order.
                assert bytes(session.appended_audio) == bytes(result.audio_sent)
                await stack.wait_idle()
                (runner,) = stack.hooks.finished
                assert any("session lookup failed" in w for w in runner.core.warnings)

    run(main)
