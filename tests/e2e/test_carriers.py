"""Every carrier end to end, on its own routes: the simulated carrier asks ``/{carrier}/answer``
what to do, follows the document it gets (parsed as the carrier parses it), streams to
``/{carrier}/media`` in the carrier's framing and format, and the Realtime simulator answers.

What each call shows:

* the answer document is one the carrier follows, and the profile and parameters it carries
  reach the call;
* the caller's audio reaches the model exactly (same format on both sides) or as the bridge's
  converter makes it (the same conversion applied to what was sent, compared as a signal);
* the model's audio reaches the caller and is played in full, likewise;
* a barge-in clears playback with the carrier's semantics (Twilio's followers echo the pending
  marks, Plivo and Vonage drop them and acknowledge the clear) and the truncate sent to the
  model is where the caller had heard to;
* hanging up closes the model's socket within a second;
* with verification on, the carrier's forged or missing credentials are refused on the answer
  and on the stream, and correct ones are admitted.
"""

from __future__ import annotations

import base64
import json
import queue
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding as KeyEncoding
from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat, PublicFormat

from bridge.audio.convert import make_converter
from bridge.audio.formats import AudioFormat, SessionFormat
from bridge.call.runner import CallRunner
from bridge.carrier import streamtoken
from bridge.testing.callers import (
    CALLERS,
    CallerOptions,
    Credentials,
    Pause,
    Say,
    Step,
    StreamSetup,
    WaitForReply,
    WebhookCall,
    fetch_answer,
    main,
    run_call,
)
from bridge.testing.callers.audio import linear, recording
from bridge.testing.simulator import SimulatedSession, SimulatorOptions
from bridge.testing.stack import Stack, open_stack
from tests.e2e.conftest import runner_for

FROM, TO = "+15550100001", "+15550100002"
PROFILE = "sales"
RESPONSE_MS = 600  # every answer of the simulated model: short, so the calls are quick


def carrier_table(carrier: str, fmt: AudioFormat) -> dict[str, Any]:
    """The ``[carriers.NAME]`` settings that make the carrier stream ``fmt``."""
    rate = fmt.sample_rate
    if carrier == "telnyx":
        return {"codec": {"ulaw": "PCMU", "alaw": "PCMA"}.get(fmt.encoding.value, "L16"), "sample_rate": rate}
    if carrier == "plivo":
        kind = "mulaw" if fmt.encoding.value == "ulaw" else "l16"
        return {"content_type": f"audio/x-{kind};rate={rate}"}
    if carrier == "signalwire":
        return {"codec": "PCMU@8000h" if fmt.encoding.value == "ulaw" else f"L16@{rate}h"}
    if carrier in ("vonage", "exotel"):
        return {"sample_rate": rate}
    return {}


@asynccontextmanager
async def carrier_stack(
    carrier: str,
    fmt: AudioFormat,
    session: str = "pcmu",
    *,
    table: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    simulator: SimulatorOptions | None = None,
) -> AsyncIterator[Stack]:
    """A stack answering ``carrier`` (verification off unless ``table`` says otherwise); calls to
    ``TO`` get the profile ``PROFILE``."""
    overrides: dict[str, Any] = {
        # A short end-of-turn silence: the caller's reply wait is real time.
        "realtime": {
            "audio_format": session,
            "dtmf_response": False,
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 200},
        },
        "profiles": {PROFILE: {"instructions": "You sell things to {from}."}},
        "routes": [{"to": TO, "profile": PROFILE}],
    }
    settings = {"verify": False, **carrier_table(carrier, fmt), **(table or {})}
    if carrier == "twilio":
        overrides["twilio"] = {"validate_signature": settings["verify"]}
    else:
        overrides["carriers"] = {carrier: settings}
    sim = simulator or SimulatorOptions(response_audio_ms=RESPONSE_MS)
    async with open_stack(overrides=overrides, simulator=sim, env=env) as stack:
        yield stack


def base_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.port}"


def new_call(carrier: str) -> WebhookCall:
    call_sid = "CA" + secrets.token_hex(16) if carrier in ("twilio", "signalwire") else secrets.token_hex(16)
    return WebhookCall(call_sid=call_sid, from_number=FROM, to_number=TO)


async def answer(stack: Stack, carrier: str, call: WebhookCall, credentials: Credentials | None = None) -> StreamSetup:
    reply = await fetch_answer(base_url(stack), carrier, call, credentials)
    assert reply.status == 200, reply
    return CALLERS[carrier].parse_answer(reply.body, reply.content_type)


def speech(fmt: AudioFormat, start_ms: int = 100, ms: int = 1200) -> bytes:
    """A stretch of the caller recording that is speech from start to end."""
    data = recording(fmt)
    return data[start_ms * fmt.bytes_per_ms : (start_ms + ms) * fmt.bytes_per_ms]


async def closed(session: SimulatedSession, timeout: float = 2.0) -> float:
    with trio.fail_after(timeout):
        while session.closed_at is None:
            await trio.sleep(0.01)
    return session.closed_at


# --- comparing audio -----------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def converted(convert: Any, pieces: list[bytes]) -> bytes:
    """``pieces`` through one converter direction, one payload each, as the bridge converts them."""
    return b"".join(base64.b64decode(convert(b64(p))) for p in pieces)


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    reference, test = reference.astype(np.float64), test.astype(np.float64)  # no int overflow
    noise = float(np.sum((test - reference) ** 2))
    signal = float(np.sum(reference**2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


# The same conversion applied to the same payloads gives the same samples: the bridge may differ
# from this reference only by float rounding in the resampler (at most one 16-bit step per sample,
# which is about 90 dB below speech at this level; one G.711 step where the session is G.711).
# 50 dB leaves room for that and is far above what any real fault gives: a byte-order slip, a
# lost or repeated 20 ms frame, or audio one sample out of step all measure below 20 dB.
# (Measured: every pair here is identical, SNR infinite; one sample out of step gives 2-12 dB.)
MIN_SNR_DB = 50.0


def assert_same_signal(got: bytes, expected: bytes, fmt: AudioFormat) -> None:
    assert abs(len(got) - len(expected)) <= 2 * fmt.sample_width, (len(got), len(expected))
    n = min(len(got), len(expected)) // fmt.sample_width * fmt.sample_width
    want, have = linear(expected[:n], fmt), linear(got[:n], fmt)
    assert float(np.sqrt(np.mean(want.astype(np.float64) ** 2))) > 300  # speech, not silence
    assert snr_db(want, have) >= MIN_SNR_DB
    # The measure is sensitive: the same audio one sample out of step is far below the bound.
    assert snr_db(want[1:], have[:-1]) < 20.0


def model_audio(session: SimulatedSession, item_id: str | None = None) -> list[bytes]:
    """The model's audio deltas as it sent them (all items, or one)."""
    return [
        base64.b64decode(e["delta"])
        for e in session.emitted_events
        if e.get("type") == "response.output_audio.delta" and item_id in (None, e.get("item_id"))
    ]


# --- one call per carrier and format -----------------------------------------------------------------------

# (carrier, carrier format, session format): every format each carrier can stream, against a
# session in the same format (passthrough: byte-exact) and in another (converted).
FORMAT_CASES = [
    ("twilio", "ulaw_8k", "pcmu"),
    ("twilio", "ulaw_8k", "pcm16"),
    ("telnyx", "ulaw_8k", "pcmu"),
    ("telnyx", "alaw_8k", "pcma"),
    ("telnyx", "l16_16k", "pcm16"),
    ("telnyx", "l16_24k", "pcm16"),
    ("plivo", "ulaw_8k", "pcmu"),
    ("plivo", "l16_8k", "pcm16"),
    ("plivo", "l16_16k", "pcmu"),
    ("vonage", "l16_8k", "pcma"),
    ("vonage", "l16_16k", "pcm16"),
    ("vonage", "l16_24k", "pcm16"),
    ("signalwire", "ulaw_8k", "pcmu"),
    ("signalwire", "l16_16k", "pcm16"),
    ("signalwire", "l16_24k", "pcm16"),
    ("exotel", "l16_8k", "pcmu"),
    ("exotel", "l16_16k", "pcm16"),
    ("exotel", "l16_24k", "pcm16"),
]


def expected_parameters(carrier: str, call: WebhookCall) -> dict[str, str]:
    """What each answer document carries to the stream, in the carrier's own terms."""
    full = {"profile": PROFILE, "from": call.from_number, "to": call.to_number, "call_sid": call.call_sid}
    if carrier == "exotel":
        return {"profile": PROFILE}  # from, to and the call id come in Exotel's start anyway
    return full


@pytest.mark.parametrize(("carrier", "fmt_id", "session"), FORMAT_CASES)
def test_a_call_through_each_carrier_in_each_format(carrier: str, fmt_id: str, session: str) -> None:
    fmt = AudioFormat.from_id(fmt_id)
    session_format = SessionFormat(session)

    async def main() -> None:
        async with carrier_stack(carrier, fmt, session) as stack:
            call = new_call(carrier)
            setup = await answer(stack, carrier, call)
            # The document names this carrier's own stream route, in the format configured.
            assert urlsplit(setup.url).path == f"/{carrier}/media"
            assert setup.audio_format == fmt.id
            if carrier == "plivo":
                # extraHeaders allows one alphanumeric pair: the bridge packs its parameters in it.
                assert list(setup.params) == ["bridge"]
            else:
                assert setup.params == expected_parameters(carrier, call)
            options = setup.caller_options(
                call,
                insecure=True,
                realtime=False,
                script=[Say(speech(fmt)), WaitForReply(timeout_ms=8000, settle_ms=200)],
                dtmf=[(60, "5")],
            )
            result = await run_call(options)
            assert result.ok, result.connect_error or result.close_reason
            assert result.errors == []
            (sim,) = stack.simulator.sessions

            # The profile and the parameters chosen at the answer reached the call.
            await stack.wait_idle()
            runner = await runner_for(stack, result)
            core = runner.core
            assert core.profile == PROFILE
            assert {k: core.parameters.get(k) for k in ("profile", "from", "to")} == {
                "profile": PROFILE,
                "from": FROM,
                "to": TO,
            }
            assert core.end_reason == "caller_hangup"
            assert core.stats.dtmf == 1  # the key pressed, in the carrier's DTMF message

            # The caller's audio reached the model: exactly, or as the converter makes it.
            converter = make_converter(fmt, session_format)
            sent = bytes(result.audio_sent)
            if converter.passthrough:
                assert bytes(sim.appended_audio) == sent
            else:
                expected = converted(converter.to_session, chunks(sent, fmt.bytes_per_ms * result.frame_ms))
                assert_same_signal(bytes(sim.appended_audio), expected, session_format.audio)

            # The model's answer reached the caller and played in full.
            deltas = model_audio(sim)
            assert sum(len(d) for d in deltas) == RESPONSE_MS * session_format.bytes_per_ms
            expected_heard = b"".join(deltas) if converter.passthrough else converted(converter.to_carrier, deltas)
            if converter.passthrough:
                assert bytes(result.audio_played) == expected_heard
            else:
                assert_same_signal(bytes(result.audio_played), expected_heard, fmt)
            assert result.responses == 1 and result.clears == [] and result.unplayed_bytes == 0
            assert len(result.marks_echoed) == len(result.marks_received) > 0

            # Hanging up closed the model's socket at once.
            assert result.hung_up_at is not None
            hung_up = result.clock_origin + result.hung_up_at
            assert 0 <= await closed(sim) - hung_up < 1.0

    trio.run(main)


# --- barge-in ----------------------------------------------------------------------------------------

BARGE_IN_RESPONSE_MS = 1500  # generated at 4x real time, so most of it is queued at the carrier
BARGE_IN_AFTER_MS = 500
# The bridge cannot see the carrier play: it estimates the heard position from its own clock
# since each chunk left (and confirms it by the echoed marks); the caller measures what it had
# played when the clear arrived. The two differ by the loopback transit of the audio and of the
# clear and by scheduling (a few ms each way), by the resampler's delay where the formats differ
# (at most 2 ms: bridge/audio/resample.py) and by the frame a framing carrier may hold back
# (none here: the simulator's 100 ms chunks are whole 20 ms frames). 40 ms covers that with room
# for a loaded machine, and is still 8 % of what had been heard.
BARGE_IN_TOLERANCE_MS = 40

BARGE_IN_CASES = [
    ("twilio", "ulaw_8k", "pcmu"),
    ("telnyx", "l16_16k", "pcm16"),
    ("plivo", "ulaw_8k", "pcmu"),
    ("vonage", "l16_16k", "pcm16"),
    ("signalwire", "l16_24k", "pcm16"),
    ("exotel", "l16_8k", "pcmu"),
]


@pytest.mark.parametrize(("carrier", "fmt_id", "session"), BARGE_IN_CASES)
def test_barge_in_clears_with_the_carriers_semantics_and_truncates_at_the_heard_position(
    carrier: str, fmt_id: str, session: str
) -> None:
    fmt = AudioFormat.from_id(fmt_id)
    echoes_on_clear = carrier not in ("plivo", "vonage")

    async def main() -> None:
        sim_options = SimulatorOptions(response_audio_ms=BARGE_IN_RESPONSE_MS)
        async with carrier_stack(carrier, fmt, session, simulator=sim_options) as stack:
            call = new_call(carrier)
            setup = await answer(stack, carrier, call)
            options = setup.caller_options(
                call,
                insecure=True,
                realtime=False,
                script=[Say(speech(fmt, ms=800)), WaitForReply(timeout_ms=10_000, settle_ms=200)],
                interrupt_after_assistant_ms=BARGE_IN_AFTER_MS,
                interrupt_audio=speech(fmt, start_ms=1500, ms=600),
            )
            result = await run_call(options)
            assert result.ok and result.errors == []
            await stack.wait_idle()
            core = (await runner_for(stack, result)).core
            assert core.stats.barge_ins == 1
            (sim,) = stack.simulator.sessions
            (clear,) = result.clears
            assert clear.cleared_bytes > 0  # queued audio was dropped

            # The carrier's own answer to the clear.
            assert clear.marks_flushed  # marks were pending when the clear came
            flushed_echoes = [m.name for m in result.marks_echoed if m.cleared]
            if echoes_on_clear:
                assert flushed_echoes == clear.marks_flushed and result.marks_dropped == []
                assert result.clears_acknowledged == 0
            else:
                assert flushed_echoes == [] and result.marks_dropped == clear.marks_flushed
                assert result.clears_acknowledged == 1  # clearedAudio / websocket:cleared
            assert len(result.marks_echoed) + len(result.marks_dropped) == len(result.marks_received)

            # The model was told to cut its answer where the caller had heard to.
            (item_id, audio_end_ms, accepted) = sim.truncations[0]
            assert accepted
            assert abs(audio_end_ms - clear.response_played_ms) <= BARGE_IN_TOLERANCE_MS
            assert audio_end_ms <= clear.response_played_ms + BARGE_IN_TOLERANCE_MS
            assert sim.responses[0].item_id == item_id

            # The answer to the interruption then played in full.
            assert result.responses == 2 and sim.responses[-1].status == "completed"
            heard_ms = result.ms(result.played_bytes)
            assert abs(heard_ms - (clear.response_played_ms + BARGE_IN_RESPONSE_MS)) <= 5

    trio.run(main)


# --- authentication -------------------------------------------------------------------------------------


def ed25519_pair() -> tuple[str, str]:
    """(private, public) keys, base64 of their raw bytes: the private one signs as Telnyx does."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(KeyEncoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(KeyEncoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def auth_setup(carrier: str) -> tuple[dict[str, str], dict[str, Any], Credentials, Credentials]:
    """The service's secrets, the carrier table, and the carrier's right and wrong credentials."""
    secret, wrong = secrets.token_hex(16), secrets.token_hex(16)
    if carrier == "telnyx":
        private, public = ed25519_pair()
        other, _ = ed25519_pair()
        env = {"TELNYX_PUBLIC_KEY": public, "BRIDGE_STREAM_SECRET": secret}
        return env, {}, Credentials(private), Credentials(other)
    if carrier == "exotel":
        table = {"api_key": "exokey"}
        return {"EXOTEL_API_TOKEN": secret}, table, Credentials(secret, "exokey"), Credentials(wrong, "exokey")
    name = {
        "twilio": "TWILIO_AUTH_TOKEN",
        "plivo": "PLIVO_AUTH_TOKEN",
        "vonage": "VONAGE_SIGNATURE_SECRET",
        "signalwire": "SIGNALWIRE_SIGNING_KEY",
    }[carrier]
    return {name: secret}, {}, Credentials(secret), Credentials(wrong)


def forged_stream(carrier: str, options: CallerOptions, wrong: Credentials) -> CallerOptions:
    """The stream as someone without the carrier's secret would open it: wrong credentials, or a
    wrong copy of the token the answer document carried."""
    if carrier == "telnyx":  # a well-formed token, made with another key
        forged = streamtoken.issue(b"not-the-bridges-key", "telnyx", options.call_sid or "")
        return replace(options, params={**options.params, "bridge_token": forged})
    if carrier == "signalwire":
        return replace(options, bearer_token=streamtoken.issue(b"not-the-signing-key", "signalwire", ""))
    return replace(options, credentials=wrong)


def unauthenticated_stream(carrier: str, options: CallerOptions) -> CallerOptions:
    if carrier == "telnyx":
        return replace(options, params={k: v for k, v in options.params.items() if k != "bridge_token"})
    if carrier == "signalwire":
        return replace(options, bearer_token=None)
    return replace(options, credentials=None)


@pytest.mark.parametrize("carrier", sorted(CALLERS))
def test_forged_or_missing_authentication_is_refused_and_the_carriers_own_is_admitted(carrier: str) -> None:
    env, table, right, wrong = auth_setup(carrier)
    fmt = CALLERS[carrier].formats[0]

    async def main() -> None:
        async with carrier_stack(carrier, fmt, table={"verify": True, **table}, env=env) as stack:
            call = new_call(carrier)
            # The voice webhook: unsigned or signed with another secret is refused.
            for credentials in (None, wrong):
                reply = await fetch_answer(base_url(stack), carrier, call, credentials)
                assert reply.status == 403, (credentials, reply)
            setup = await answer(stack, carrier, call, right)
            # The document hands the carrier what its stream will prove itself with.
            if carrier == "telnyx":
                assert streamtoken.check(env["BRIDGE_STREAM_SECRET"].encode(), "telnyx", setup.params["bridge_token"])
            elif carrier == "signalwire":
                assert setup.bearer_token
            elif carrier == "vonage":
                assert setup.authorization  # the NCCO asks Vonage to sign the upgrade
            elif carrier == "exotel":
                assert setup.basic == ("exokey", env["EXOTEL_API_TOKEN"])
            # A short call in real time, so the model session is up before the caller hangs up.
            script: list[Step] = [Say(speech(fmt, ms=300)), Pause(200)]
            admitted = setup.caller_options(call, insecure=True, script=script)
            if admitted.credentials is None:  # Exotel's come in the document's URL
                admitted.credentials = right

            # The stream: forged or missing credentials are refused before a model session opens.
            for refused in (forged_stream(carrier, admitted, wrong), unauthenticated_stream(carrier, admitted)):
                result = await run_call(refused)
                if carrier == "telnyx":  # nothing to check on the upgrade: the start proves itself
                    assert result.connected and result.close_code == 1008
                    assert result.close_reason is not None and "bridge_token" in result.close_reason
                else:
                    assert not result.connected
                    assert result.connect_error is not None and "HTTP 403" in result.connect_error
            assert stack.simulator.sessions == []

            result = await run_call(admitted)
            assert result.ok and result.errors == []
            (sim,) = stack.simulator.sessions
            # The call ran: all the caller said reached the model (a pcmu session: 8 bytes a ms).
            assert abs(len(sim.appended_audio) / 8 - result.ms(len(result.audio_sent))) <= 1
            await stack.wait_idle()
            assert (await runner_for(stack, result)).core.profile == PROFILE

    trio.run(main)


# --- bridge call --carrier ---------------------------------------------------------------------------------


def test_bridge_call_as_a_carrier_through_its_answer_document(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line: Plivo with its signature checked, the caller signing with the token it
    reads from the environment, the answer's parameters on the stream."""
    token = secrets.token_hex(16)
    monkeypatch.setenv("CARRIER_TEST_TOKEN", token)
    ports: queue.Queue[int] = queue.Queue()
    done = threading.Event()
    seen: list[CallRunner] = []

    async def serve() -> None:
        fmt = AudioFormat.from_id("l16_16k")
        async with carrier_stack("plivo", fmt, table={"verify": True}, env={"PLIVO_AUTH_TOKEN": token}) as stack:
            ports.put(stack.port)
            while not done.is_set():
                await trio.sleep(0.02)
            await stack.wait_idle()
            seen.extend(stack.hooks.finished)

    thread = threading.Thread(target=trio.run, args=(serve,))
    thread.start()
    try:
        base = f"http://127.0.0.1:{ports.get(timeout=10)}"
        argv = ["--carrier", "plivo", "--url", base, "--answer", "--secret-env", "CARRIER_TEST_TOKEN", "--to", TO]
        assert main([*argv, "--fast", "--json", "--trailing-silence", "0", "--dtmf", "0:3"]) == 0
        printed = capsys.readouterr().out  # the JSON, among the stack's log lines
        out = json.loads(printed[printed.index("{\n") : printed.rindex("\n}") + 2])
        # Without the token the answer is refused, and the command says so.
        assert main(["--carrier", "plivo", "--url", base, "--answer", "--fast"]) == 2
        assert "HTTP 403" in capsys.readouterr().err
    finally:
        done.set()
        thread.join(10)
    assert out["ok"] and out["carrier"] == "plivo" and out["audio_format"] == "l16_16k" and out["errors"] == []
    (runner,) = seen
    assert runner.core.profile == PROFILE and runner.core.stats.dtmf == 1
    assert runner.core.call_sid == out["call_sid"]


@pytest.mark.parametrize(("carrier", "fmt_id"), [("vonage", "l16_16k"), ("exotel", "l16_8k")])
def test_a_framing_carrier_hears_the_tail_of_an_answer(carrier: str, fmt_id: str) -> None:
    """The model's deltas are any length (here 30 ms: one and a half 20 ms frames); a framing
    writer holds back the half frame, and the end of the answer's audio sends it, padded with
    silence to a whole frame. So the last 10 ms of a 610 ms answer are played with it (followed
    by 10 ms of silence), not at the start of the next answer."""
    fmt = AudioFormat.from_id(fmt_id)

    async def main() -> None:
        sim = SimulatorOptions(response_audio_ms=610, delta_ms=30)
        async with carrier_stack(carrier, fmt, "pcm16", simulator=sim) as stack:
            call = new_call(carrier)
            setup = await answer(stack, carrier, call)
            script: list[Step] = [Say(speech(fmt)), WaitForReply(timeout_ms=5000, settle_ms=200)]
            result = await run_call(setup.caller_options(call, insecure=True, realtime=False, script=script))
            assert result.ok and result.responses == 1 and result.errors == []
            assert result.ms(result.played_bytes) == 620
            # The padding is silence at the very end; everything before it is the answer.
            assert result.audio_played[-result.bytes_per_ms * 10 :] == bytes(result.bytes_per_ms * 10)
            runner = await runner_for(stack, result)
            assert runner.core.stats.frames_out > 0

    trio.run(main)
