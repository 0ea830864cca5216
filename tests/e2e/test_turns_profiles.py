"""Turn detection, per-call profiles, greeting, transcripts and DTMF, end to end.

Simulated Twilio caller → bridge worker → Realtime simulator, all on loopback in one trio run.
Each test asserts on what the simulator received (the wire), on what the bridge decided (the
finished call runner) and on what the caller heard.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import trio

from bridge.audio.wavfile import CALLER_ULAW, bundled
from bridge.call.runner import CallRunner
from bridge.testing.caller import CallResult, Pause, Say, WaitForReply
from bridge.testing.simulator import (
    DEFAULT_ASSISTANT_TRANSCRIPT,
    DEFAULT_USER_TRANSCRIPT,
    SimulatedSession,
    SimulatorOptions,
)
from bridge.testing.stack import Stack, open_stack
from tests.e2e.conftest import call, run, runner_for

FAST = SimulatorOptions(speed=8.0, response_audio_ms=1500)
SALES = {"model": "gpt-realtime-mini", "voice": "cedar", "instructions": "Sales for {caller_name}"}
# The first phrase of the bundled caller recording (speech from 10 to 525 ms, then its pause).
FIRST_PHRASE = bundled(CALLER_ULAW).data[: 700 * 8]


async def connected_call(stack: Stack, **kw: Any) -> CallResult:
    result = await call(stack, timeout_s=30, **kw)
    assert result.connected, result.connect_error
    return result


def events(sim: SimulatedSession, kind: str) -> list[dict[str, Any]]:
    return [e for e in sim.received_events if e.get("type") == kind]


def session_update(sim: SimulatedSession) -> dict[str, Any]:
    (update,) = events(sim, "session.update")
    session: dict[str, Any] = update["session"]
    return session


def index_of(sim: SimulatedSession, predicate: Any, after: int = -1) -> int:
    for i, e in enumerate(sim.received_events):
        if i > after and predicate(e):
            return i
    raise AssertionError("no such event received")


def is_type(kind: str) -> Any:
    return lambda e: e.get("type") == kind


def no_errors(sim: SimulatedSession) -> None:
    bad = [e for e in sim.emitted_events if e.get("type") == "error"]
    assert not bad, bad


async def post_twiml(port: int, form: dict[str, str]) -> dict[str, str]:
    """POST the voice webhook the way Twilio does; the <Parameter>s of the TwiML answer."""
    body = urlencode(form).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"POST /twiml HTTP/1.1\r\nHost: bridge.example.com\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, xml = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    root = ET.fromstring(xml)
    stream_el = root.find("./Connect/Stream")
    assert stream_el is not None and stream_el.get("url") == "wss://bridge.example.com/media"
    return {p.get("name", ""): p.get("value", "") for p in stream_el.findall("Parameter")}


# --- (a)/(b) profiles ---------------------------------------------------------------------------


def test_profile_chosen_by_stream_parameter() -> None:
    async def main() -> None:
        with trio.fail_after(30):
            async with open_stack(overrides={"profiles": {"sales": SALES}}, simulator=FAST) as stack:
                result = await connected_call(
                    stack,
                    realtime=False,
                    params={"profile": "sales", "caller_name": "Ada"},
                    script=[Say(FIRST_PHRASE), WaitForReply(timeout_ms=10_000, settle_ms=300)],
                )
                (sim,) = stack.simulator.sessions
                session = session_update(sim)
                assert session["model"] == "gpt-realtime-mini"
                assert session["audio"]["output"]["voice"] == "cedar"
                assert session["instructions"] == "Sales for Ada"
                assert sim.model == "gpt-realtime-mini"  # the connection asked for the profile's model
                assert sim.effective_session()["audio"]["output"]["voice"] == "cedar"
                no_errors(sim)
                runner = await runner_for(stack, result)
                assert runner.core.profile == "sales" and runner.core.warnings == []
                assert result.responses >= 1  # the call works with that profile

    run(main)


def test_profile_chosen_by_to_number_and_unknown_profile_falls_back() -> None:
    overrides = {
        "profiles": {"sales": SALES},
        "routes": [{"to": "+1555*", "profile": "sales"}],
    }

    async def main() -> None:
        with trio.fail_after(45):
            async with open_stack(overrides=overrides, simulator=FAST) as stack:
                params = await post_twiml(
                    stack.port, {"To": "+15550001234", "From": "+442071234567", "CallSid": "CA" + "1" * 32}
                )
                assert params["profile"] == "sales"
                assert params["to"] == "+15550001234" and params["from"] == "+442071234567"
                # A number no route matches gets no profile parameter (the default profile).
                other = await post_twiml(stack.port, {"To": "+442070000000", "From": "+15550001234"})
                assert "profile" not in other

                routed = await connected_call(
                    stack, realtime=False, params=params, script=[WaitForReply(timeout_ms=800)]
                )
                (sim,) = stack.simulator.sessions
                session = session_update(sim)
                assert session["model"] == "gpt-realtime-mini"
                assert session["audio"]["output"]["voice"] == "cedar"
                assert session["instructions"].startswith("Sales for")
                runner = await runner_for(stack, routed)
                assert runner.core.profile == "sales" and runner.core.warnings == []

                unknown = await connected_call(
                    stack, realtime=False, params={"profile": "nope"}, script=[WaitForReply(timeout_ms=800)]
                )
                sim2 = stack.simulator.sessions[1]
                defaults = stack.settings.realtime
                session2 = session_update(sim2)
                assert session2["model"] == defaults.model == "gpt-realtime"
                assert session2["audio"]["output"]["voice"] == defaults.voice
                assert session2["instructions"] == defaults.instructions
                runner2 = await runner_for(stack, unknown)
                assert runner2.core.profile == "default"
                assert len(runner2.core.warnings) == 1 and "unknown profile 'nope'" in runner2.core.warnings[0]
                assert runner2.core.end_reason == "caller_hangup"  # degraded, not dropped

    run(main)


# --- (c) greeting -------------------------------------------------------------------------------


def test_greeting_is_heard_before_the_caller_speaks() -> None:
    greeting = "Greet the caller warmly and ask how you can help."
    overrides = {"profiles": {"greeter": {"greeting": greeting}}}

    async def main() -> None:
        with trio.fail_after(30):
            async with open_stack(overrides=overrides, simulator=FAST) as stack:
                result = await connected_call(
                    stack,
                    realtime=True,
                    params={"profile": "greeter"},
                    script=[Pause(2000), Say(FIRST_PHRASE), WaitForReply(timeout_ms=10_000, settle_ms=300)],
                )
                assert result.ok
                spoke_at = result.utterances[0].started_at
                assert spoke_at >= 1.9
                # Model audio reached the caller and played before the caller said anything.
                assert result.first_media_at is not None and result.first_media_at < spoke_at
                assert result.response_starts and result.response_starts[0] < spoke_at
                (sim,) = stack.simulator.sessions
                creates = events(sim, "response.create")
                assert creates and creates[0].get("response", {}).get("instructions") == greeting
                # The greeting was asked for once the session was configured, before any user turn.
                first_create = index_of(sim, is_type("response.create"))
                assert index_of(sim, is_type("session.update")) < first_create
                assert sim.responses[0].status == "completed"
                assert not sim.items or sim.items[0].role == "assistant"
                # ... and the caller's own turn was answered afterwards.
                assert result.responses >= 2
                no_errors(sim)

    run(main)


def test_greeting_with_a_key_pressed_while_the_session_opens() -> None:
    # The digit arrives before the model session is ready; the greeting's response answers it too.
    # Two response.create in a row would make the API reject the second and lose the greeting.
    greeting = "Greet the caller."
    overrides = {"profiles": {"greeter": {"greeting": greeting}}}

    async def main() -> None:
        with trio.fail_after(30):
            async with open_stack(overrides=overrides, simulator=FAST) as stack:
                result = await connected_call(
                    stack,
                    realtime=False,
                    params={"profile": "greeter"},
                    dtmf=[(0, "5")],
                    script=[WaitForReply(timeout_ms=8_000, settle_ms=300)],
                )
                (sim,) = stack.simulator.sessions
                no_errors(sim)
                (create,) = events(sim, "response.create")
                assert create["response"]["instructions"] == greeting
                item_at = index_of(sim, is_type("conversation.item.create"))
                assert item_at < index_of(sim, is_type("response.create"))  # the digit is in its context
                assert len(sim.responses) == 1 and sim.responses[0].status == "completed"
                assert result.responses == 1
                assert (await runner_for(stack, result)).core.stats.dtmf == 1

    run(main)


# --- (d) DTMF -----------------------------------------------------------------------------------


def test_dtmf_reaches_the_model_and_gets_an_answer() -> None:
    overrides = {"profiles": {"quiet": {"dtmf_response": False}}}

    async def main() -> None:
        with trio.fail_after(40):
            async with open_stack(overrides=overrides, simulator=FAST) as stack:
                result = await connected_call(
                    stack,
                    realtime=False,
                    dtmf=[(1500, "5")],
                    script=[Pause(2000), WaitForReply(timeout_ms=10_000, settle_ms=300)],
                )
                assert result.dtmf_sent and result.dtmf_sent[0][1] == "5"
                (sim,) = stack.simulator.sessions

                def mentions_5(e: dict[str, Any]) -> bool:
                    if e.get("type") != "conversation.item.create":
                        return False
                    content = e["item"].get("content", [])
                    return any("5" in str(part.get("text", "")) for part in content)

                item_at = index_of(sim, mentions_5)
                index_of(sim, is_type("response.create"), after=item_at)  # followed by a response.create
                assert sim.items and "5" in sim.items[0].text and sim.items[0].role == "user"
                assert sim.responses and sim.responses[0].status == "completed"
                assert result.responses >= 1 and result.played_bytes > 0
                runner = await runner_for(stack, result)
                assert runner.core.stats.dtmf == 1
                no_errors(sim)

                # With dtmf_response = false the digit is told to the model, which is not asked to answer.
                quiet = await connected_call(
                    stack,
                    realtime=False,
                    params={"profile": "quiet"},
                    dtmf=[(200, "#")],
                    script=[Pause(400), WaitForReply(timeout_ms=1000)],
                )
                sim2 = stack.simulator.sessions[1]
                items = events(sim2, "conversation.item.create")
                assert len(items) == 1 and "#" in items[0]["item"]["content"][0]["text"]
                assert events(sim2, "response.create") == [] and sim2.responses == []
                assert quiet.responses == 0
                assert (await runner_for(stack, quiet)).core.stats.dtmf == 1

    run(main)


# --- (e) manual turns: the bridge's own detector --------------------------------------------------


def test_manual_mode_local_vad_commits_and_asks_for_a_response() -> None:
    overrides = {"realtime": {"turn_detection": {"type": "none"}}}

    async def main() -> None:
        with trio.fail_after(40):
            async with open_stack(overrides=overrides, simulator=FAST) as stack:
                result = await connected_call(
                    stack,
                    realtime=True,
                    speed=4.0,  # the local detector counts audio time, not wall time
                    script=[Pause(300), Say(), Pause(800), WaitForReply(timeout_ms=10_000, settle_ms=300)],
                )
                assert result.ok
                (sim,) = stack.simulator.sessions
                audio_in = session_update(sim)["audio"]["input"]
                assert "turn_detection" in audio_in and audio_in["turn_detection"] is None
                assert sim.turn_detection is None
                # The simulator detected nothing itself: the commit and the response.create came from us.
                emitted = {e["type"] for e in sim.emitted_events}
                assert "input_audio_buffer.speech_started" not in emitted
                commits = events(sim, "input_audio_buffer.commit")
                assert len(commits) == 1
                commit_at = index_of(sim, is_type("input_audio_buffer.commit"))
                index_of(sim, is_type("response.create"), after=commit_at)
                assert "input_audio_buffer.committed" in emitted
                # The committed turn holds the whole utterance (8.35 s said after 0.3 s of silence).
                assert sim.items[0].role == "user" and sim.items[0].audio_ms >= 8300
                assert sim.responses and sim.responses[0].status == "completed"
                # The caller heard the answer, after the end of its speech.
                assert result.responses == 1 and result.played_bytes == 1500 * 8
                (utterance,) = result.utterances
                assert utterance.last_voiced_at is not None
                assert result.response_starts[0] > utterance.last_voiced_at
                runner = await runner_for(stack, result)
                assert runner.core.stats.turns == 1 and runner.core.stats.response_latencies
                no_errors(sim)

    run(main)


# --- (f) server_vad and semantic_vad ------------------------------------------------------------


def test_vad_profiles_send_exactly_the_configured_fields() -> None:
    profiles = {
        "semantic": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}},
        "server": {
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.7,
                "silence_duration_ms": 800,
                "idle_timeout_ms": 9000,
            }
        },
    }
    wanted = {
        "semantic": {"type": "semantic_vad", "eagerness": "low", "create_response": True, "interrupt_response": True},
        "server": {
            "type": "server_vad",
            "threshold": 0.7,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 800,
            "idle_timeout_ms": 9000,
            "create_response": True,
            "interrupt_response": True,
        },
        # The default (no profile): server_vad with the API's defaults and no idle timeout.
        "default": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
        },
    }

    async def main() -> None:
        with trio.fail_after(30):
            async with open_stack(overrides={"profiles": profiles}, simulator=FAST) as stack:
                for i, name in enumerate(wanted):
                    params = {} if name == "default" else {"profile": name}
                    result = await connected_call(
                        stack, realtime=False, params=params, script=[WaitForReply(timeout_ms=600)]
                    )
                    sim = stack.simulator.sessions[i]
                    td = session_update(sim)["audio"]["input"]["turn_detection"]
                    assert td == wanted[name], name
                    assert (await runner_for(stack, result)).core.profile == name
                    # The simulator took the update as it came (a field it rejects would be an error).
                    no_errors(sim)
                    applied = sim.turn_detection
                    assert applied is not None and applied["type"] == td["type"]
                    assert {k: applied[k] for k in td} == td

    run(main)


# --- (g) transcripts ----------------------------------------------------------------------------


def _transcribed(log: dict[str, Any] | None = None) -> dict[str, Any]:
    overrides: dict[str, Any] = {"profiles": {"scribe": {"transcription": {"model": "gpt-4o-mini-transcribe"}}}}
    if log is not None:
        overrides["log"] = log
    return overrides


async def _transcribed_call(stack: Stack) -> tuple[CallResult, CallRunner, SimulatedSession]:
    result = await connected_call(
        stack,
        realtime=False,
        params={"profile": "scribe"},
        script=[Pause(200), Say(), WaitForReply(timeout_ms=10_000, settle_ms=300)],
    )
    assert result.ok and result.responses >= 1
    (sim,) = stack.simulator.sessions
    transcription = session_update(sim)["audio"]["input"]["transcription"]
    assert transcription == {"model": "gpt-4o-mini-transcribe"}
    emitted = {e["type"] for e in sim.emitted_events}
    # The model side did transcribe both ways: an empty transcript below is the bridge's doing.
    assert "conversation.item.input_audio_transcription.completed" in emitted
    assert "response.output_audio_transcript.done" in emitted
    return result, await runner_for(stack, result), sim


def test_transcripts_of_both_sides_are_kept() -> None:
    async def main() -> None:
        with trio.fail_after(30):
            async with open_stack(overrides=_transcribed(), simulator=FAST) as stack:
                _, runner, _ = await _transcribed_call(stack)
                transcript = runner.core.transcript
                caller = [t["text"] for t in transcript if t["who"] == "caller"]
                assistant = [t["text"] for t in transcript if t["who"] == "assistant"]
                assert caller == [DEFAULT_USER_TRANSCRIPT]
                assert assistant and assistant[0]
                # 1.5 s of the 6.5 s recording: the words spoken so far, from the start.
                assert DEFAULT_ASSISTANT_TRANSCRIPT.startswith(assistant[0])
                assert [t["who"] for t in transcript][:2] == ["caller", "assistant"]

    run(main)


def test_transcripts_not_kept_when_logging_them_is_off() -> None:
    async def main() -> None:
        with trio.fail_after(30):
            async with open_stack(overrides=_transcribed({"transcripts": False}), simulator=FAST) as stack:
                assert stack.settings.log.transcripts is False
                _, runner, _ = await _transcribed_call(stack)
                assert runner.core.transcript == []

    run(main)
