"""The fake tool endpoint: signature checking, per-path behaviour, and what it records."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from typing import Any

import pytest
import trio

from bridge.testing.http_fake import Reply
from bridge.testing.tool_server import (
    ORDER_STATUS,
    Route,
    check_signature,
    open_tool_server,
    sign,
    verify_signature,
)

SECRET = b"whsec-test-0123456789"
NOW = 1_750_000_000.0


# ------------------------------------------------------------------------------- the signature check


def test_a_signature_made_as_documented_verifies() -> None:
    body = b'{"tool":"order_status","arguments":{"order_id":"A1234"}}'
    # The contract, computed independently: hex HMAC-SHA256 of "<timestamp>.<raw body>".
    digest = hmac.new(SECRET, b"1750000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, 1750000000) == {
        "X-Bridge-Timestamp": "1750000000",
        "X-Bridge-Signature": f"v1={digest}",
    }
    assert check_signature(SECRET, body, "1750000000", f"v1={digest}", now=NOW) is None
    assert verify_signature(SECRET, body, "1750000000", f"v1={digest}", now=NOW + 299)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"secret": b"another-secret"}, "does not match"),
        ({"body": b'{"tool":"order_status","arguments":{"order_id":"A1235"}}'}, "does not match"),
        ({"now": NOW + 301}, "tolerance"),  # a replay, five minutes later
        ({"now": NOW - 301}, "tolerance"),  # a clock far ahead is no better
        ({"timestamp": "1750000000.5"}, "whole number"),
        ({"timestamp": None}, "missing"),
        ({"signature": None}, "missing"),
        ({"signature": "v0=abc"}, "not a v1"),
        ({"timestamp": "1750000001"}, "does not match"),  # the timestamp is signed too
    ],
)
def test_bad_signatures_are_refused_with_a_reason(change: dict[str, Any], reason: str) -> None:
    body = b'{"tool":"order_status","arguments":{"order_id":"A1234"}}'
    headers = sign(SECRET, body, 1750000000)
    args: dict[str, Any] = {
        "secret": SECRET,
        "body": body,
        "timestamp": headers["X-Bridge-Timestamp"],
        "signature": headers["X-Bridge-Signature"],
        "now": NOW,
    }
    args.update(change)
    problem = check_signature(args["secret"], args["body"], args["timestamp"], args["signature"], now=args["now"])
    assert problem is not None and reason in problem
    assert not verify_signature(args["secret"], args["body"], args["timestamp"], args["signature"], now=args["now"])


# ------------------------------------------------------------------------------------ the server


def request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, timeout: float = 5
) -> tuple[int, str, bytes]:
    """One blocking HTTP request (run it in a thread); returns status, content type, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


async def call(port: int, method: str, path: str, body: bytes = b"", **kw: Any) -> tuple[int, str, bytes]:
    return await trio.to_thread.run_sync(lambda: request(port, method, path, body, **kw))


def tool_body(order_id: Any) -> bytes:
    payload = {
        "tool": "order_status",
        "arguments": {"order_id": order_id},
        "tool_call_id": "call_1",
        "call": {"id": "c1", "call_sid": "CA1", "stream_sid": "MZ1", "profile": "default"},
    }
    return json.dumps(payload).encode()


def test_order_status_tool_answers_signed_requests_and_records_them() -> None:
    async def main() -> None:
        async with open_tool_server({"/order-status": ORDER_STATUS}, secret=SECRET) as tools:
            assert tools.url("/order-status") == f"http://127.0.0.1:{tools.port}/order-status"
            body = tool_body("A1234")
            headers = headers_first = {**sign(SECRET, body, int(time.time())), "Content-Type": "application/json"}
            status, ctype, answer = await call(tools.port, "POST", "/order-status", body, headers=headers)
            assert (status, ctype) == (200, "text/plain; charset=utf-8")
            assert answer == b"Order A1234 shipped on Monday and arrives on Thursday."

            body = tool_body("Z0000")
            headers = sign(SECRET, body, int(time.time()))
            status, _, answer = await call(tools.port, "POST", "/order-status", body, headers=headers)
            assert (status, answer) == (200, b"I found no order with number Z0000.")

            body = tool_body(42)
            status, _, _ = await call(
                tools.port, "POST", "/order-status", body, headers=sign(SECRET, body, int(time.time()))
            )
            assert status == 400

            first = tools.requests[0]
            assert first.method == "POST" and first.path == "/order-status"
            assert first.body == tool_body("A1234")  # byte for byte
            assert first.header("content-type") == "application/json"
            assert first.header("x-bridge-signature") == headers_first["X-Bridge-Signature"]
            assert first.notes == {"signature": "ok", "order_id": "A1234"}
            assert first.status == 200 and first.answered_at is not None
            assert [r.status for r in tools.requests_to("/order-status")] == [200, 200, 400]

    trio.run(main)


def test_unsigned_forged_and_replayed_requests_get_401_and_never_reach_the_tool() -> None:
    async def main() -> None:
        clock = [time.time()]
        async with open_tool_server({"/order-status": ORDER_STATUS}, secret=SECRET, clock=lambda: clock[0]) as tools:
            body = tool_body("A1234")
            good = sign(SECRET, body, int(clock[0]))
            assert (await call(tools.port, "POST", "/order-status", body))[0] == 401
            forged = sign(b"guessed", body, int(clock[0]))
            status, ctype, answer = await call(tools.port, "POST", "/order-status", body, headers=forged)
            assert (status, ctype) == (401, "application/json")
            assert "does not match" in json.loads(answer)["error"]
            clock[0] += 600  # the same request, captured and sent again ten minutes later
            assert (await call(tools.port, "POST", "/order-status", body, headers=good))[0] == 401
            assert [r.notes.get("order_id") for r in tools.requests] == [None, None, None]
            assert [r.notes["signature"] != "ok" for r in tools.requests] == [True, True, True]

    trio.run(main)


def test_routes_answer_json_statuses_delays_and_404s() -> None:
    async def main() -> None:
        routes = {
            "/json": Route(body={"status": "shipped", "eta": "Thursday"}),
            "/boom": Route(status=500, body="internal error"),
            "/slow": Route(body="late", delay_s=0.3),
        }
        async with open_tool_server(routes) as tools:
            status, ctype, answer = await call(tools.port, "POST", "/json", b"{}")
            assert (status, ctype, json.loads(answer)) == (
                200,
                "application/json",
                {"status": "shipped", "eta": "Thursday"},
            )
            assert (await call(tools.port, "POST", "/boom"))[0] == 500
            start = trio.current_time()
            assert (await call(tools.port, "POST", "/slow"))[2] == b"late"
            assert trio.current_time() - start >= 0.3
            assert (await call(tools.port, "POST", "/nowhere"))[0] == 404
            assert (await call(tools.port, "GET", "/json"))[0] == 405
            assert [r.notes for r in tools.requests] == [{}] * 5  # no secret: nothing checked
            # Routes can change while it runs.
            tools.routes["/boom"] = Route(body="fixed")
            assert (await call(tools.port, "POST", "/boom"))[2] == b"fixed"

    trio.run(main)


def test_a_hanging_tool_records_when_the_client_gave_up() -> None:
    async def main() -> None:
        async with open_tool_server({"/hang": Route(hang=True)}) as tools:
            with pytest.raises(TimeoutError):
                await call(tools.port, "POST", "/hang", b"{}", timeout=0.3)
            [hung] = tools.requests
            with trio.fail_after(5):
                while hung.disconnected_at is None:
                    await trio.sleep(0.01)
            assert hung.status is None
            assert 0.25 <= hung.disconnected_at - hung.received_at < 2

    trio.run(main)


def test_a_tool_that_closes_the_connection() -> None:
    async def main() -> None:
        async with open_tool_server({"/close": Route(close=True)}) as tools:
            with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
                await call(tools.port, "POST", "/close", b"{}")
            assert tools.requests[0].status is None

    trio.run(main)


def test_connections_are_kept_alive_between_requests() -> None:
    def two_requests(port: int) -> list[bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            answers = []
            for order in ("A1234", "B5678"):
                conn.request("POST", "/order-status", body=tool_body(order))
                answers.append(conn.getresponse().read())
            return answers
        finally:
            conn.close()

    async def main() -> None:
        async with open_tool_server({"/order-status": ORDER_STATUS}) as tools:
            answers = await trio.to_thread.run_sync(two_requests, tools.port)
            assert answers[1] == b"Order B5678 is being packed and ships tomorrow."
            assert [r.connection for r in tools.requests] == [1, 1]

    trio.run(main)


def test_a_handler_route_sees_the_request() -> None:
    async def main() -> None:
        def echo(req: Any) -> Reply:
            return Reply(201, {"got": req.json()["arguments"]})

        async with open_tool_server({"/echo": Route(handler=echo)}) as tools:
            status, _, answer = await call(tools.port, "POST", "/echo", tool_body("A1"))
            assert (status, json.loads(answer)) == (201, {"got": {"order_id": "A1"}})

    trio.run(main)
