"""The fake Twilio REST endpoint: auth, answers, failures, and redirecting a live simulated call."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from bridge.testing.caller import CallerOptions, CallRegistry, CallResult, Pause, result_to_dict, run_call, summarise
from bridge.testing.twilio_rest import dial_targets, open_twilio_rest

TOKEN = "auth-token-for-tests"
TRANSFER = "<Response><Dial>+15551230000</Dial></Response>"


def test_dial_targets_reads_numbers_and_nouns() -> None:
    assert dial_targets(TRANSFER) == ("+15551230000",)
    twiml = "<Response><Dial><Sip>sip:help@pbx.example.com</Sip><Number> +15550001111 </Number></Dial></Response>"
    assert dial_targets(twiml) == ("sip:help@pbx.example.com", "+15550001111")
    assert dial_targets("<Response><Hangup/></Response>") == ()
    with pytest.raises(ValueError, match="parse"):
        dial_targets("<Response><Dial>")
    with pytest.raises(ValueError, match="Response"):
        dial_targets("<Dial>+1555</Dial>")


# ------------------------------------------------------------------------------------- helpers


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post(port: int, path: str, form: dict[str, str], auth: str | None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if auth:
            headers["Authorization"] = auth
        conn.request("POST", path, body=urlencode(form), headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


async def update_call(
    port: int, account: str, call_sid: str, form: dict[str, str], auth: str | None = None
) -> tuple[int, Any]:
    path = f"/2010-04-01/Accounts/{account}/Calls/{call_sid}.json"
    auth = basic(account, TOKEN) if auth is None else auth
    return await trio.to_thread.run_sync(lambda: post(port, path, form, auth or None))


@asynccontextmanager
async def media_server(seen: list[dict[str, Any]]) -> AsyncIterator[str]:
    """A bridge stand-in that only listens: it records what the caller sends until it closes."""

    async def on_request(request: WebSocketRequest) -> None:
        ws: WebSocketConnection = await request.accept()
        with suppress(ConnectionClosed):
            while True:
                seen.append(json.loads(await ws.get_message()))

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, on_request, "127.0.0.1", 0, None)
        yield f"ws://127.0.0.1:{server.port}/media"
        nursery.cancel_scope.cancel()


Scenario = Callable[[Any, CallerOptions, Callable[[], Awaitable[None]]], Awaitable[None]]


def with_live_call(scenario: Scenario) -> tuple[CallResult, list[dict[str, Any]]]:
    """Run a 10 s simulated call and, meanwhile, ``scenario(rest, call options, wait_started)``."""
    seen: list[dict[str, Any]] = []
    registry = CallRegistry()
    box: dict[str, CallResult] = {}

    async def main() -> None:
        async with (
            media_server(seen) as url,
            open_twilio_rest(auth_token=TOKEN, api_keys={"SK" + "1" * 32: "key-secret"}, registry=registry) as rest,
        ):
            options = CallerOptions(
                url=url,
                registry=registry,
                script=[Pause(10_000)],
                call_sid="CA" + "a" * 32,
                account_sid="AC" + "b" * 32,
            )

            async def wait_started() -> None:
                with trio.fail_after(5):
                    while not any(m.get("event") == "start" for m in seen):
                        await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:

                async def caller() -> None:
                    box["result"] = await run_call(options)

                nursery.start_soon(caller)
                with trio.fail_after(20):
                    await scenario(rest, options, wait_started)

    trio.run(main)
    return box["result"], seen


# ------------------------------------------------------------------------------------- redirects


def test_a_redirect_stops_the_live_call_as_twilio_does() -> None:
    answers: list[tuple[int, Any]] = []

    async def scenario(rest: Any, o: CallerOptions, wait_started: Callable[[], Awaitable[None]]) -> None:
        await wait_started()
        await trio.sleep(0.2)
        answers.append(await update_call(rest.port, o.account_sid, o.call_sid, {"Twiml": TRANSFER}))

    result, seen = with_live_call(scenario)

    status, resource = answers[0]
    assert status == 200
    assert resource["sid"] == "CA" + "a" * 32 and resource["account_sid"] == "AC" + "b" * 32
    assert resource["status"] == "in-progress"
    # The caller stopped at once: stop, then the socket closed; not the 10 s the script wanted.
    assert result.redirected and result.redirect is not None
    assert result.redirect.twiml == TRANSFER and result.redirect.targets == ("+15551230000",)
    assert result.redirected_at is not None and 0.2 <= result.redirected_at < 2
    assert result.duration_s < 3 and not result.hung_up_early
    assert seen[-1]["event"] == "stop" and result.stop_sent
    assert result.closed_by == "caller" and result.close_code == 1000
    assert result.closed_at is not None and result.closed_at >= result.redirected_at
    assert "redirected by the REST API" in summarise(result) and "+15551230000" in summarise(result)
    assert json.loads(json.dumps(result_to_dict(result)))["redirect"]["targets"] == ["+15551230000"]


def test_the_redirect_is_recorded_with_its_auth_user_and_parsed_twiml() -> None:
    rests: list[Any] = []

    async def scenario(rest: Any, o: CallerOptions, wait_started: Callable[[], Awaitable[None]]) -> None:
        rests.append(rest)
        await wait_started()
        key = "SK" + "1" * 32
        assert (await update_call(rest.port, o.account_sid, o.call_sid, {"Twiml": TRANSFER}, basic(key, "key-secret")))[
            0
        ] == 200

    with_live_call(scenario)
    [recorded] = rests[0].requests
    assert recorded.auth_user == "SK" + "1" * 32
    assert recorded.twiml == TRANSFER and recorded.dial == ("+15551230000",)
    assert recorded.form == {"Twiml": TRANSFER} and recorded.status == 200
    assert rests[0].redirects() == [recorded]
    assert "key-secret" not in repr(recorded)  # the password is never kept


def test_refusals_leave_the_call_alone() -> None:
    answers: dict[str, tuple[int, Any]] = {}

    async def scenario(rest: Any, o: CallerOptions, wait_started: Callable[[], Awaitable[None]]) -> None:
        await wait_started()
        acct, sid = o.account_sid, o.call_sid
        assert acct is not None and sid is not None
        answers["bad token"] = await update_call(rest.port, acct, sid, {"Twiml": TRANSFER}, basic(acct, "wrong"))
        answers["no auth"] = await update_call(rest.port, acct, sid, {"Twiml": TRANSFER}, "")
        answers["unknown call"] = await update_call(rest.port, acct, "CA" + "0" * 32, {"Twiml": TRANSFER})
        other = "AC" + "c" * 32
        answers["other account"] = await update_call(rest.port, other, sid, {"Twiml": TRANSFER}, basic(other, TOKEN))
        answers["bad twiml"] = await update_call(rest.port, acct, sid, {"Twiml": "<Response><Dial>"})
        rest.failure = 500
        answers["failing"] = await update_call(rest.port, acct, sid, {"Twiml": TRANSFER})
        rest.failure = "close"
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            await update_call(rest.port, acct, sid, {"Twiml": TRANSFER})
        rest.failure = None
        assert rest.redirects() == []
        assert (await update_call(rest.port, acct, sid, {"Status": "completed"}))[1]["status"] == "completed"

    result, _ = with_live_call(scenario)

    assert answers["bad token"][0] == 401 and answers["bad token"][1]["code"] == 20003
    assert answers["no auth"][0] == 401
    assert answers["unknown call"][0] == 404 and answers["unknown call"][1]["code"] == 20404
    assert answers["other account"][0] == 404
    assert answers["bad twiml"][0] == 400 and answers["bad twiml"][1]["code"] == 12100
    assert answers["failing"][0] == 500
    assert answers["failing"][1]["more_info"] == "https://www.twilio.com/docs/errors/20500"
    # Only the final hang-up (Status=completed) ended the stream.
    assert result.redirect is not None and result.redirect.status == "completed" and result.redirect.twiml is None


def test_an_ended_call_cannot_be_redirected() -> None:
    async def main() -> None:
        registry = CallRegistry()
        async with media_server([]) as url, open_twilio_rest(auth_token=TOKEN, registry=registry) as rest:
            options = CallerOptions(url=url, registry=registry, script=[Pause(40)], realtime=False)
            result = await run_call(options)
            assert result.ok and registry.live(result.call_sid) is None
            status, body = await update_call(rest.port, result.account_sid, result.call_sid, {"Twiml": TRANSFER})
            assert (status, body["code"]) == (400, 21220)

    trio.run(main)
