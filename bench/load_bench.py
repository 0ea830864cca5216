"""One bridge worker under load against the baseline bridge, same run: CPU per call, latency each way,
memory per call and capacity, swept over concurrent calls; exits 1 when a target of issue 16 is missed.

Run from the repository root (method in bench/README.md, "One worker under load, against the
baseline"; results in BENCHMARKS.md):

    python bench/load_bench.py --calls 50 --repeats 3 --no-profile     # the targets at 50 calls
    python bench/load_bench.py --calls 50,75,100,125,150,175,200,250 --no-profile   # capacity sweep
    python bench/load_bench.py                                          # 10..200 calls and a profile
    python bench/load_bench.py --quick                                  # 10, 50, 100 calls, 8 s windows

Per step (one bridge, one value of N) three process groups run, started afresh:

* the bridge under test, pinned to CPU 0: either bridge as users deploy it (``python -m bridge
  serve`` with ``server.workers = 1``: a supervisor and one worker process) or the baseline
  (``bench/baseline_bridge.py``: FastAPI + uvicorn + websockets, one process);
* ``bench/load_upstream.py``: a minimal fake Realtime server (one epoll loop, hand-rolled WebSocket
  framing, so it costs far less than a bridge), pinned to CPU 1. It records when each caller frame
  arrives and when it sent each model audio delta;
* ``bench/load_carrier.py``: N Twilio-style calls from one epoll loop, pinned to CPU 1. It records
  when it sent each caller frame and when each model delta arrived, and reads the CPU time and RSS
  of the bridge under test over the measuring window.

Both bridges are measured back to back at every N, the order alternating, so that each figure can
be given as a ratio from one run. Frame and delta ids travel inside the μ-law audio (the first 9
bytes: a magic byte and a 64-bit id), which both bridges pass through untouched for μ-law ↔
``audio/pcmu``. ``time.monotonic()`` (CLOCK_MONOTONIC) is one clock for all processes on Linux,
so arrival − send is the time a frame spent in loopback TCP and the bridge.

This module also holds the helpers the load processes and the other load scripts share (raw
WebSocket frames, ids, CPU, one step of measurement).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")

# --- shared by the load processes ------------------------------------------------------------

MAGIC_FRAME = 0x46  # "F": a caller frame (carrier → bridge → model)
MAGIC_DELTA = 0x44  # "D": a model audio delta (model → bridge → carrier)
ID_BYTES = 9  # magic + u64; 9 bytes are exactly 12 base64 characters, so the rest encodes apart
ID_CHARS = 12
MAX_FRAME_BYTES = 1 << 20
ZERO_KEY = b"\0\0\0\0"


def id_payload(magic: int, ident: int, tail_b64: str) -> str:
    """Base64 of ``magic + ident`` followed by a constant tail (already base64, 3-byte aligned)."""
    return base64.b64encode(struct.pack(">BQ", magic, ident)).decode("ascii") + tail_b64


def tail_b64(total_bytes: int, fill: int = 0xFF) -> str:
    """The constant part of an id-carrying payload of ``total_bytes`` G.711 bytes."""
    return base64.b64encode(bytes([fill]) * (total_bytes - ID_BYTES)).decode("ascii")


def read_id(chars: bytes, magic: int) -> int | None:
    """The id in the first 12 base64 characters of a payload, if it carries ``magic``."""
    try:
        raw = base64.b64decode(chars)
    except ValueError:
        return None
    if len(raw) != ID_BYTES or raw[0] != magic:
        return None
    return int.from_bytes(raw[1:], "big")


def ws_frame(payload: bytes, opcode: int = 0x1, mask: bool = False) -> bytes:
    """One final WebSocket frame. A client frame is masked with the all-zero key: RFC 6455 §5.3
    wants the key unpredictable (a browser concern), but any key is valid on the wire and the zero
    key makes masking the identity, which keeps the load generator cheap."""
    n = len(payload)
    b0 = 0x80 | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    return head + ZERO_KEY + payload if mask else head + payload


def unmask(data: bytes, key: bytes | None, offset: int = 0) -> bytes:
    """``data`` (which starts ``offset`` bytes into a masked payload) unmasked."""
    if key is None or key == ZERO_KEY or not data:
        return data
    r = offset % 4
    key = key[r:] + key[:r]
    n = len(data)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


class FrameParser:
    """Incremental WebSocket frame splitter: ``feed(bytes)`` → ``[(opcode, payload, key, fin)]``.

    Payloads stay masked (``key`` is the mask or ``None``) so a reader unmasks only what it needs.
    """

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes, bytes | None, bool]]:
        buf = self.buf
        buf += data
        out: list[tuple[int, bytes, bytes | None, bool]] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            i = pos + 2
            if length == 126:
                if n - i < 2:
                    break
                length = int.from_bytes(buf[i : i + 2], "big")
                i += 2
            elif length == 127:
                if n - i < 8:
                    break
                length = int.from_bytes(buf[i : i + 8], "big")
                i += 8
            if length > MAX_FRAME_BYTES:
                raise ValueError(f"frame of {length} bytes")
            key: bytes | None = None
            if b1 & 0x80:
                if n - i < 4:
                    break
                key = bytes(buf[i : i + 4])
                i += 4
            if n - i < length:
                break
            out.append((b0 & 0x0F, bytes(buf[i : i + length]), key, bool(b0 & 0x80)))
            pos = i + length
        if pos:
            del buf[:pos]
        return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_busy() -> dict[str, float]:
    """Busy seconds (everything but idle and iowait) per CPU since boot, from /proc/stat."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                out[name] = (sum(v) - v[3] - v[4]) / TICK
    except OSError:
        pass
    return out


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


# --- orchestration ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except OSError:
        return 0


def worker_processes(supervisor: int) -> dict[int, int]:
    """worker id -> pid for the supervisor's workers (its children started with ``--worker-id``)."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor and b"--worker-id" in cmd:
            out[int(cmd[cmd.index(b"--worker-id") + 1])] = int(entry)
    return out


def worker_pids(supervisor: int) -> list[int]:
    return list(worker_processes(supervisor).values())


def stop_process(proc: subprocess.Popen[bytes], timeout: float, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


TARGETS = ("bridge", "baseline")


def parse_variants(specs: list[str]) -> dict[str, tuple[tuple[str, str], ...]]:
    """``NAME:section.key=value,...,root=PATH`` → {NAME: ((BRIDGE_SECTION__KEY, value), ..., ("root", PATH))}.

    A variant is bridge with some settings changed through its environment overrides, or another
    checkout of it (``root``: e.g. ``git archive COMMIT | tar -x -C PATH``, the code before a
    change), measured as one more target of the same run: a lever against bridge as it is and
    against the baseline."""
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for spec in specs:
        name, _, body = spec.partition(":")
        if not name or name in TARGETS or not body:
            raise ValueError(f"--variant {spec!r}: expected NAME:section.key=value[,...][,root=PATH]")
        env: list[tuple[str, str]] = []
        for item in body.split(","):
            key, _, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if key == "root" and Path(value, "bridge", "__main__.py").is_file():
                env.append(("root", str(Path(value).resolve())))
                continue
            if "." not in key or not value:
                raise ValueError(f"--variant {spec!r}: {item!r} is neither section.key=value nor root=CHECKOUT")
            env.append(("BRIDGE_" + key.upper().replace(".", "__"), value))
        out[name] = tuple(env)
    return out


def run_label(target: str, variant: str, workers: int) -> str:
    """How a configuration is named in the tables: baseline, bridge, a variant, "×N" workers."""
    if target == "baseline":
        return "baseline"
    name = variant or "bridge"
    return name if workers == 1 else f"{name} ×{workers}"


@dataclass(frozen=True)
class Setup:
    """What runs where in one step: which bridge, how many worker processes, on which CPUs."""

    target: str = "bridge"  # "bridge" (python -m bridge serve) or "baseline" (bench/baseline_bridge.py)
    workers: int = 1  # bridge only: server.workers
    service_cpus: tuple[int, ...] = (0,)
    load_cpus: tuple[int, ...] = (1,)
    variant: str = ""  # bridge only: a named set of settings changed (see parse_variants)
    env: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return run_label(self.target, self.variant, self.workers)

    @property
    def shared_cpus(self) -> bool:
        return bool(set(self.service_cpus) & set(self.load_cpus))


@dataclass
class Step:
    calls: int
    target: str = "bridge"
    workers: int = 1
    variant: str = ""
    connected: int = 0
    active_end: int = 0
    worker_cores: float = 0.0  # all worker processes (the baseline: its one process)
    per_worker_cores: list[float] = field(default_factory=list)
    supervisor_cores: float = 0.0
    carrier_cores: float = 0.0
    upstream_cores: float = 0.0
    worker_rss_mib: float = 0.0  # at the end of the window, summed over the workers
    idle_rss_mib: float = 0.0  # before the calls (after one priming call), summed over the workers
    window_s: float = 0.0
    up: dict[str, float] = field(default_factory=dict)  # caller → model latency stats (ms)
    down: dict[str, float] = field(default_factory=dict)  # model → caller latency stats (ms)
    frames: int = 0
    frames_lost: int = 0
    deltas: int = 0
    deltas_lost: int = 0
    backlog_events: int = 0
    bridge_errors: int = 0
    other_bridge_cpu: float = 0.0  # cores used on the bridge's CPU by anything but the bridge
    other_load_cpu: float = 0.0  # cores used on the load CPU by anything but the load generators
    profile: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return run_label(self.target, self.variant, self.workers)

    @property
    def per_call(self) -> float:
        return self.worker_cores / self.calls if self.calls else 0.0

    @property
    def mem_per_call_mib(self) -> float:
        """RSS growth from idle (after a priming call) to the end of the window, per call."""
        return (self.worker_rss_mib - self.idle_rss_mib) / self.calls if self.calls else 0.0

    @property
    def load_cores(self) -> float:
        return self.carrier_cores + self.upstream_cores

    @property
    def p99(self) -> float:
        """The worse of the two directions' p99 (infinite when nothing was measured)."""
        return max(self.up.get("p99", math.inf), self.down.get("p99", math.inf))

    @property
    def healthy(self) -> bool:
        """Every call connected and stayed, nothing lost: otherwise its latencies mean little."""
        return (
            self.connected == self.calls
            and self.active_end == self.calls
            and not (self.frames_lost or self.deltas_lost)
        )


def latency_stats(lat_s: Any) -> dict[str, float]:
    import numpy as np

    if len(lat_s) == 0:
        return {}
    ms = np.asarray(lat_s) * 1000.0
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "p999": float(np.percentile(ms, 99.9)),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


def join(sent_ids: Any, sent_t: Any, got_ids: Any, got_t: Any, w0: float, w1: float) -> tuple[Any, int, int]:
    """Latencies of the items sent in [w0, w1) (ids matched across the two files), sent count, lost count."""
    import numpy as np

    keep = (sent_t >= w0) & (sent_t < w1)
    sid, st = sent_ids[keep], sent_t[keep]
    order = np.argsort(got_ids)
    gid, gt = got_ids[order], got_t[order]
    idx = np.searchsorted(gid, sid)
    idx[idx >= len(gid)] = 0
    found = (gid[idx] == sid) if len(gid) else np.zeros(len(sid), dtype=bool)
    lat = gt[idx[found]] - st[found]
    return lat, len(sid), int((~found).sum())


def prime_call(port: int, seconds: float = 1.0) -> bool:
    """One short Twilio-shaped call (blocking sockets), so that what a process sets up on its first
    call (lazy imports, caches, the first SQLite write) is in the idle RSS and not counted per call.
    Its frames carry call index 0, which the load generator never uses."""
    sid, call_sid = "MZ" + "f" * 32, "CA" + "f" * 32
    tail = tail_b64(160)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            key = base64.b64encode(os.urandom(16))
            s.sendall(
                b"GET /media HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode()
                + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
                + b"\r\nSec-WebSocket-Version: 13\r\nUser-Agent: TwilioProxy/1.1\r\n\r\n"
            )  # fmt: skip
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    return False
                data += chunk
            if not data.startswith(b"HTTP/1.1 101"):
                return False

            def send(obj: dict[str, Any]) -> None:
                s.sendall(ws_frame(json.dumps(obj, separators=(",", ":")).encode(), mask=True))

            send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            send({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
                "accountSid": "AC" + "0" * 32, "streamSid": sid, "callSid": call_sid, "tracks": ["inbound"],
                "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }})  # fmt: skip
            frames = int(seconds / 0.02)
            for i in range(1, frames + 1):
                send({"event": "media", "sequenceNumber": str(i + 1), "streamSid": sid, "media": {
                    "track": "inbound", "chunk": str(i), "timestamp": str(20 * (i - 1)),
                    "payload": id_payload(MAGIC_FRAME, i, tail)}})  # fmt: skip
                time.sleep(0.02)
            send({"event": "stop", "sequenceNumber": str(frames + 2), "streamSid": sid,
                  "stop": {"accountSid": "AC", "callSid": call_sid}})  # fmt: skip
            s.sendall(ws_frame(b"\x03\xe8", 0x8, mask=True))
            s.settimeout(3)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    except OSError:
        return False
    return True


def pinned(cpus: tuple[int, ...]) -> Any:
    """A preexec_fn that pins the child (and what it starts) to ``cpus``."""

    def fn() -> None:
        os.sched_setaffinity(0, set(cpus))

    return fn


class Bench:
    def __init__(self, args: argparse.Namespace, prefix: str = "bridge-load-") -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.py = sys.executable
        self.runs = 0

    def wait_quiet(self, cpus_used: tuple[int, ...]) -> None:
        """Wait (up to ``--wait-quiet`` s) until the CPUs are nearly idle: the machine may be shared."""
        a = self.args
        cpus = tuple(f"cpu{c}" for c in sorted(set(cpus_used)))
        deadline = time.monotonic() + a.wait_quiet
        busy: dict[str, float] = {}
        while True:
            b0 = cpu_busy()
            time.sleep(1.0)
            b1 = cpu_busy()
            busy = {c: b1.get(c, 0.0) - b0.get(c, 0.0) for c in cpus}
            if max(busy.values()) < 0.15 or time.monotonic() > deadline:
                break
        if max(busy.values()) >= 0.15:
            shown = ", ".join(f"{c} {v:.0%}" for c, v in busy.items())
            print(f"  (other load on the CPUs before this step: {shown}; measuring anyway)", flush=True)

    def _start_bridge(self, setup: Setup, pub_port: int, up_port: int, tag: str) -> tuple[Any, list[int], int | None]:
        """``python -m bridge serve`` with ``server.workers = setup.workers``: (process, worker pids, supervisor)."""
        admin_port = free_port()
        log_path = self.tmp / f"service-{tag}.log"
        cfg = self.tmp / f"bridge-{tag}.toml"
        cfg.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {pub_port}\nworkers = {setup.workers}\ndrain_timeout_s = 2\n'
            # Capacity is what is measured, so admission must not cap it (overload_bench sets
            # server.max_calls_per_worker through the environment, which wins over this file).
            "max_calls_per_worker = 10000\n"
            f'[admin]\nhost = "127.0.0.1"\nport = {admin_port}\n'
            f'[realtime]\nurl = "ws://127.0.0.1:{up_port}/v1/realtime"\naudio_format = "pcmu"\n'
            f'[records]\npath = "{self.tmp / "calls.sqlite"}"\n'
            f"[twilio]\nvalidate_signature = false\n"  # loopback; the load callers do not sign
            f'[log]\nlevel = "warning"\nformat = "json"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "PROMETHEUS_"))}
        env["OPENAI_API_KEY"] = "sk-bench-not-a-real-key-0000"
        env.update(setup.env)
        root = Path(env.pop("root", ROOT))
        env["PYTHONPATH"] = str(root)  # the checkout under test, also in the worker processes
        with open(log_path, "ab") as errors:
            proc = subprocess.Popen(
                [self.py, "-m", "bridge", "--config", str(cfg), "serve"],
                cwd=root, env=env, stderr=errors, stdout=errors, preexec_fn=pinned(setup.service_cpus),
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while http_status(f"http://127.0.0.1:{admin_port}/readyz") != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                stop_process(proc, 10)
                raise RuntimeError(f"the bridge did not become ready; see {log_path}")
            time.sleep(0.1)
        workers = [pid for _, pid in sorted(worker_processes(proc.pid).items())]
        if len(workers) != setup.workers:
            stop_process(proc, 10)
            raise RuntimeError(f"expected {setup.workers} worker process(es), found {workers}")
        return proc, workers, proc.pid

    def _start_baseline(self, setup: Setup, pub_port: int, up_port: int, tag: str) -> tuple[Any, list[int], None]:
        """``bench/baseline_bridge.py`` (one uvicorn process): (process, [its pid], no supervisor)."""
        log_path = self.tmp / f"service-{tag}.log"
        env = dict(os.environ, OPENAI_API_KEY="sk-bench-not-a-real-key-0000")
        cmd = [self.py, str(BENCH / "baseline_bridge.py"), "--port", str(pub_port),
               "--model-url", f"ws://127.0.0.1:{up_port}/v1/realtime?model=gpt-realtime",
               "--loop", self.args.baseline_loop]  # fmt: skip
        with open(log_path, "ab") as errors:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stderr=errors, stdout=errors, preexec_fn=pinned(setup.service_cpus)
            )
        deadline = time.monotonic() + 30
        while http_status(f"http://127.0.0.1:{pub_port}/") != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                stop_process(proc, 10)
                raise RuntimeError(f"the baseline bridge did not start; see {log_path}")
            time.sleep(0.1)
        return proc, [proc.pid], None

    def run_step(self, setup: Setup, calls: int, window: float, profile_s: float = 0.0) -> Step:
        a = self.args
        self.wait_quiet(setup.service_cpus + setup.load_cpus)
        self.runs += 1
        name = setup.variant or setup.target
        tag = f"{self.runs:03d}-{name}{setup.workers}-n{calls}" + ("-profile" if profile_s else "")
        up_port, pub_port = free_port(), free_port()
        up_out = self.tmp / f"upstream-{tag}.npz"
        car_out = self.tmp / f"carrier-{tag}.npz"
        load_cpu = pinned(setup.load_cpus)
        upstream = subprocess.Popen(
            [
                self.py, str(BENCH / "load_upstream.py"), "--port", str(up_port), "--out", str(up_out),
                "--delta-ms", str(a.delta_ms), "--answer-ms", str(a.answer_ms),
                "--answer-every", str(a.answer_every), "--speed", str(a.speed),
                "--max-seconds", str(a.ramp + a.warmup + window + 120),
            ],
            cwd=ROOT, preexec_fn=load_cpu,
        )  # fmt: skip
        service: subprocess.Popen[bytes] | None = None
        step = Step(calls, setup.target, setup.workers, setup.variant)
        try:
            wait_port(up_port, 10)
            start = self._start_baseline if setup.target == "baseline" else self._start_bridge
            service, workers, supervisor = start(setup, pub_port, up_port, tag)
            for pid in workers:
                affinity = tuple(sorted(os.sched_getaffinity(pid)))
                if affinity != tuple(sorted(setup.service_cpus)):
                    raise RuntimeError(f"{setup.label} process {pid} runs on CPUs {affinity}, not {setup.service_cpus}")
            if not prime_call(pub_port):
                raise RuntimeError(f"the priming call to {setup.label} failed; see {self.tmp}/service-{tag}.log")
            time.sleep(0.5)
            step.idle_rss_mib = sum(rss_mib(pid) for pid in workers)
            watch = [f"worker{i}={pid}" for i, pid in enumerate(workers)] + [f"upstream={upstream.pid}"]
            if supervisor is not None:
                watch.append(f"supervisor={supervisor}")
            carrier_cmd = [
                self.py, str(BENCH / "load_carrier.py"), "--port", str(pub_port), "--calls", str(calls),
                "--ramp", str(a.ramp), "--warmup", str(a.warmup), "--window", str(window), "--out", str(car_out),
                "--slot-ms", str(a.slot_ms), "--watch", *watch,
            ]  # fmt: skip
            started = time.monotonic()
            carrier = subprocess.Popen(carrier_cmd, cwd=ROOT, preexec_fn=load_cpu)
            if profile_s:
                step.profile = self._profile(workers[0], started + a.ramp + a.warmup + 0.5, profile_s, setup)
            try:
                carrier.wait(a.ramp + a.warmup + window + 60)
            except subprocess.TimeoutExpired:
                stop_process(carrier, 5)
            if carrier.returncode != 0:
                raise RuntimeError(f"the carrier load generator failed ({carrier.returncode})")
        finally:
            if service is not None:
                stop_process(service, 20)
            stop_process(upstream, 15)  # SIGTERM: it writes its records and exits
        log_text = (self.tmp / f"service-{tag}.log").read_text(errors="replace")
        marker = '"error"' if setup.target == "bridge" else "ERROR"
        step.bridge_errors = sum(1 for line in log_text.splitlines() if marker in line or "Traceback" in line)
        if not profile_s:
            self._analyse(step, setup, car_out, up_out)
        return step

    def _analyse(self, step: Step, setup: Setup, car_out: Path, up_out: Path) -> None:
        import numpy as np

        with np.load(car_out) as c, np.load(up_out) as u:
            summary = json.loads(str(c["summary"]))
            w0, w1 = summary["w0"], summary["w1"]
            up, step.frames, step.frames_lost = join(c["frame_ids"], c["frame_t"], u["frame_ids"], u["frame_t"], w0, w1)
            down, step.deltas, step.deltas_lost = join(
                u["delta_ids"], u["delta_t"], c["delta_ids"], c["delta_t"], w0, w1
            )
        step.window_s = w1 - w0
        step.connected = summary["connected"]
        step.active_end = summary["active_end"]
        step.backlog_events = summary["backlog_events"]
        cpu = summary["cpu"]
        workers = sorted(k for k in cpu if k.startswith("worker"))
        step.per_worker_cores = [cpu[k] / step.window_s for k in workers]
        step.worker_cores = sum(step.per_worker_cores)
        step.supervisor_cores = cpu.get("supervisor", 0.0) / step.window_s
        step.upstream_cores = cpu["upstream"] / step.window_s
        step.carrier_cores = cpu["self"] / step.window_s
        step.worker_rss_mib = sum(v for k, v in summary["rss"].items() if k.startswith("worker"))
        busy = summary["cpu_busy"]
        own_service = sum(cpu[k] for k in workers) + cpu.get("supervisor", 0.0)
        own_load = cpu["self"] + cpu["upstream"]
        if setup.shared_cpus:  # one figure for all the CPUs used
            used = {f"cpu{c}" for c in setup.service_cpus + setup.load_cpus}
            total = sum(busy.get(c, 0.0) for c in used)
            step.other_bridge_cpu = max(0.0, total - own_service - own_load) / step.window_s
        else:
            service_busy = sum(busy.get(f"cpu{c}", 0.0) for c in setup.service_cpus)
            load_busy = sum(busy.get(f"cpu{c}", 0.0) for c in setup.load_cpus)
            step.other_bridge_cpu = max(0.0, service_busy - own_service) / step.window_s
            step.other_load_cpu = max(0.0, load_busy - own_load) / step.window_s
        step.up = latency_stats(up)
        step.down = latency_stats(down)

    def _profile(self, pid: int, start_at: float, seconds: float, setup: Setup) -> list[str]:
        """py-spy (a sampling profiler) on the (first) worker for ``seconds``."""
        raw = self.tmp / "profile.txt"
        time.sleep(max(0.0, start_at - time.monotonic()))
        # Blocking mode (the default): each sample pauses the worker for a moment, so its stacks are
        # complete; this step's latencies are therefore not reported.
        cmd = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
               "--format", "raw", "--output", str(raw)]  # fmt: skip
        try:
            subprocess.run(
                cmd, check=True, timeout=seconds + 30, capture_output=True, preexec_fn=pinned(setup.load_cpus)
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return [f"(no profile: py-spy failed: {exc!r}; `pip install py-spy`)"]
        return summarise_profile(raw, 15)

    def measure(self, setup: Setup, calls: int, window: float) -> Step:
        """One step, measured again (up to ``--retries`` times) when other processes used the CPUs."""
        a = self.args
        step = self.run_step(setup, calls, window)
        for _ in range(a.retries):
            if step.other_bridge_cpu <= 0.05 and step.other_load_cpu <= 0.2:
                break
            print(f"  {setup.label} N={calls}: other processes used the CPUs during the window; measuring again",
                  flush=True)  # fmt: skip
            step = self.run_step(setup, calls, window)
        return step


def summarise_profile(raw: Path, top: int) -> list[str]:
    """Own and cumulative shares per function from py-spy's collapsed stacks (``a;b;c count``)."""
    own: dict[str, int] = {}
    cum: dict[str, int] = {}
    layers: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames or frames[-1] in IDLE_LEAVES:
            continue  # a thread-pool thread waiting for work (py-spy counts it as busy)
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        layer = _layer(frames[-1])
        layers[layer] = layers.get(layer, 0) + count
        for f in set(frames):
            cum[f] = cum.get(f, 0) + count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples of the busy worker (idle epoll waits are not sampled)", "", "own time by layer:"]
    for name, n in sorted(layers.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {100 * n / total:5.1f} %  {name}")
    lines += ["", "own time:"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f} %  {name}")
    lines += ["", "cumulative (the function and what it calls; entry points above 90 % left out):"]
    shown = [(name, n) for name, n in cum.items() if n < 0.9 * total]
    for name, n in sorted(shown, key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f} %  {name}")
    return lines


IDLE_LEAVES = frozenset({"trio/_core/_thread_cache.py:WorkerThread._work", "threading.py:Condition.wait"})
LAYERS = (
    ("trio/_socket.py", "socket syscalls (send/recv via trio's socket wrapper)"),
    ("trio/_highlevel_socket.py", "socket syscalls (send/recv via trio's socket wrapper)"),
    ("trio/_core/_io_epoll.py", "trio scheduler and epoll"),
    ("trio/_core/", "trio scheduler and epoll"),
    ("trio/", "trio other (channels, locks, timeouts)"),
    ("outcome/", "trio scheduler and epoll"),
    ("trio_websocket/", "trio-websocket"),
    ("wsproto/", "wsproto (WebSocket framing, masking, UTF-8)"),
    ("h11/", "wsproto (WebSocket framing, masking, UTF-8)"),
    ("json/", "JSON"),
    ("bridge/websocket/direct.py", "socket syscalls (bridge.websocket.direct: os.read/os.write)"),
    ("bridge/websocket/codec.py", "bridge.websocket.codec (framing, masking, UTF-8)"),
    ("bridge/", "bridge (runner, core, dialects, hooks)"),
    ("structlog/", "logging"),
    ("prometheus_client/", "metrics"),
    ("sqlite3/", "call records (SQLite)"),
    # the baseline (bench/baseline_bridge.py)
    ("asyncio/", "asyncio event loop (and its socket calls)"),
    ("selectors.py", "asyncio event loop (and its socket calls)"),
    ("uvloop/", "asyncio event loop (and its socket calls)"),
    ("uvicorn/", "uvicorn (ASGI server, its WebSocket protocol)"),
    ("websockets/", "websockets (framing, both sides)"),
    ("starlette/", "Starlette / FastAPI (ASGI app, middleware)"),
    ("fastapi/", "Starlette / FastAPI (ASGI app, middleware)"),
    ("baseline_bridge.py", "the baseline's own code"),
)


def _layer(name: str) -> str:
    for prefix, layer in LAYERS:
        if name.startswith(prefix) or f"/{prefix}" in name:
            return layer
    return "other (stdlib, interpreter)"


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``module.py:func`` (line numbers merged)."""
    frame = frame.strip()
    if not frame or frame.startswith("process ") or frame.startswith("thread "):
        return ""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for anchor in ("site-packages", "bridge", "lib"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            path = "/".join(parts[i + 1 :] if anchor != "bridge" else parts[i:])
            break
    return f"{path}:{name}"


# --- targets (the project's performance goals) ------------------------------------------------------

REFERENCE_CALLS = 50  # the load at which CPU, p99 and memory are checked
TARGET_CPU_RATIO = 0.5  # bridge's core per call ≤ this × the baseline's, same run
TARGET_P99_MS = 5.0  # each way, at REFERENCE_CALLS
CAPACITY_P99_MS = 10.0  # capacity: calls on one core before p99 (either way) passes this
TARGET_CAPACITY = 150
TARGET_MEM_MIB = 0.5  # RSS growth per call (MiB; a little stricter than 0.5 MB)


def fmt(stats: dict[str, float], key: str) -> str:
    return f"{stats[key]:.2f}" if key in stats else "–"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"CPython {sys.version.split()[0]}"]
    for name in ("trio", "trio-websocket", "wsproto", "fastapi", "starlette", "uvicorn", "websockets", "uvloop"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            if name != "uvloop":
                out.append(f"{name} (not installed)")
    return ", ".join(out)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def print_steps(steps: list[Step]) -> None:
    head = (
        "| calls | bridge | worker cores | core/call | caller→model p50 / p99 / max (ms) "
        "| model→caller p50 / p99 / max (ms) | frames (lost) | deltas (lost) | load gens (cores) "
        "| RSS idle → end (MiB) | MiB/call | other load (cores) |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for s in steps:
        label = s.label
        print(
            f"| {s.calls} | {label} | {s.worker_cores:.3f} | {s.per_call:.4f} "
            f"| {fmt(s.up, 'p50')} / {fmt(s.up, 'p99')} / {fmt(s.up, 'max')} "
            f"| {fmt(s.down, 'p50')} / {fmt(s.down, 'p99')} / {fmt(s.down, 'max')} "
            f"| {s.frames} ({s.frames_lost}) | {s.deltas} ({s.deltas_lost}) "
            f"| {s.load_cores:.2f} | {s.idle_rss_mib:.0f} → {s.worker_rss_mib:.0f} | {s.mem_per_call_mib:.3f} "
            f"| {s.other_bridge_cpu:.2f} / {s.other_load_cpu:.2f} |"
        )


class Results:
    """The steps of one run, by label (bridge, baseline, a variant) and number of calls (several
    with ``--repeats``)."""

    def __init__(self, labels: list[str] | None = None) -> None:
        self.steps: dict[str, dict[int, list[Step]]] = {t: {} for t in (labels or TARGETS)}

    def add(self, step: Step) -> None:
        self.steps.setdefault(step.label, {}).setdefault(step.calls, []).append(step)

    def all(self) -> list[Step]:
        return [s for t in self.steps for n in sorted(self.steps[t]) for s in self.steps[t][n]]

    def at(self, target: str, calls: int) -> list[Step]:
        return self.steps.get(target, {}).get(calls, [])

    def med(self, target: str, calls: int, key: str) -> float:
        """Median over the repeats of one figure: ``per_call``, ``mem``, ``up.p99``, ``down.p50``..."""
        vals: list[float] = []
        for s in self.at(target, calls):
            if key == "per_call":
                vals.append(s.per_call)
            elif key == "mem":
                vals.append(s.mem_per_call_mib)
            elif key == "cores":
                vals.append(s.worker_cores)
            else:
                way, _, stat = key.partition(".")
                vals.append(getattr(s, way).get(stat, math.inf))
        return median(vals)

    def healthy(self, target: str, calls: int) -> bool:
        steps = self.at(target, calls)
        return bool(steps) and all(s.healthy for s in steps)

    def capacity(self, target: str) -> tuple[int, int | None]:
        """(largest N whose p99 stayed ≤ CAPACITY_P99_MS both ways, together with every smaller N;
        the first N where it passed, or None if no measured N did)."""
        ok = 0
        for n in sorted(self.steps[target]):
            worst = max(self.med(target, n, "up.p99"), self.med(target, n, "down.p99"))
            if not self.healthy(target, n) or worst > CAPACITY_P99_MS:
                return ok, n
            ok = n
        return ok, None


def print_comparison(res: Results) -> None:
    bridges = [t for t in res.steps if t != "baseline" and res.steps[t]]
    pairs_n = sorted({n for t in bridges for n in res.steps[t]} & set(res.steps.get("baseline", {})))
    if not pairs_n:
        return
    print("\nbridge (and its variants) against the baseline, same run (medians over the repeats; "
          "ratio = bridge / baseline):\n")  # fmt: skip
    head = (
        "| calls | bridge | core/call | core/call baseline | CPU ratio | ratio per pair "
        "| p50 / p99 / max up (ms) | baseline up (ms) | p50 / p99 / max down (ms) | baseline down (ms) "
        "| MiB/call / baseline's |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for n in pairs_n:
        cl = res.med("baseline", n, "per_call")

        def lat(t: str, way: str, n: int = n) -> str:
            return " / ".join(f"{res.med(t, n, f'{way}.{k}'):.2f}" for k in ("p50", "p99", "max"))

        for t in bridges:
            if not res.at(t, n):
                continue
            cb = res.med(t, n, "per_call")
            pairs = [
                b.per_call / max(1e-9, base.per_call)
                for b, base in zip(res.at(t, n), res.at("baseline", n), strict=False)
            ]
            print(
                f"| {n} | {t} | {cb:.4f} | {cl:.4f} | **{cb / cl:.2f}** | {', '.join(f'{r:.2f}' for r in pairs)} "
                f"| {lat(t, 'up')} | {lat('baseline', 'up')} | {lat(t, 'down')} | {lat('baseline', 'down')} "
                f"| {res.med(t, n, 'mem'):.3f} / {res.med('baseline', n, 'mem'):.3f} |"
            )


def print_capacity(res: Results) -> None:
    print(f"\ncapacity: calls on one core before p99 passes {CAPACITY_P99_MS:.0f} ms either way (sweep steps only):\n")
    print("| | calls carried | p99 passed at | worker cores at the last good step |")
    print("|---|---|---|---|")
    for t in res.steps:
        if not res.steps[t]:
            continue
        ok, failed = res.capacity(t)
        cores = f"{res.med(t, ok, 'cores'):.2f}" if ok else "–"
        print(f"| {t} | {ok if failed else f'≥ {ok}'} | {failed or 'not within the sweep'} | {cores} |")


def check_targets(res: Results) -> tuple[list[tuple[str, str, str, str]], bool]:
    """Each target the run measured: (target, measured, needed, verdict); and whether all were met."""
    rows: list[tuple[str, str, str, str]] = []
    n = REFERENCE_CALLS
    if res.at("bridge", n):
        sick = "" if res.healthy("bridge", n) else " (calls failed or frames lost)"
        healthy = not sick
        if res.at("baseline", n):
            ratio = res.med("bridge", n, "per_call") / res.med("baseline", n, "per_call")
            met = healthy and ratio <= TARGET_CPU_RATIO
            rows.append((f"CPU per call at {n} calls, bridge / baseline", f"{ratio:.2f}{sick}",
                         f"≤ {TARGET_CPU_RATIO:.2f}", "met" if met else "MISSED"))  # fmt: skip
        for way, name in (("up", "caller → model"), ("down", "model → caller")):
            p99 = res.med("bridge", n, f"{way}.p99")
            met = healthy and p99 <= TARGET_P99_MS
            rows.append((f"p99 {name} at {n} calls", f"{p99:.2f} ms{sick}", f"≤ {TARGET_P99_MS:.0f} ms",
                         "met" if met else "MISSED"))  # fmt: skip
        mem = res.med("bridge", n, "mem")
        rows.append((f"memory per call at {n} calls (RSS growth / calls)", f"{mem:.3f} MiB",
                     f"≤ {TARGET_MEM_MIB} MiB", "met" if mem <= TARGET_MEM_MIB else "MISSED"))  # fmt: skip
    if res.steps.get("bridge"):
        ok, failed = res.capacity("bridge")
        if failed is not None and failed <= TARGET_CAPACITY:
            rows.append(("calls on one core before p99 passes 10 ms", f"{ok} (passed at {failed})",
                         f"≥ {TARGET_CAPACITY}", "MISSED"))  # fmt: skip
        elif ok >= TARGET_CAPACITY:
            rows.append(("calls on one core before p99 passes 10 ms", f"≥ {ok}", f"≥ {TARGET_CAPACITY}", "met"))
    return rows, all(r[3] == "met" for r in rows)


def add_load_options(p: argparse.ArgumentParser) -> None:
    """The options of one step (load shape, timing, retries), shared with scale_bench."""
    p.add_argument("--window", type=float, default=20.0, help="measuring window per step, seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="after the last call connected, seconds")
    p.add_argument("--ramp", type=float, default=2.0, help="calls connect spread over this many seconds")
    p.add_argument("--delta-ms", type=int, default=100, help="model audio per delta")
    p.add_argument("--answer-ms", type=int, default=2000, help="model audio per answer")
    p.add_argument("--answer-every", type=float, default=4.0, help="seconds between answers of one call")
    p.add_argument("--speed", type=float, default=4.0, help="model deltas arrive this much faster than real time")
    p.add_argument("--slot-ms", type=float, default=1.0, help="the callers' pacer wakes this often (ms)")
    p.add_argument("--baseline-loop", default="auto", help="uvicorn loop for the baseline (auto = uvloop if installed)")
    p.add_argument("--wait-quiet", type=float, default=60.0, help="wait up to this long for idle CPUs per step")
    p.add_argument("--retries", type=int, default=2, help="repeat a step disturbed by other processes")


def describe(step: Step) -> str:
    """One line per measured step, printed as the run goes."""
    s = step
    label = s.label
    per_worker = f" [{' + '.join(f'{c:.2f}' for c in s.per_worker_cores)}]" if len(s.per_worker_cores) > 1 else ""
    return (
        f"  {label:8s} N={s.calls:4d}: {s.worker_cores:.3f} cores{per_worker} ({s.per_call:.4f}/call), "
        f"up p50/p99/max {fmt(s.up, 'p50')}/{fmt(s.up, 'p99')}/{fmt(s.up, 'max')} ms, "
        f"down {fmt(s.down, 'p50')}/{fmt(s.down, 'p99')}/{fmt(s.down, 'max')} ms, "
        f"RSS {s.idle_rss_mib:.0f}→{s.worker_rss_mib:.0f} MiB ({s.mem_per_call_mib:.3f}/call), "
        f"connected {s.connected}/{s.calls} (live at the end {s.active_end}), "
        f"lost {s.frames_lost}+{s.deltas_lost}, "
        f"load gens {s.carrier_cores:.2f}+{s.upstream_cores:.2f} cores, "
        f"error lines {s.bridge_errors}, "
        f"other load on CPUs {s.other_bridge_cpu:.2f}/{s.other_load_cpu:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--calls", default="10,50,75,100,125,150,175,200", help="comma-separated sweep of concurrent calls")
    p.add_argument("--targets", default="bridge,baseline",
                   help="bridges to measure (first N: in this order): bridge, baseline, --variant names")  # fmt: skip
    p.add_argument("--variant", action="append", default=[], metavar="NAME:section.key=value[,...]",
                   help="bridge with settings changed (environment overrides), measured as target NAME")  # fmt: skip
    p.add_argument("--repeats", type=int, default=1, help="measurements per N and bridge (order alternates)")
    p.add_argument("--quick", action="store_true", help="10, 50, 100 calls with 8 s windows")
    add_load_options(p)
    p.add_argument("--stop-p99-ms", type=float, default=CAPACITY_P99_MS,
                   help="stop sweeping a bridge once its p99 (either way) passes this")  # fmt: skip
    p.add_argument("--bridge-cpu", type=int, default=0, help="the CPU both bridges are pinned to")
    p.add_argument("--load-cpu", type=int, default=1, help="the CPU the load generators are pinned to")
    p.add_argument("--profile-calls", type=int, default=100)
    p.add_argument("--profile-seconds", type=float, default=10.0)
    p.add_argument("--profile-target", default="bridge", help="bridge, baseline or a variant's name")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.calls = "10,50,100"
        args.window = min(args.window, 8.0)
        args.profile_seconds = min(args.profile_seconds, 5.0)
    try:
        args.variants = parse_variants(args.variant)
    except ValueError as exc:
        p.error(str(exc))
    known = (*TARGETS, *args.variants)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or any(t not in known for t in targets) or args.profile_target not in known:
        p.error(f"--targets and --profile-target: a comma-separated list of {', '.join(known)}")
    if len(os.sched_getaffinity(0)) < 2 and args.bridge_cpu != args.load_cpu:
        print("load_bench: needs two CPUs (the bridge on one, the load on the other)", file=sys.stderr)
        return 2
    pin(args.load_cpu)
    sweep = sorted({int(x) for x in args.calls.split(",") if x.strip()})
    bench = Bench(args)
    print(f"load_bench: the bridge under test on CPU {args.bridge_cpu}, load generators on CPU {args.load_cpu}; "
          f"files in {bench.tmp}\n  {cpu_model()}; {versions()}", flush=True)  # fmt: skip
    try:
        return run(args, bench, targets, sweep)
    except RuntimeError as exc:  # a process did not start, the callers failed: no figure to judge
        print(f"load_bench: the measurement failed: {exc}", file=sys.stderr)
        return 2


def setup_of(args: argparse.Namespace, name: str) -> Setup:
    """The one-worker Setup of target ``name`` (bridge, baseline or a variant) on the benchmark's CPUs."""
    cpus = ((args.bridge_cpu,), (args.load_cpu,))
    if name in TARGETS:
        return Setup(name, 1, *cpus)
    return Setup("bridge", 1, *cpus, variant=name, env=args.variants[name])


def run(args: argparse.Namespace, bench: Bench, targets: list[str], sweep: list[int]) -> int:
    res = Results(targets)
    stopped: set[str] = set()
    t_start = time.monotonic()
    for i, n in enumerate(sweep[:20]):
        for r in range(args.repeats):
            order = targets if (i + r) % 2 == 0 else targets[::-1]  # alternate who goes first
            for t in order:
                if t in stopped:
                    continue
                step = bench.measure(setup_of(args, t), n, args.window)
                res.add(step)
                print(describe(step), flush=True)
        for t in targets:
            if t in stopped or not res.at(t, n):
                continue
            worst = max(res.med(t, n, "up.p99"), res.med(t, n, "down.p99"))
            if worst > args.stop_p99_ms or not res.healthy(t, n):
                print(f"  stop {t}: p99 {worst:.1f} ms at {n} calls", flush=True)
                stopped.add(t)
        if stopped >= set(targets):
            break
    profile: list[str] = []
    if not args.no_profile:
        setup = setup_of(args, args.profile_target)
        pstep = bench.run_step(setup, args.profile_calls, args.profile_seconds + 3, profile_s=args.profile_seconds)
        profile = pstep.profile
    print(f"\nsweep took {time.monotonic() - t_start:.0f} s; {cpu_model()}; {versions()}\n")
    print_steps(res.all())
    print_comparison(res)
    print_capacity(res)
    if profile:
        print(f"\nprofile of {args.profile_target} at {args.profile_calls} calls ({args.profile_seconds:.0f} s):")
        print("\n".join(profile))
    rows, all_met = check_targets(res)
    print("\ntargets (issue 16):\n")
    if rows:
        print("| target | measured | needed | |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        print(f"(none measured: the targets are checked at {REFERENCE_CALLS} calls and by a sweep up to "
              f"{TARGET_CAPACITY} calls)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "versions": versions(),
                    "steps": [
                        s.__dict__ | {"per_call": s.per_call, "mem_per_call_mib": s.mem_per_call_mib} for s in res.all()
                    ],
                    "targets": rows,
                    "profile": profile,
                },
                indent=1,
            )
        )
    if not all_met:
        print("\nload_bench: a target was missed (exit status 1)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
