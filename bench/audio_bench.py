"""Audio conversion benchmark: microseconds per 20 ms frame for every carrier/session pair.

Run from the repository root (method and caveats in bench/README.md, results in BENCHMARKS.md):

    pip install soxr            # optional reference; rows are skipped without it
    python bench/audio_bench.py [--frames 2000] [--repeats 7] [--cpu 1]

Every timed call is what the call core does per frame: base64 ``str`` in, base64 ``str`` out, on
real audio cycling through distinct 20 ms frames so nothing is cached: the bundled caller recording
in each carrier format (G.711 as recorded; L16 at 8 kHz decoded from it, at 16 and 24 kHz
resampled from that) and the bundled assistant recording in each session format (PCM16 at 24 kHz
as recorded; G.711 downsampled to 8 kHz and encoded).

Three sections: every converter of the table; the passthrough with each candidate base64 check
(the check the bridge uses, and the ones it was measured against); references (audioop ratecv,
soxr) and the filters alone.
"""

from __future__ import annotations

import argparse
import binascii
import gc
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.audio import CARRIER_FORMATS, L16_24K, ULAW_8K, AudioError, AudioFormat, Encoding, SessionFormat, g711
from bridge.audio.convert import make_converter
from bridge.audio.payload import DEFAULT_MAX_PAYLOAD_BYTES, decoded_len, is_base64
from bridge.audio.resample import FILTERS, Resampler
from bridge.audio.wavfile import ASSISTANT_PCM16, CALLER_ALAW, CALLER_ULAW, bundled

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

try:
    import soxr
except ImportError:  # the reference rows are optional
    soxr = None


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def frames(data: bytes, size: int, count: int = 200) -> list[bytes]:
    out = [data[i : i + size] for i in range(0, len(data) - size + 1, size)]
    return out[:count]


CLOCKS = {"wall": time.perf_counter_ns, "thread": time.thread_time_ns}
clock = CLOCKS["wall"]


Task = tuple[Callable[[str], object], list[str]]  # a function and the payloads it cycles through


def time_per_frame(tasks: list[Task], n_frames: int, repeats: int) -> list[tuple[float, float]]:
    """Median and minimum, per task, over ``repeats`` runs of the mean µs per call over ``n_frames``.

    The runs are interleaved (round 1 of every task, then round 2, …), so a burst of load from
    other processes is spread over all rows instead of landing on a few: the rows of one table
    stay comparable on a shared machine.
    """
    for fn, inputs in tasks:
        for payload in inputs[:100]:  # warm-up: first-use paths, caches, branch predictors
            fn(payload)
    runs: list[list[float]] = [[] for _ in tasks]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection landing in one run would be noise, not cost
    try:
        for _ in range(repeats):
            for (fn, inputs), task_runs in zip(tasks, runs, strict=True):
                k = len(inputs)
                start = clock()
                for i in range(n_frames):
                    fn(inputs[i % k])
                task_runs.append((clock() - start) / n_frames / 1000)
    finally:
        if gc_was_enabled:
            gc.enable()
    return [(statistics.median(r), min(r)) for r in runs]


# --- inputs -----------------------------------------------------------------------------------


def caller_frames() -> dict[AudioFormat, list[str]]:
    """20 ms caller frames in every carrier format."""
    ulaw = bundled(CALLER_ULAW).data
    lin8 = g711.ULAW_TO_LIN[np.frombuffer(ulaw, np.uint8)]
    raw = {ULAW_8K: ulaw, CARRIER_FORMATS[1]: bundled(CALLER_ALAW).data}
    for fmt in CARRIER_FORMATS:
        if fmt.encoding is Encoding.L16:
            lin = (
                lin8 if fmt.sample_rate == 8000 else Resampler(8000, fmt.sample_rate, capacity=len(lin8)).process(lin8)
            )
            raw[fmt] = lin.astype("<i2").tobytes()
    return {fmt: [b64(f) for f in frames(raw[fmt], 20 * fmt.bytes_per_ms)] for fmt in CARRIER_FORMATS}


def model_frames() -> dict[SessionFormat, list[str]]:
    """20 ms model frames in every session format."""
    pcm = np.frombuffer(bundled(ASSISTANT_PCM16).data, "<i2")
    pcm8 = Resampler(24000, 8000, capacity=len(pcm), out_dtype="=i2").process(pcm).tobytes()
    raw = {
        SessionFormat.PCM16: pcm.tobytes(),
        SessionFormat.PCMU: g711.lin_to_ulaw(pcm8),
        SessionFormat.PCMA: g711.lin_to_alaw(pcm8),
    }
    return {fmt: [b64(f) for f in frames(raw[fmt], 20 * fmt.bytes_per_ms)] for fmt in SessionFormat}


# --- candidate base64 checks for the passthrough ------------------------------------------------


def passthrough_with(check: Callable[[str], bool] | None, width: int) -> Callable[[str], str]:
    """A passthrough with the bridge's type/empty/size checks and ``check`` for the characters
    (None: no character check at all, as before issue 11), plus whole samples for L16."""
    limit = DEFAULT_MAX_PAYLOAD_BYTES
    quick = 4 * (limit // 3)

    def forward(payload: str) -> str:
        if not isinstance(payload, str):
            raise AudioError("base64", "not a string")
        n = len(payload)
        if not n:
            raise AudioError("empty", "empty")
        if n > quick and decoded_len(payload) > limit:
            raise AudioError("too_large", "too large")
        if check is not None:
            if not check(payload):
                raise AudioError("base64", "invalid base64")
            if width == 2 and decoded_len(payload) & 1:
                raise AudioError("odd_length", "odd length")
        return payload

    return forward


def check_a2b(payload: str) -> bool:
    """Strict decode into a bytes object that is thrown away, then rule out surplus padding."""
    if len(payload) & 3:
        return False
    try:
        data = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:
        return False
    return len(data) == decoded_len(payload)


_CANONICAL = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def check_regex(payload: str) -> bool:
    """A compiled regular expression over the whole string, plus the length."""
    return not len(payload) & 3 and _CANONICAL.fullmatch(payload) is not None


# --- references -------------------------------------------------------------------------------


def ratecv_paths(carrier: AudioFormat) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """The naive reference: audioop G.711 codec + audioop.ratecv with state carried across frames."""
    decode = audioop.ulaw2lin if carrier.encoding is Encoding.ULAW else audioop.alaw2lin
    encode = audioop.lin2ulaw if carrier.encoding is Encoding.ULAW else audioop.lin2alaw
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


def soxr_paths(carrier: AudioFormat) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """libsoxr HQ streams (int16 in and out), G.711 by audioop. Output comes in bursts (see README)."""
    assert soxr is not None
    decode = audioop.ulaw2lin if carrier.encoding is Encoding.ULAW else audioop.alaw2lin
    encode = audioop.lin2ulaw if carrier.encoding is Encoding.ULAW else audioop.lin2alaw
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
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall (perf_counter, default) or thread (CPU time of this thread: on a busy machine it "
        "leaves out the time other processes held the CPU)",
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    pinned = pin(args.cpu)
    caller = caller_frames()
    model = model_frames()

    print(f"# Audio conversion, µs per 20 ms frame (median of {args.repeats} × {args.frames} frames)")
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}, "
        f"soxr {getattr(soxr, '__version__', 'not installed')}, {platform.machine()}, {pinned}, "
        f"{args.clock} clock, load average {os.getloadavg()[0]:.2f} at start"
    )

    # (label, to_session, caller payloads, to_carrier, model payloads), by table
    sections: dict[str, list[tuple[str, Callable[[str], object], list[str], Callable[[str], object], list[str]]]] = {}

    rows = sections.setdefault("Carrier ↔ session (method)", [])
    for carrier in CARRIER_FORMATS:
        for session in SessionFormat:
            conv = make_converter(carrier, session)
            label = f"{carrier.id} ↔ {session.value} ({conv.method})"
            rows.append((label, conv.to_session, caller[carrier], conv.to_carrier, model[session]))

    rows = sections.setdefault("Passthrough, base64 check", [])
    for carrier, session in [(ULAW_8K, SessionFormat.PCMU), (L16_24K, SessionFormat.PCM16)]:
        width = carrier.sample_width
        size = f"{carrier.id} ↔ {session.value}, {20 * carrier.bytes_per_ms}-byte frames"
        candidates: list[tuple[str, Callable[[str], object]]] = [
            ("none: type, empty and size only (before)", passthrough_with(None, width)),
            ("`binascii.a2b_base64(strict_mode=True)`, result discarded", passthrough_with(check_a2b, width)),
            ("compiled regex `fullmatch`", passthrough_with(check_regex, width)),
            ("`isascii` + `rstrip('=')` + `bytes.translate` (`is_base64`)", passthrough_with(is_base64, width)),
            ("the same inlined: the bridge's passthrough converter", make_converter(carrier, session).to_session),
        ]
        for label, fn in candidates:
            rows.append((f"{size}: {label}", fn, caller[carrier], fn, model[session]))

    rows = sections.setdefault("Reference or part", [])
    pcm16 = model[SessionFormat.PCM16]
    for carrier in CARRIER_FORMATS[:2]:
        up, down = ratecv_paths(carrier)
        rows.append((f"audioop {carrier.id} codec + ratecv ↔ pcm16", up, caller[carrier], down, pcm16))
    if soxr is not None:
        for carrier in CARRIER_FORMATS[:2]:
            up, down = soxr_paths(carrier)
            rows.append(
                (f"audioop {carrier.id} codec + soxr HQ stream ↔ pcm16 (bursty)", up, caller[carrier], down, pcm16)
            )
    # The filters alone (no base64, no G.711 encode), to show where the time goes.
    lin = {fmt: [np.frombuffer(binascii.a2b_base64(p), "<i2") for p in caller[fmt]] for fmt in CARRIER_FORMATS[2:]}
    lin[L16_24K] = [np.frombuffer(binascii.a2b_base64(p), "<i2") for p in pcm16]
    by_rate = {fmt.sample_rate: lin[fmt] for fmt in lin}
    index = [str(i) for i in range(200)]
    for low, high in FILTERS:
        up_r, down_r = Resampler(low, high), Resampler(high, low)
        up_in, down_in = by_rate[low], by_rate[high]
        rows.append(
            (
                f"filter only: `Resampler` {low // 1000} → {high // 1000} kHz / {high // 1000} → {low // 1000} kHz",
                lambda i, r=up_r, x=up_in: r.process(x[int(i) % len(x)]),
                index,
                lambda i, r=down_r, x=down_in: r.process(x[int(i) % len(x)]),
                index,
            )
        )

    tasks: list[Task] = []
    for section in sections.values():
        for _, to_session, up_inputs, to_carrier, down_inputs in section:
            tasks += [(to_session, up_inputs), (to_carrier, down_inputs)]
    figures = iter(time_per_frame(tasks, args.frames, args.repeats))
    for title, section in sections.items():
        print()
        print(f"| {title} | caller → model (to_session) | model → caller (to_carrier) |")
        print("|---|---|---|")
        for label, *_ in section:
            (up_med, up_min), (down_med, down_min) = next(figures), next(figures)
            print(f"| {label} | {up_med:.2f} (min {up_min:.2f}) | {down_med:.2f} (min {down_min:.2f}) |")


if __name__ == "__main__":
    main()
    print(f"\n# load average {os.getloadavg()[0]:.2f} at the end")
