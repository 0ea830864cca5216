"""Audio conversion benchmark: microseconds per 20 ms frame for every converter path.

Run from the repository root (method and caveats in bench/README.md, results in BENCHMARKS.md):

    pip install soxr            # optional reference; rows are skipped without it
    python bench/audio_bench.py [--frames 2000] [--repeats 7] [--cpu 1]

Every timed call is what the call runner does per frame: base64 ``str`` in, base64 ``str`` out,
on real audio (the bundled caller recording, 160-byte G.711 frames; the bundled assistant
recording, 960-byte PCM16 frames at 24 kHz), cycling through distinct frames so nothing is cached.
"""

from __future__ import annotations

import argparse
import binascii
import gc
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.audio import g711
from bridge.audio.convert import CarrierFormat, SessionFormat, make_converter
from bridge.audio.resample import Resampler
from bridge.audio.wavfile import ASSISTANT_PCM16, CALLER_ALAW, CALLER_ULAW, bundled

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

try:
    import soxr
except ImportError:  # the reference rows are optional
    soxr = None

G711_FRAME = 160  # bytes per 20 ms at 8 kHz
PCM_FRAME = 960  # bytes per 20 ms at 24 kHz, 16-bit


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def frames(data: bytes, size: int, count: int = 200) -> list[bytes]:
    out = [data[i : i + size] for i in range(0, len(data) - size + 1, size)]
    return out[:count]


def time_per_frame(fn: Callable[[str], object], inputs: list[str], n_frames: int, repeats: int) -> tuple[float, float]:
    """Median and minimum over ``repeats`` runs of the mean µs per call over ``n_frames`` calls."""
    for payload in inputs[:100]:  # warm-up: first-use paths, caches, branch predictors
        fn(payload)
    k = len(inputs)
    runs = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection landing in one run would be noise, not cost
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            for i in range(n_frames):
                fn(inputs[i % k])
            runs.append((time.perf_counter_ns() - start) / n_frames / 1000)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(runs), min(runs)


def ratecv_paths(carrier: CarrierFormat) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """The naive reference: audioop G.711 codec + audioop.ratecv with state carried across frames."""
    decode = audioop.ulaw2lin if carrier is CarrierFormat.ULAW else audioop.alaw2lin
    encode = audioop.lin2ulaw if carrier is CarrierFormat.ULAW else audioop.lin2alaw
    state: dict[str, object] = {"up": None, "down": None}

    def to_session(payload: str) -> str:
        lin = decode(binascii.a2b_base64(payload, strict_mode=True), 2)
        out, state["up"] = audioop.ratecv(lin, 2, 1, 8000, 24000, state["up"])
        return b64(out)

    def to_carrier(payload: str) -> str:
        pcm = binascii.a2b_base64(payload, strict_mode=True)
        out, state["down"] = audioop.ratecv(pcm, 2, 1, 24000, 8000, state["down"])
        return b64(encode(out, 2))

    return to_session, to_carrier


def soxr_paths(carrier: CarrierFormat) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """libsoxr HQ streams (int16 in and out), G.711 by audioop. Output comes in bursts (see README)."""
    assert soxr is not None
    decode = audioop.ulaw2lin if carrier is CarrierFormat.ULAW else audioop.alaw2lin
    encode = audioop.lin2ulaw if carrier is CarrierFormat.ULAW else audioop.lin2alaw
    up = soxr.ResampleStream(8000, 24000, 1, dtype="int16", quality="HQ")
    down = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality="HQ")

    def to_session(payload: str) -> str:
        lin = np.frombuffer(decode(binascii.a2b_base64(payload, strict_mode=True), 2), np.int16)
        return b64(up.resample_chunk(lin).tobytes())

    def to_carrier(payload: str) -> str:
        pcm = np.frombuffer(binascii.a2b_base64(payload, strict_mode=True), np.int16)
        return b64(encode(down.resample_chunk(pcm).tobytes(), 2))

    return to_session, to_carrier


def pin(cpu: int) -> str:
    if hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000, help="calls per timed run (default 2000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per row; the median is reported")
    parser.add_argument("--cpu", type=int, default=1, help="CPU to pin to (default 1)")
    args = parser.parse_args()
    pinned = pin(args.cpu)

    caller = {
        CarrierFormat.ULAW: [b64(f) for f in frames(bundled(CALLER_ULAW).data, G711_FRAME)],
        CarrierFormat.ALAW: [b64(f) for f in frames(bundled(CALLER_ALAW).data, G711_FRAME)],
    }
    model_pcm = [b64(f) for f in frames(bundled(ASSISTANT_PCM16).data, PCM_FRAME)]
    # Model audio in the G.711 session formats: the assistant recording, downsampled and encoded.
    pcm8 = Resampler(24000, 8000, capacity=10**6).process(np.frombuffer(bundled(ASSISTANT_PCM16).data, "<i2")).copy()
    model_g711 = {
        SessionFormat.PCMU: [b64(f) for f in frames(g711.lin_to_ulaw(pcm8.tobytes()), G711_FRAME)],
        SessionFormat.PCMA: [b64(f) for f in frames(g711.lin_to_alaw(pcm8.tobytes()), G711_FRAME)],
    }

    print(f"# Audio conversion, µs per 20 ms frame (median of {args.repeats} × {args.frames} frames)")
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}, "
        f"soxr {getattr(soxr, '__version__', 'not installed')}, {platform.machine()}, {pinned}"
    )
    print()
    print("| Path | caller → model (to_session) | model → caller (to_carrier) |")
    print("|---|---|---|")

    def row(
        label: str,
        to_session: Callable[[str], object],
        session_inputs: list[str],
        to_carrier: Callable[[str], object],
        carrier_inputs: list[str],
    ) -> None:
        up_med, up_min = time_per_frame(to_session, session_inputs, args.frames, args.repeats)
        down_med, down_min = time_per_frame(to_carrier, carrier_inputs, args.frames, args.repeats)
        print(f"| {label} | {up_med:.2f} (min {up_min:.2f}) | {down_med:.2f} (min {down_min:.2f}) |")
        sys.stdout.flush()

    for carrier in CarrierFormat:
        for session in SessionFormat:
            conv = make_converter(carrier, session)
            kind = (
                "passthrough" if conv.passthrough else ("resample" if session is SessionFormat.PCM16 else "transcode")
            )
            model_inputs = model_pcm if session is SessionFormat.PCM16 else model_g711[session]
            row(
                f"bridge {carrier.name.lower()} ↔ {session.value} ({kind})",
                conv.to_session,
                caller[carrier],
                conv.to_carrier,
                model_inputs,
            )

    for carrier in CarrierFormat:
        up, down = ratecv_paths(carrier)
        row(f"reference: audioop {carrier.name.lower()} codec + ratecv ↔ pcm16", up, caller[carrier], down, model_pcm)
    if soxr is not None:
        for carrier in CarrierFormat:
            up, down = soxr_paths(carrier)
            row(
                f"reference: audioop {carrier.name.lower()} codec + soxr HQ stream ↔ pcm16",
                up,
                caller[carrier],
                down,
                model_pcm,
            )

    # The filter alone (no base64, no G.711 encode), to show where the time goes.
    upsampler, downsampler = Resampler(8000, 24000, capacity=800), Resampler(24000, 8000)
    codes = [np.frombuffer(binascii.a2b_base64(p), np.uint8) for p in caller[CarrierFormat.ULAW]]
    pcm = [np.frombuffer(binascii.a2b_base64(p), "<i2") for p in model_pcm]
    up_med, _ = time_per_frame(
        lambda i: upsampler.process_codes(codes[int(i)], g711.ULAW_TO_FLOAT),
        [str(i) for i in range(len(codes))],
        args.frames,
        args.repeats,
    )
    down_med, _ = time_per_frame(
        lambda i: downsampler.process(pcm[int(i)]), [str(i) for i in range(len(pcm))], args.frames, args.repeats
    )
    print(f"| filter only: Resampler.process_codes / Resampler.process | {up_med:.2f} | {down_med:.2f} |")


if __name__ == "__main__":
    main()
