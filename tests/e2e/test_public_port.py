"""The public port under attack and under load, over loopback, with good calls running.

* signatures: the voice webhook and the media upgrade signed by the official ``twilio`` package's
  RequestValidator are accepted; forged, missing and tampered ones are refused and counted;
* bounded bad traffic: a slow head, an oversized head, more pending connections than the limit
  and an oversized carrier message are each refused as designed;
* admission: with the limit at N, call N+1 gets the overflow TwiML and its upgrade a 503.

In every case the good calls stay byte-exact: every byte the caller sent reached the model, and
the model's whole answer reached the caller.
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from prometheus_client import REGISTRY
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from twilio.request_validator import RequestValidator

from bridge import metrics
from bridge.testing.caller import CallerOptions, CallResult, Say, WaitForReply, run_call
from bridge.testing.simulator import SimulatorOptions, assistant_audio
from bridge.testing.stack import Stack, open_stack
from tests.e2e.conftest import run

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://bridge.example.com"
REPLY_MS = 1000
SIM = SimulatorOptions(response_audio_ms=REPLY_MS, speed=8.0)
WEBHOOK = [
    ("AccountSid", "AC" + "a" * 32),
    ("CallSid", "CA" + "b" * 32),
    ("From", "+14155550100"),
    ("To", "+15551230000"),
    ("Direction", "inbound"),
]

pytestmark = pytest.mark.skipif(metrics.multiprocess_enabled(), reason="reads the in-process metrics")


def refused(route: str, reason: str) -> float:
    return REGISTRY.get_sample_value("bridge_refused_total", {"route": route, "reason": reason}) or 0.0


class MultiForm(dict[str, list[str]]):
    """Repeated form names, the way RequestValidator reads Flask's MultiDict."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        for name, value in pairs:
            self.setdefault(name, []).append(value)

    def getall(self, name: str) -> list[str]:
        return self[name]


def twilio_signature(url: str, pairs: Sequence[tuple[str, str]] = ()) -> str:
    return str(RequestValidator(TOKEN).compute_signature(url, MultiForm(pairs)))


def signed_stack(**overrides: Any) -> Any:
    """A stack that checks signatures with ``TOKEN``, reached as ``PUBLIC``."""
    server = {"public_url": PUBLIC, **overrides.pop("server", {})}
    return open_stack(
        overrides={"twilio": {"validate_signature": True}, "server": server, **overrides},
        simulator=SIM,
        env={"TWILIO_AUTH_TOKEN": TOKEN},
    )


# --------------------------------------------------------------------------------------------
# Plain HTTP on the public port


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float


async def exchange(stack: Stack, data: bytes, *, pace_s: float = 0.0, timeout: float = 10) -> Reply:
    """Send ``data`` (one byte every ``pace_s`` if set), read the whole reply."""
    stream = await trio.open_tcp_stream("127.0.0.1", stack.port)
    started = trio.current_time()
    received = b""
    with trio.fail_after(timeout):
        async with stream:

            async def sender() -> None:
                try:
                    if pace_s:
                        for i in range(len(data)):
                            await stream.send_all(data[i : i + 1])
                            await trio.sleep(pace_s)
                    else:
                        await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the server hung up on us: that is the point

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                try:
                    while chunk := await stream.receive_some():
                        received += chunk
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Reply(int(lines[0].split()[1]), headers, body, trio.current_time() - started)


def post_twiml(stack: Stack, target: str, pairs: Sequence[tuple[str, str]], signature: str | None) -> bytes:
    body = urlencode(pairs).encode()
    head = [
        f"POST {target} HTTP/1.1",
        f"Host: 127.0.0.1:{stack.port}",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
    ]
    if signature is not None:
        head.append(f"X-Twilio-Signature: {signature}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# --------------------------------------------------------------------------------------------
# Good calls


def good_options(stack: Stack, **kw: Any) -> CallerOptions:
    """Speech paced at four times real time, then wait for the whole answer to play."""
    return CallerOptions(
        url=stack.media_url,
        realtime=True,
        speed=4.0,
        script=[Say(), WaitForReply(timeout_ms=15_000, settle_ms=200)],
        **kw,
    )


async def start_good_calls(stack: Stack, nursery: trio.Nursery, count: int, **kw: Any) -> list[CallResult]:
    """``count`` good calls in the background, returned once all are active on the bridge."""
    results: list[CallResult] = []

    async def one() -> None:
        with trio.fail_after(60):
            results.append(await run_call(good_options(stack, **kw)))

    for _ in range(count):
        nursery.start_soon(one)
    with trio.fail_after(15):
        while sum(1 for c in stack.ctx.calls.values() if c.core.state == "active") < count:
            await trio.sleep(0.02)
    return results


async def assert_byte_exact(stack: Stack, results: list[CallResult], count: int) -> None:
    """Every good call: all caller audio reached the model, the whole answer reached the caller."""
    assert len(results) == count
    answer = assistant_audio("audio/pcmu")[: REPLY_MS * 8]
    await stack.wait_idle()
    at_model = [bytes(s.appended_audio) for s in stack.simulator.sessions]
    for result in results:
        assert result.ok, result
        assert len(result.audio_sent) > 8000 * 3  # the recording, not just a few frames
        assert bytes(result.audio_sent) in at_model  # its own session got every byte, in order
        at_model.remove(bytes(result.audio_sent))
        assert bytes(result.audio_played) == answer
    for runner in stack.hooks.finished:
        if runner.core.call_sid in {r.call_sid for r in results}:
            assert runner.core.stats.audio_errors == 0 and runner.core.stats.protocol_errors == 0


# --------------------------------------------------------------------------------------------
# Signatures


def test_webhook_signed_by_twilio_is_answered_and_any_other_is_refused() -> None:
    async def main() -> None:
        async with signed_stack() as stack:
            repeated = [*WEBHOOK, ("Tag", "b"), ("Tag", "a")]
            for target, pairs in (("/twiml", WEBHOOK), ("/twiml?tenant=acme&x=%2F", WEBHOOK), ("/twiml", repeated)):
                signature = twilio_signature(PUBLIC + target, pairs)
                reply = await exchange(stack, post_twiml(stack, target, pairs, signature))
                assert reply.status == 200, (target, reply)
                stream = ET.fromstring(reply.body).find("Connect/Stream")
                assert stream is not None and stream.get("url") == "wss://bridge.example.com/media"

            before = refused("answer", "bad_signature")
            good = twilio_signature(PUBLIC + "/twiml?tenant=acme", WEBHOOK)
            tampered_value = [(n, "+19995550000" if n == "To" else v) for n, v in WEBHOOK]
            bad: list[tuple[str, list[tuple[str, str]], str | None]] = [
                ("/twiml?tenant=acme", WEBHOOK, None),  # missing
                ("/twiml?tenant=acme", WEBHOOK, "L/OH5YylLD5NRKLltdqwSvS0BnU="),  # forged
                ("/twiml?tenant=evil", WEBHOOK, good),  # query tampered
                ("/twiml", WEBHOOK, good),  # query dropped
                ("/twiml?tenant=acme", tampered_value, good),  # body tampered
                ("/twiml?tenant=acme", [*WEBHOOK, ("Extra", "1")], good),  # body extended
                (
                    "/twiml?tenant=acme",
                    WEBHOOK,
                    RequestValidator("f" * 32).compute_signature(PUBLIC + "/twiml?tenant=acme", MultiForm(WEBHOOK)),
                ),  # another account
            ]
            for target, pairs, signature in bad:
                reply = await exchange(stack, post_twiml(stack, target, pairs, signature))
                assert reply.status == 403, (target, reply)
                assert b"<Response>" not in reply.body
            assert refused("answer", "bad_signature") - before == len(bad)

    run(main)


def test_webhook_url_from_forwarded_headers_without_public_url() -> None:
    async def main() -> None:
        env = {"TWILIO_AUTH_TOKEN": TOKEN}
        async with open_stack(overrides={"twilio": {"validate_signature": True}}, simulator=SIM, env=env) as stack:
            url = "https://edge.example.org/twiml?t=1"
            request = post_twiml(stack, "/twiml?t=1", WEBHOOK, twilio_signature(url, WEBHOOK))
            forwarded = request.replace(
                b"Host: ", b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: edge.example.org\r\nHost: ", 1
            )
            assert (await exchange(stack, forwarded)).status == 200
            assert (await exchange(stack, request)).status == 403  # same signature, Host is 127.0.0.1

    run(main)


def test_upgrade_signed_by_twilio_runs_the_call_and_any_other_is_refused() -> None:
    async def main() -> None:
        async with signed_stack() as stack:
            results: list[CallResult] = []

            async def signed_call(query: str) -> None:
                signature = twilio_signature(f"wss://bridge.example.com/media{query}")
                opts = good_options(stack, extra_headers={"X-Twilio-Signature": signature})
                opts.url += query
                with trio.fail_after(60):
                    results.append(await run_call(opts))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(signed_call, "")  # the upgrade without a query
                nursery.start_soon(signed_call, "?tenant=acme&call=1")  # and with one
            await assert_byte_exact(stack, results, 2)

            before = refused("media", "bad_signature")
            good = twilio_signature("wss://bridge.example.com/media?x=y")
            for query, headers in (
                ("?x=y", {}),  # missing
                ("?x=y", {"X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}),  # forged
                ("?x=z", {"X-Twilio-Signature": good}),  # query tampered
                ("", {"X-Twilio-Signature": good}),  # query dropped
                ("?x=y", {"X-Twilio-Signature": twilio_signature("https://bridge.example.com/media?x=y")}),
            ):
                with pytest.raises(ConnectionRejected) as info:
                    async with open_websocket_url(
                        stack.media_url + query, extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()]
                    ):
                        pass
                assert info.value.status_code == 403
            assert refused("media", "bad_signature") - before == 5
            assert len(stack.simulator.sessions) == 2  # no refused upgrade opened a model session

    run(main)


# --------------------------------------------------------------------------------------------
# Bounded bad traffic


def test_a_slow_head_is_cut_off_at_the_time_limit() -> None:
    async def main() -> None:
        async with open_stack(overrides={"server": {"head_timeout_s": 1.5}}, simulator=SIM) as stack:
            async with trio.open_nursery() as nursery:
                results = await start_good_calls(stack, nursery, 1)
                before = refused("other", "head_timeout")
                # One byte a second: each byte arrives well within any per-read timeout.
                slow = b"POST /twiml HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                reply = await exchange(stack, slow, pace_s=1.0)
                assert reply.status == 408
                assert 1.4 < reply.elapsed < 3.0  # cut at the deadline, not when the head ended
                assert refused("other", "head_timeout") - before == 1
            await assert_byte_exact(stack, results, 1)

    run(main)


def test_an_oversized_head_is_refused() -> None:
    async def main() -> None:
        async with open_stack(overrides={"server": {"max_head_bytes": 4096}}, simulator=SIM) as stack:
            async with trio.open_nursery() as nursery:
                results = await start_good_calls(stack, nursery, 1)
                before = refused("other", "head_too_large")
                huge = b"GET /twiml HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 8192 + b"\r\n\r\n"
                reply = await exchange(stack, huge)
                assert reply.status == 431
                assert refused("other", "head_too_large") - before == 1
                # Within the limit is fine.
                small = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 3000 + b"\r\n\r\n"
                assert (await exchange(stack, small)).status == 200
            await assert_byte_exact(stack, results, 1)

    run(main)


def test_more_pending_connections_than_the_limit_are_refused_early() -> None:
    async def main() -> None:
        overrides = {"server": {"max_pending_connections": 3, "head_timeout_s": 2.0}}
        async with open_stack(overrides=overrides, simulator=SIM) as stack:
            async with trio.open_nursery() as nursery:
                results = await start_good_calls(stack, nursery, 1)  # a call is not pending
                before = refused("other", "too_many_pending")
                idle = [await trio.open_tcp_stream("127.0.0.1", stack.port) for _ in range(3)]
                with trio.fail_after(5):
                    while _door_pending(stack) < 3:
                        await trio.sleep(0.01)
                for _ in range(2):
                    reply = await exchange(stack, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert reply.status == 503 and reply.elapsed < 1.0  # at once, nothing read
                    assert b"too many connections" in reply.body
                assert refused("other", "too_many_pending") - before == 2
                for stream in idle:
                    await stream.aclose()
                with trio.fail_after(5):
                    while _door_pending(stack) > 0:
                        await trio.sleep(0.01)
                assert (await exchange(stack, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200
            await assert_byte_exact(stack, results, 1)

    run(main)


_DOORS: list[Any] = []


@pytest.fixture(autouse=True)
def _remember_front_doors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep each front door the stack makes, so a test can read its pending count."""
    from bridge.server import frontdoor, worker

    class Door(frontdoor.FrontDoor):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            _DOORS.append(self)

    _DOORS.clear()
    monkeypatch.setattr(worker, "FrontDoor", Door)


def _door_pending(stack: Stack) -> int:
    (door,) = [d for d in _DOORS if d.ctx is stack.ctx]
    return int(door.pending)


def test_an_oversized_carrier_message_closes_that_call_with_1009() -> None:
    async def main() -> None:
        async with open_stack(overrides={"server": {"max_message_bytes": 65536}}, simulator=SIM) as stack:
            async with trio.open_nursery() as nursery:
                results = await start_good_calls(stack, nursery, 1)
                async with open_websocket_url(stack.media_url, max_message_size=1 << 22) as ws:
                    start = {
                        "event": "start",
                        "streamSid": "MZ" + "1" * 32,
                        "start": {
                            "callSid": "CA" + "1" * 32,
                            "streamSid": "MZ" + "1" * 32,
                            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                        },
                    }
                    await ws.send_message(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                    await ws.send_message(json.dumps(start))
                    with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
                        await ws.send_message("x" * (2 << 20))  # 2 MiB: the close may come mid-send
                        while True:
                            await ws.get_message()
                    assert info.value.reason.code == 1009
            await assert_byte_exact(stack, results, 1)

    run(main)


# --------------------------------------------------------------------------------------------
# Admission


def test_call_beyond_the_limit_gets_the_overflow_and_live_calls_are_untouched() -> None:
    async def main() -> None:
        message = "All lines are busy, please call back."
        overrides = {"server": {"max_calls_per_worker": 2, "overflow": {"message": message}}}
        async with open_stack(overrides=overrides, simulator=SIM) as stack:
            async with trio.open_nursery() as nursery:
                results = await start_good_calls(stack, nursery, 2)
                twiml_before, media_before = refused("answer", "at_capacity"), refused("media", "at_capacity")
                # Call 3: the webhook answers with the overflow document...
                reply = await exchange(stack, post_twiml(stack, "/twiml", WEBHOOK, None))
                assert reply.status == 200 and reply.headers["content-type"].startswith("text/xml")
                root = ET.fromstring(reply.body)
                assert [child.tag for child in root] == ["Say", "Hangup"]
                assert root[0].text == message
                # ... and its upgrade (had it been made) is refused.
                with pytest.raises(ConnectionRejected) as info:
                    async with open_websocket_url(stack.media_url):
                        pass
                assert info.value.status_code == 503
                assert refused("answer", "at_capacity") - twiml_before == 1
                assert refused("media", "at_capacity") - media_before == 1
            await assert_byte_exact(stack, results, 2)
            assert len(stack.simulator.sessions) == 2  # the refused call never reached the model
            # Room again: the webhook connects calls as before.
            reply = await exchange(stack, post_twiml(stack, "/twiml", WEBHOOK, None))
            assert ET.fromstring(reply.body).find("Connect/Stream") is not None

    run(main)


def test_overflow_can_redirect() -> None:
    async def main() -> None:
        url = "https://overflow.example.com/voice?from=bridge"
        overrides = {"server": {"max_calls_per_worker": 1, "overflow": {"redirect_url": url}}}
        async with open_stack(overrides=overrides, simulator=SIM) as stack:
            async with trio.open_nursery() as nursery:
                results = await start_good_calls(stack, nursery, 1)
                reply = await exchange(stack, post_twiml(stack, "/twiml", WEBHOOK, None))
                root = ET.fromstring(reply.body)
                assert [child.tag for child in root] == ["Redirect"] and root[0].text == url
            await assert_byte_exact(stack, results, 1)

    run(main)


# --------------------------------------------------------------------------------------------
# Saying it where operators look


def test_readyz_says_when_calls_are_taken_unauthenticated() -> None:
    async def main() -> None:
        async with open_stack(simulator=SIM) as stack:
            reply = await _admin_get(stack, "/readyz")
            assert json.loads(reply.body) == {"ready": True}
        overrides = {"server": {"host": "0.0.0.0", "insecure_allow_unauthenticated_calls": True}}
        async with open_stack(overrides=overrides, simulator=SIM) as stack:
            reply = await _admin_get(stack, "/readyz")
            body = json.loads(reply.body)
            assert reply.status == 200 and body["ready"] is True
            (warning,) = body["warnings"]
            assert "insecure_allow_unauthenticated_calls" in warning and "'0.0.0.0'" in warning

    run(main)


async def _admin_get(stack: Stack, path: str) -> Reply:
    stream = await trio.open_tcp_stream("127.0.0.1", stack.admin_port or 0)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return Reply(int(head.split()[1]), {}, body, 0.0)
