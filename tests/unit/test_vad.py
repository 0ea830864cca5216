"""The local voice-activity detector (``turn_detection = none``) against measured speech boundaries.

The true boundaries of the bundled recordings were measured once, offline, with a method that
shares nothing with EnergyVad (5 ms frame energy against the recording's own noise floor, checked
on a plot); they live in ``tests/data/vad_boundaries.json`` with a note on the method.

What counts as a boundary: a *turn* is a run of speech whose pauses are all shorter than
``end_silence_ms`` (500 ms by default), because a shorter pause must not end the caller's turn.
Every pause inside the bundled caller recording is shorter (190, 390 and 190 ms), so the recording
is one turn; the tests play it twice with a second of silence around each copy, which gives two
turns with a real start and a real end each. With ``end_silence_ms`` below the shortest pause the
detector must instead find every phrase.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bridge.audio import ALAW_8K, L16_8K, L16_16K, L16_24K, ULAW_8K, AudioError, AudioFormat
from bridge.audio.resample import Resampler
from bridge.audio.wavfile import ASSISTANT_PCM16, CALLER_ALAW, CALLER_ULAW, bundled
from bridge.call.core import Action, CallCore, Note, SendModel
from bridge.call.vad import EnergyVad
from bridge.carrier import base as tel
from bridge.carrier.twilio import Twilio
from bridge.config import LocalVad, Settings
from bridge.realtime import events as rt

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

BOUNDARIES = json.loads((Path(__file__).parent.parent / "data" / "vad_boundaries.json").read_text())
TOLERANCE_MS = 100.0
FRAME = 160  # 20 ms of G.711 at 8 kHz, what Twilio sends per media message
LEAD_MS = 1000  # silence before, between and after the copies of a recording
ENCODINGS = {
    CALLER_ULAW: (ULAW_8K, audioop.lin2ulaw, audioop.ulaw2lin),
    CALLER_ALAW: (ALAW_8K, audioop.lin2alaw, audioop.alaw2lin),
}


@dataclass
class Detected:
    kind: str  # "start" or "stop"
    boundary_ms: float  # last_start_ms / last_end_ms right after the change
    reported_at_ms: float  # position of the end of the frame that produced the change


def detector(vad: LocalVad | None = None) -> EnergyVad:
    v = vad or LocalVad()
    return EnergyVad(v.start_dbfs, v.stop_dbfs, v.start_ms, v.end_silence_ms)


def run_carrier(vad: EnergyVad, data: bytes, fmt: AudioFormat, frame_ms: int = 20) -> list[Detected]:
    """Feed ``data`` (samples in ``fmt``) as a carrier sends it: base64 frames of ``frame_ms``."""
    out = []
    frame = frame_ms * fmt.bytes_per_ms
    for off in range(0, len(data), frame):
        change = vad.feed(base64.b64encode(data[off : off + frame]).decode(), fmt)
        if change is not None:
            out.append(_detected(vad, change, (off + frame) / fmt.bytes_per_ms))
    return out


def run_pcm16(vad: EnergyVad, lin: bytes, frame_bytes: int = 2 * FRAME) -> list[Detected]:
    out = []
    for off in range(0, len(lin), frame_bytes):
        change = vad.feed_pcm16(lin[off : off + frame_bytes])
        if change is not None:
            out.append(_detected(vad, change, (off + frame_bytes) / 16))
    return out


def _detected(vad: EnergyVad, change: str, at_ms: float) -> Detected:
    boundary = vad.last_start_ms if change == "start" else vad.last_end_ms
    assert boundary is not None
    return Detected(change, boundary, at_ms)


def silence_lin(ms: float) -> bytes:
    return b"\0\0" * round(ms * 8)


def twice_with_silence(lin: bytes) -> tuple[bytes, list[float]]:
    """silence, recording, silence, recording, silence (all PCM16 at 8 kHz); the copies' offsets in ms."""
    rec_ms = len(lin) / 2 / 8
    offsets = [float(LEAD_MS), 2 * LEAD_MS + rec_ms]
    stream = silence_lin(LEAD_MS) + lin + silence_lin(LEAD_MS) + lin + silence_lin(LEAD_MS)
    stream += b"\0" * (-len(stream) % (2 * FRAME))  # whole 20 ms frames, as a phone sends
    return stream, offsets


def expected(segments: list[list[int]], offsets: list[float]) -> list[tuple[float, float]]:
    return [(off + s, off + e) for off in offsets for s, e in segments]


def assert_boundaries(found: list[Detected], truth: list[tuple[float, float]], end_silence_ms: int) -> None:
    kinds = [d.kind for d in found]
    assert kinds == ["start", "stop"] * len(truth), f"detector changes {kinds} for {len(truth)} segment(s)"
    for i, (start, end) in enumerate(truth):
        got_start, got_stop = found[2 * i], found[2 * i + 1]
        assert abs(got_start.boundary_ms - start) <= TOLERANCE_MS, (i, got_start, start)
        assert abs(got_stop.boundary_ms - end) <= TOLERANCE_MS, (i, got_stop, end)
        # The end is only known once the silence has lasted end_silence_ms, and not much later.
        assert end_silence_ms <= got_stop.reported_at_ms - got_stop.boundary_ms <= end_silence_ms + 40


def errors(found: list[Detected], truth: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(found[2 * i].boundary_ms - s, found[2 * i + 1].boundary_ms - e) for i, (s, e) in enumerate(truth)]


# --- the measured boundaries themselves ----------------------------------------------------


def test_measured_boundaries_are_plausible() -> None:
    for name, rec in BOUNDARIES["recordings"].items():
        wav = bundled(name)
        assert wav.sample_rate == rec["sample_rate"]
        assert wav.duration_ms == pytest.approx(rec["duration_ms"])
        phrases = rec["phrases_ms"]
        flat = [t for seg in phrases for t in seg]
        assert flat == sorted(flat) and flat[0] >= 0 and flat[-1] <= wav.duration_ms
        # A turn is a run of phrases with pauses under end_silence_ms; every pause here is shorter.
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(phrases)]
        assert all(0 < g < BOUNDARIES["turn_end_silence_ms"] for g in gaps)
        assert rec["turns_ms"] == [[phrases[0][0], phrases[-1][1]]]


def test_default_thresholds_are_the_documented_ones() -> None:
    v = LocalVad()
    assert (v.start_dbfs, v.stop_dbfs, v.start_ms, v.end_silence_ms) == (-35.0, -45.0, 60, 500)


# --- the caller recording, μ-law and A-law, default thresholds ------------------------------


@pytest.mark.parametrize("name", [CALLER_ULAW, CALLER_ALAW])
def test_turn_boundaries_within_100ms(name: str) -> None:
    fmt, lin2g711, g7112lin = ENCODINGS[name]
    lin, offsets = twice_with_silence(g7112lin(bundled(name).data, 2))
    found = run_carrier(detector(), lin2g711(lin, 2), fmt)
    truth = expected(BOUNDARIES["recordings"][name]["turns_ms"], offsets)
    assert_boundaries(found, truth, LocalVad().end_silence_ms)
    # Measured: starts 40-42 ms late (the onset ramps up through -35 dBFS), ends within 3 ms.
    for start_err, end_err in errors(found, truth):
        assert 0 <= start_err <= 60 and abs(end_err) <= 20


@pytest.mark.parametrize("fmt", [L16_8K, L16_16K, L16_24K])
def test_turn_boundaries_from_a_linear_pcm_carrier(fmt: AudioFormat) -> None:
    # The same recording as an L16 carrier sends it (little-endian, 8/16/24 kHz; resampled from
    # 8 kHz by the bridge's own resampler, whose ≤ 2 ms delay is well inside the tolerance): the
    # detector must find the same turns, with 10 ms windows at every rate.
    lin, offsets = twice_with_silence(audioop.ulaw2lin(bundled(CALLER_ULAW).data, 2))
    samples = np.frombuffer(lin, "=i2")
    if fmt.sample_rate != 8000:
        samples = Resampler(8000, fmt.sample_rate, capacity=len(samples)).process(samples)
    found = run_carrier(detector(), samples.astype("<i2").tobytes(), fmt)
    truth = expected(BOUNDARIES["recordings"][CALLER_ULAW]["turns_ms"], offsets)
    assert_boundaries(found, truth, LocalVad().end_silence_ms)
    reference = run_carrier(detector(), audioop.lin2ulaw(lin, 2), ULAW_8K)
    for got, ref in zip(found, reference, strict=True):
        assert abs(got.boundary_ms - ref.boundary_ms) <= 10.0  # one window


@pytest.mark.parametrize("name", [CALLER_ULAW, CALLER_ALAW])
def test_turn_boundaries_on_a_noisy_line(name: str) -> None:
    # White noise at -55 dBFS over everything (a poor phone line; 10 dB under stop_dbfs).
    fmt, lin2g711, g7112lin = ENCODINGS[name]
    lin, offsets = twice_with_silence(g7112lin(bundled(name).data, 2))
    x = np.frombuffer(lin, "<i2").astype(np.float64)
    x += np.random.default_rng(7).normal(0.0, 32768 * 10 ** (-55 / 20), len(x))
    noisy = np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()
    found = run_carrier(detector(), lin2g711(noisy, 2), fmt)
    truth = expected(BOUNDARIES["recordings"][name]["turns_ms"], offsets)
    assert_boundaries(found, truth, LocalVad().end_silence_ms)


@pytest.mark.parametrize("name", [CALLER_ULAW, CALLER_ALAW])
def test_every_phrase_found_when_end_silence_is_below_the_pauses(name: str) -> None:
    phrases = BOUNDARIES["recordings"][name]["phrases_ms"]
    shortest_pause = min(b[0] - a[1] for a, b in itertools.pairwise(phrases))
    settings = LocalVad(end_silence_ms=150)
    assert settings.end_silence_ms < shortest_pause
    fmt, lin2g711, g7112lin = ENCODINGS[name]
    lin, offsets = twice_with_silence(g7112lin(bundled(name).data, 2))
    found = run_carrier(detector(settings), lin2g711(lin, 2), fmt)
    assert_boundaries(found, expected(phrases, offsets), settings.end_silence_ms)


def test_recording_as_the_caller_sends_it_without_leading_silence() -> None:
    # The bundled file starts speaking 10 ms in; the caller simulator sends it as is.
    data = bundled(CALLER_ULAW).data
    data += b"\xff" * (800 * 8)  # trailing silence, μ-law digital silence
    data += b"\xff" * (-len(data) % FRAME)
    found = run_carrier(detector(), data, ULAW_8K)
    truth = expected(BOUNDARIES["recordings"][CALLER_ULAW]["turns_ms"], [0.0])
    assert_boundaries(found, truth, 500)


def test_frame_size_does_not_change_the_boundaries() -> None:
    # Carriers other than Twilio send other packet sizes; windows must carry across frames.
    lin, _ = twice_with_silence(audioop.ulaw2lin(bundled(CALLER_ULAW).data, 2))
    reference = [(d.kind, d.boundary_ms) for d in run_pcm16(detector(), lin)]
    assert [kind for kind, _ in reference] == ["start", "stop", "start", "stop"]
    for frame_bytes in (2, 94, 2 * 80, 2 * 333, 2 * 1000):
        got = [(d.kind, d.boundary_ms) for d in run_pcm16(detector(), lin, frame_bytes)]
        assert got == reference, frame_bytes


def test_assistant_recording_decimated_to_8k() -> None:
    # The 24 kHz assistant voice (a different speaker, softer onsets) brought down to phone rate.
    pcm24 = bundled(ASSISTANT_PCM16).data
    lin8, _ = audioop.ratecv(pcm24, 2, 1, 24000, 8000, None)
    lin, offsets = twice_with_silence(lin8)
    found = run_pcm16(detector(), lin)
    truth = expected(BOUNDARIES["recordings"][ASSISTANT_PCM16]["turns_ms"], offsets)
    assert_boundaries(found, truth, 500)


# --- hysteresis and debounce on synthetic levels ---------------------------------------------


def tone(level_dbfs: float, ms: float, freq: float = 440.0) -> bytes:
    """A sine whose RMS is ``level_dbfs`` (re 32768, as EnergyVad measures), PCM16 at 8 kHz."""
    n = round(ms * 8)
    amplitude = 32768 * 10 ** (level_dbfs / 20) * math.sqrt(2)
    t = np.arange(n) / 8000.0
    return np.round(amplitude * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()


def test_tone_levels_are_what_they_claim() -> None:
    for level in (-45.0, -40.0, -35.0, -20.0):
        rms = audioop.rms(tone(level, 1000), 2)
        assert 20 * math.log10(rms / 32768) == pytest.approx(level, abs=0.1)


def test_level_between_the_thresholds_does_not_start_speech() -> None:
    vad = detector()
    found = run_pcm16(vad, silence_lin(200) + tone(-40, 3000) + tone(-37, 2000) + tone(-43, 2000))
    assert found == [] and not vad.speaking
    # ... and the same detector still starts on real speech afterwards.
    assert [d.kind for d in run_pcm16(vad, tone(-20, 200))] == ["start"]


def test_level_between_the_thresholds_does_not_end_speech() -> None:
    vad = detector()
    stream = silence_lin(200) + tone(-20, 400) + tone(-40, 3000) + tone(-44, 1000) + silence_lin(800)
    found = run_pcm16(vad, stream)
    assert [d.kind for d in found] == ["start", "stop"]
    assert found[0].boundary_ms == pytest.approx(200, abs=10)
    # The end is where the level fell under stop_dbfs, not where it left the speech level.
    assert found[1].boundary_ms == pytest.approx(200 + 400 + 3000 + 1000, abs=10)


def test_pause_shorter_than_end_silence_is_not_a_turn_end() -> None:
    vad = detector()
    stream = tone(-20, 600) + silence_lin(480) + tone(-20, 600) + silence_lin(600)
    found = run_pcm16(vad, stream)
    assert [d.kind for d in found] == ["start", "stop"]
    assert found[1].boundary_ms == pytest.approx(600 + 480 + 600, abs=10)


def test_short_click_does_not_start_speech() -> None:
    vad = detector()
    assert LocalVad().start_ms == 60  # the clicks below are shorter than start_ms
    stream = silence_lin(200)
    for _ in range(10):
        stream += tone(-6, 40, freq=1000) + silence_lin(100)  # loud 40 ms clicks, 100 ms apart
    stream += tone(-6, 50) + tone(-50, 10) + tone(-6, 50) + silence_lin(500)  # broken by a 10 ms dip
    found = run_pcm16(vad, stream)
    assert found == [] and not vad.speaking


def test_burst_of_start_ms_does_start_speech() -> None:
    vad = detector()
    found = run_pcm16(vad, silence_lin(200) + tone(-30, 60) + silence_lin(600))
    assert [d.kind for d in found] == ["start", "stop"]
    assert found[0].boundary_ms == pytest.approx(200, abs=1)
    assert found[1].boundary_ms == pytest.approx(260, abs=1)


def test_invalid_base64_is_an_audio_error() -> None:
    with pytest.raises(AudioError):
        detector().feed("not base64!", ULAW_8K)


# --- the detector inside the call core (turn_detection = none) -------------------------------


def manual_core() -> CallCore:
    core = CallCore(Settings(realtime={"turn_detection": {"type": "none"}}), "call-1", 0.0, Twilio())
    core.on_carrier(tel.Start("MZ1", "CA1", "AC1", "audio/x-mulaw", 8000, 1, {}), 0.0)
    core.on_model_connected(0.05)
    return core


def feed_core(core: CallCore, data: bytes, now: float) -> list[Action]:
    out: list[Action] = []
    for off in range(0, len(data), FRAME):
        out += core.on_carrier(tel.Media(base64.b64encode(data[off : off + FRAME]).decode()), now)
    return out


def notes(actions: list[Action]) -> list[str]:
    return [a.kind for a in actions if isinstance(a, Note)]


def sent_types(actions: list[Action]) -> list[str]:
    return [json.loads(a.text)["type"] for a in actions if isinstance(a, SendModel)]


def test_core_commits_a_turn_that_ended_before_the_session_was_ready() -> None:
    # "Hello?" said at once: the phrase and its silence arrive while the model session opens.
    core = manual_core()
    phrase = bundled(CALLER_ULAW).data[: 700 * 8] + b"\xff" * (700 * 8)
    assert notes(feed_core(core, phrase, 0.1)) == ["speech_started", "speech_stopped"]
    assert core.state == "starting"
    types = sent_types(core.on_model(rt.SessionUpdated({}), 0.2))
    # The buffered audio first, then the commit of that turn and the request for an answer.
    appends = len(phrase) // FRAME
    assert types == ["input_audio_buffer.append"] * appends + ["input_audio_buffer.commit", "response.create"]


def test_core_commits_each_turn_once_in_manual_mode() -> None:
    core = manual_core()
    core.on_model(rt.SessionUpdated({}), 0.1)
    data = bundled(CALLER_ULAW).data + b"\xff" * (600 * 8)
    data += b"\xff" * (-len(data) % FRAME)
    types = sent_types(feed_core(core, data, 0.2))
    # The recording's pauses (190-390 ms) are not turn ends: one commit, one response.create.
    assert [t for t in types if t != "input_audio_buffer.append"] == ["input_audio_buffer.commit", "response.create"]
    # The commit follows 500 ms of silence after the measured end of speech, and not much later.
    (turn,) = BOUNDARIES["recordings"][CALLER_ULAW]["turns_ms"]
    # One append per earlier frame precedes the commit; the frame that triggered it is appended after it.
    committed_at_ms = (types.index("input_audio_buffer.commit") + 1) * FRAME / 8
    assert turn[1] + 500 <= committed_at_ms <= turn[1] + 500 + 40
