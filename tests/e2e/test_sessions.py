"""Calls outlive the model socket: the simulator drops, resets or expires a session, refuses
reconnects, and the bridge keeps the caller on (issue: reconnect and hand over)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trio

from bridge.testing.caller import Pause, Say, WaitForReply
from bridge.testing.simulator import SimulatorOptions
from bridge.testing.stack import open_stack
from tests.e2e.conftest import SPEECH, call, run

FRAME = 160
TRANSCRIBED = {"realtime": {"transcription": {"model": "gpt-4o-mini-transcribe"}}}


def overrides(**realtime: Any) -> dict[str, Any]:
    return {"realtime": {**TRANSCRIBED["realtime"], **realtime}}


def seam(sent: bytes, before: bytes, after: bytes) -> bytes:
    """What was sent but reached neither session: frames in flight to a socket as it died."""
    assert sent.startswith(before), "the first session got the caller's audio in order"
    assert sent.endswith(after), "the new session got the rest in order"
    return sent[len(before) : len(sent) - len(after)]


@pytest.mark.parametrize("mode", ["close", "reset"])
def test_a_dropped_socket_mid_answer_is_replaced_and_the_call_goes_on(tmp_path: Path, mode: str) -> None:
    async def main() -> None:
        # The first answer plays from about 2.3 s to 8.3 s (6 s of audio, generated 4x faster);
        # the socket drops at 5 s, while it plays. The second session then answers the next turn.
        sim = SimulatorOptions(response_audio_ms=6000, drop_after_s=5.0, drop_mode=mode, fault_sessions=1)
        async with open_stack(overrides=overrides(), simulator=sim, records=tmp_path / "c.sqlite") as stack:
            script = [Pause(200), Say(), Pause(4500), Say(), WaitForReply(timeout_ms=20_000, settle_ms=500)]
            result = await call(stack, audio=SPEECH, script=script)
            assert result.ok and result.closed_by == "caller", result
            first, second = stack.simulator.sessions
            assert first.fault == mode and second.fault is None
            # The new session was configured exactly as the old one ...
            updates = [[e for e in s.received_events if e["type"] == "session.update"] for s in (first, second)]
            assert updates[0] == updates[1] and len(updates[0]) == 1
            # ... and seeded with the conversation so far: the caller's turn and the model's answer.
            seeded = [(i.get("role"), i["content"][0]["text"]) for i in second.created_items]
            assert ("user", first.options.user_transcript) in seeded
            assert ("assistant", first.responses[0].transcript) in seeded
            # The cut answer was cleared from the caller's ear like a barge-in.
            assert result.clears, "playback cleared when the session dropped mid-answer"
            # Caller audio: in order to the first session, kept during the gap, then to the new one;
            # at most a frame in flight to the dying socket can be lost at the seam.
            lost = seam(bytes(result.audio_sent), bytes(first.appended_audio), bytes(second.appended_audio))
            assert len(lost) <= 2 * FRAME
            # The new session answered the caller's next turn and the caller heard it.
            assert second.responses and second.responses[-1].status == "completed"
            assert result.played_bytes > 0
            await stack.wait_idle()
            (runner,) = stack.hooks.finished
            (event,) = runner.core.session_events
            assert event["kind"] == "reconnect" and event["gap_ms"] <= 1000
            assert stack.store is not None
            (record,) = stack.store.query()
            assert record.reconnects == 1 and record.end_reason == "caller_hangup"
            assert record.session_events == [event]

    run(main)


def test_session_expiry_is_survived() -> None:
    async def main() -> None:
        sim = SimulatorOptions(response_audio_ms=1500, expire_after_s=2.5, fault_sessions=1)
        async with open_stack(overrides=overrides(), simulator=sim) as stack:
            script = [Pause(200), Say(), WaitForReply(timeout_ms=10_000), Pause(1000), Say(), WaitForReply(10_000)]
            result = await call(stack, audio=SPEECH, script=script)
            assert result.ok and result.closed_by == "caller"
            first, second = stack.simulator.sessions
            assert first.expired and not second.expired
            await stack.wait_idle()
            (runner,) = stack.hooks.finished
            assert [e["cause"] for e in runner.core.session_events] == ["session_expired"]
            assert runner.core.end_reason == "caller_hangup"

    run(main)


def test_a_silent_socket_is_found_by_its_missing_pongs() -> None:
    async def main() -> None:
        sim = SimulatorOptions(response_audio_ms=1000, drop_after_s=1.0, drop_mode="silent", fault_sessions=1)
        quick_pings = overrides(ping_interval_s=0.3, ping_timeout_s=0.5)
        async with open_stack(overrides=quick_pings, simulator=sim) as stack:
            result = await call(stack, audio=SPEECH, script=[Pause(2500), Say(), WaitForReply(timeout_ms=10_000)])
            assert result.ok
            assert len(stack.simulator.sessions) == 2
            await stack.wait_idle()
            (runner,) = stack.hooks.finished
            assert [e["cause"] for e in runner.core.session_events] == ["ping_timeout"]

    run(main)


def test_two_handovers_lose_and_repeat_no_caller_audio() -> None:
    async def main() -> None:
        # Sessions "expire" after 8 s here; handing over at 3 s keeps every one of them younger.
        sim = SimulatorOptions(response_audio_ms=1200, max_session_s=8.0)
        async with open_stack(overrides=overrides(session_handover_s=3.0), simulator=sim) as stack:
            turn = [Say(), WaitForReply(timeout_ms=10_000, settle_ms=400), Pause(1200)]
            result = await call(stack, audio=SPEECH, script=[Pause(200), *turn, *turn, *turn, *turn])
            assert result.ok and result.closed_by == "caller"
            sessions = stack.simulator.sessions
            assert len(sessions) >= 3, "two handovers or more"
            assert not any(s.expired for s in sessions)
            # Every frame reached exactly one session, in order: nothing lost, nothing twice.
            assert b"".join(bytes(s.appended_audio) for s in sessions) == bytes(result.audio_sent)
            await stack.wait_idle()
            (runner,) = stack.hooks.finished
            assert runner.core.stats.handovers == len(sessions) - 1
            assert runner.core.stats.reconnects == 0
            # Each new session got the same configuration and the conversation so far.
            first_update = next(e for e in sessions[0].received_events if e["type"] == "session.update")
            for later in sessions[1:]:
                assert next(e for e in later.received_events if e["type"] == "session.update") == first_update
                assert any(i.get("role") == "assistant" for i in later.created_items)

    run(main)


def test_when_reconnects_keep_failing_the_call_ends_with_a_record_that_says_why(tmp_path: Path) -> None:
    async def main() -> None:
        sim = SimulatorOptions(drop_after_s=1.0, drop_mode="close", fault_sessions=1)
        settings = overrides(reconnect_timeout_s=1.0)
        async with open_stack(overrides=settings, simulator=sim, records=tmp_path / "c.sqlite") as stack:
            # Once the first session is up, every later attempt is refused.
            async def refuse_later() -> None:
                while not stack.simulator.sessions:
                    await trio.sleep(0.02)
                stack.simulator.options = dataclasses.replace(stack.simulator.options, refuse_connections=1_000)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(refuse_later)
                result = await call(stack, audio=SPEECH, script=[Pause(6000)])
            assert result.closed_by == "server" and result.close_code == 1011
            assert result.close_reason is not None and "model_error" in result.close_reason
            await stack.wait_idle()
            assert stack.store is not None
            (record,) = stack.store.query()
            assert record.end_reason == "model_error"
            assert record.end_detail is not None and "reconnect failed" in record.end_detail
            assert record.session_events[-1]["failed"] is True and record.session_events[-1]["attempts"] >= 1
            assert len(stack.simulator.rejected) >= 1  # retried (the unit tests check the backoff)

    run(main)
