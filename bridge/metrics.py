"""Every Prometheus metric of the bridge, in one place.

Multi-process mode
------------------
The bridge runs as a supervisor plus N trio worker processes. prometheus_client supports that
through its *multiprocess mode*: every process writes its samples to memory-mapped files
(``<type>_<pid>.db``) in one directory, and whoever serves ``/metrics`` (the supervisor) merges
those files with :class:`prometheus_client.multiprocess.MultiProcessCollector` on every scrape.

prometheus_client decides between in-memory values and mmap files **once, when it is first
imported** (``prometheus_client.values.ValueClass``). Therefore:

* ``PROMETHEUS_MULTIPROC_DIR`` must be in the environment **before prometheus_client (and so this
  module) is imported** in any process. The supervisor sets it in its own environment before it
  imports anything from ``bridge`` and passes it on to its workers. Setting it later has no effect
  on metrics already created and leaves :func:`render_latest` blind to this process's values.
* The directory must be wiped between runs of the service. The supervisor calls
  :func:`prepare_multiprocess_dir` at start, before it starts any worker. Because this module has
  to be imported to call it (and importing it already opens the supervisor's own files), the
  calling process's own live files are kept and everything else is removed. If the directory
  survives restarts and the supervisor gets the same pid again (pid 1 in a restarted container),
  the supervisor-side counters would continue from the old run: prefer a directory that is fresh
  per start (systemd ``RuntimeDirectory=``, a tmpfs in containers).
* When a worker exits the supervisor calls :func:`mark_worker_dead` so ``livesum`` gauges
  (``bridge_calls_active``, ``bridge_workers_alive``) stop counting it. Counter and histogram
  files of dead workers are kept on purpose (counters must not go backwards); restart workers
  rarely, as every dead pid's files are read on every scrape.

Without ``PROMETHEUS_MULTIPROC_DIR`` (one process, tests) the metrics live in the default registry
and :func:`render_latest` exposes that registry (including the process and GC collectors).

Naming follows the Prometheus conventions checked by ``promtool check metrics``: counters end in
``_total``, base units only (seconds, bytes), no abbreviations. The ``bridge_admin_requests_total``
``path`` label must be a route template (``/sessions/{id}``), never a raw request path, to keep
cardinality bounded.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform

# The directory must exist before prometheus_client opens its first file (metrics without labels
# open theirs when they are created, that is when this module is imported).
_MULTIPROC_DIR_AT_IMPORT: str | None = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if _MULTIPROC_DIR_AT_IMPORT is not None:
    os.makedirs(_MULTIPROC_DIR_AT_IMPORT, exist_ok=True)

from prometheus_client import (  # noqa: E402  (the directory has to exist first)
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4  # noqa: E402
from prometheus_client.metrics import MetricWrapperBase  # noqa: E402

from bridge import __version__  # noqa: E402
from bridge.vocabulary import Direction, EndReason, TokenKind  # noqa: E402

__all__ = [
    "ALL_METRICS",
    "AUDIO_ERROR_KINDS",
    "COST_PARTS",
    "DIRECTIONS",
    "OUTCOMES",
    "PROTOCOL_ERROR_SOURCES",
    "REFUSALS",
    "TOKEN_KINDS",
    "admin_requests_total",
    "audio_bytes_total",
    "audio_errors_total",
    "barge_in_reaction_seconds",
    "barge_ins_total",
    "build_info",
    "call_cost_per_minute_usd",
    "call_duration_seconds",
    "calls_active",
    "calls_ended_total",
    "calls_started_total",
    "cost_usd_total",
    "dtmf_total",
    "frames_total",
    "mark_worker_dead",
    "mcp_events_total",
    "metric_types",
    "model_errors_total",
    "model_gap_seconds",
    "model_handovers_total",
    "model_races_total",
    "model_reconnects_total",
    "multiprocess_enabled",
    "prepare_multiprocess_dir",
    "protocol_errors_total",
    "refused_total",
    "render_latest",
    "response_latency_seconds",
    "tokens_total",
    "tool_calls_total",
    "tool_duration_seconds",
    "transcription_audio_seconds_total",
    "turns_total",
    "upstream_connect_seconds",
    "worker_restarts_total",
    "workers_alive",
]

# ---------------------------------------------------------------------------------------------
# Label values. Known sets are pre-initialised to 0 below so that rate() and absent-series
# alerts work from the first scrape.

#: ``outcome`` of ``bridge_calls_ended_total``: why a call ended, exactly the end reasons of the
#: records. A call refused before it started is not an ended call: see ``bridge_refused_total``.
OUTCOMES: tuple[str, ...] = tuple(reason.value for reason in EndReason)
#: ``direction`` of frame and byte counters.
DIRECTIONS: tuple[str, ...] = tuple(direction.value for direction in Direction)
#: ``kind`` of ``bridge_audio_errors_total``.
AUDIO_ERROR_KINDS: tuple[str, ...] = ("base64", "odd_length", "empty", "too_large", "format")
#: ``source`` of ``bridge_protocol_errors_total`` (refused HTTP requests are ``bridge_refused_total``).
PROTOCOL_ERROR_SOURCES: tuple[str, ...] = ("carrier", "model")
#: ``kind`` of ``bridge_tokens_total``: the meter's token kinds. Transcription billed by duration
#: is not tokens; it is ``bridge_transcription_audio_seconds_total``.
TOKEN_KINDS: tuple[str, ...] = tuple(k.value for k in TokenKind if k is not TokenKind.TRANSCRIPTION_AUDIO_MS)
#: ``route`` → the ``reason`` values of ``bridge_refused_total`` that can occur there. ``other`` is
#: any other path, or a request whose head never arrived whole.
REFUSALS: dict[str, tuple[str, ...]] = {
    "answer": (
        "method_not_allowed",
        "body_timeout",
        "body_too_large",
        "bad_signature",
        "not_configured",
        "at_capacity",
        "draining",
    ),
    "media": ("bad_request", "head_timeout", "bad_signature", "at_capacity", "draining"),
    "other": ("head_timeout", "head_too_large", "bad_request", "too_many_pending", "not_found"),
}
#: ``part`` of ``bridge_cost_usd_total``.
COST_PARTS: tuple[str, ...] = ("model", "transcription", "carrier")

# ---------------------------------------------------------------------------------------------
# Calls

calls_active: Gauge = Gauge(
    "bridge_calls_active",
    "Calls in progress (summed over live worker processes).",
    multiprocess_mode="livesum",
)
calls_started_total: Counter = Counter(
    "bridge_calls_started_total",
    "Calls accepted by a worker (carrier stream started).",
)
calls_ended_total: Counter = Counter(
    "bridge_calls_ended_total",
    "Calls finished, by end reason.",
    ["outcome"],
)
refused_total: Counter = Counter(
    "bridge_refused_total",
    "Requests and calls refused on the public port before a call started, by route (twiml, media, "
    "other) and reason; an overflow answer on /twiml counts as twiml at_capacity.",
    ["route", "reason"],
)
call_duration_seconds: Histogram = Histogram(
    "bridge_call_duration_seconds",
    "Duration of finished calls in seconds.",
    buckets=(5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0),
)
dtmf_total: Counter = Counter("bridge_dtmf_total", "DTMF digits received from callers.")
turns_total: Counter = Counter("bridge_turns_total", "Model response turns played to callers.")

# ---------------------------------------------------------------------------------------------
# Media

frames_total: Counter = Counter(
    "bridge_frames_total",
    "Audio frames forwarded, by direction (to_model, to_carrier).",
    ["direction"],
)
audio_bytes_total: Counter = Counter(
    "bridge_audio_bytes_total",
    "Decoded audio bytes forwarded, by direction (to_model, to_carrier).",
    ["direction"],
)
audio_errors_total: Counter = Counter(
    "bridge_audio_errors_total",
    "Audio payloads that could not be converted, by kind.",
    ["kind"],
)
protocol_errors_total: Counter = Counter(
    "bridge_protocol_errors_total",
    "Malformed or unexpected messages, by source (carrier, model, http) and kind.",
    ["source", "kind"],
)

# ---------------------------------------------------------------------------------------------
# Model / latency

upstream_connect_seconds: Histogram = Histogram(
    "bridge_upstream_connect_seconds",
    "Time to open the Realtime session: connect until session.updated, in seconds.",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
response_latency_seconds: Histogram = Histogram(
    "bridge_response_latency_seconds",
    "End of caller speech until the first model audio is sent to the carrier, in seconds.",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
)
barge_ins_total: Counter = Counter(
    "bridge_barge_ins_total",
    "Times a caller talked over model audio and playback was cleared.",
)
barge_in_reaction_seconds: Histogram = Histogram(
    "bridge_barge_in_reaction_seconds",
    "From speech_started arriving to the clear message leaving the bridge, in seconds.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
model_errors_total: Counter = Counter(
    "bridge_model_errors_total",
    "Error events received from the Realtime API, by error code (harmless races excluded).",
    ["code"],
)
model_races_total: Counter = Counter(
    "bridge_model_races_total",
    "Harmless error events from the Realtime API, by code: a request that lost a race it could not "
    "avoid (response_cancel_not_active after a barge-in, for example).",
    ["code"],
)

# ---------------------------------------------------------------------------------------------
# Usage and cost

tokens_total: Counter = Counter(
    "bridge_tokens_total",
    "Tokens used, by model and kind.",
    ["model", "kind"],
)
transcription_audio_seconds_total: Counter = Counter(
    "bridge_transcription_audio_seconds_total",
    "Caller audio sent to duration-billed transcription models, in seconds.",
    ["model"],
)
cost_usd_total: Counter = Counter(
    "bridge_cost_usd_total",
    "Cost in US dollars, by model and part (model, transcription, carrier).",
    ["model", "part"],
)
call_cost_per_minute_usd: Histogram = Histogram(
    "bridge_call_cost_per_minute_usd",
    "Cost of each finished call per minute of call time, in US dollars.",
    buckets=(0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
)

# ---------------------------------------------------------------------------------------------
# Tools

tool_calls_total: Counter = Counter(
    "bridge_tool_calls_total",
    "Function tool calls the model made, by tool and outcome (ok, http_error, timeout, ...).",
    ["tool", "outcome"],
)
tool_duration_seconds: Histogram = Histogram(
    "bridge_tool_duration_seconds",
    "From the model's function call to its output, in seconds, by tool.",
    ["tool"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0),
)
mcp_events_total: Counter = Counter(
    "bridge_mcp_events_total",
    "MCP tool listings and calls made by the Realtime API, by server, kind and status.",
    ["server_label", "kind", "status"],
)

# ---------------------------------------------------------------------------------------------
# Model sessions replaced mid-call

model_reconnects_total: Counter = Counter(
    "bridge_model_reconnects_total",
    "Model sessions lost mid-call, by cause (closed, ping_timeout, session_expired) and result "
    "(restored: a new session took over; failed: the call ended).",
    ["cause", "result"],
)
model_handovers_total: Counter = Counter(
    "bridge_model_handovers_total",
    "Model sessions replaced before they aged out, by cause (age: at a quiet moment; age_forced: "
    "the deadline came first).",
    ["cause"],
)
model_gap_seconds: Histogram = Histogram(
    "bridge_model_gap_seconds",
    "From losing a model session to its replacement taking the call's audio, in seconds.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)

# ---------------------------------------------------------------------------------------------
# Call webhooks (supervisor side)

webhook_deliveries_total: Counter = Counter(
    "bridge_webhook_deliveries_total",
    "Call webhook delivery attempts, by outcome (delivered, retried, failed).",
    ["outcome"],
)
webhooks_pending: Gauge = Gauge(
    "bridge_webhooks_pending",
    "Call webhook events waiting to be delivered (read from the outbox by the sender).",
    multiprocess_mode="mostrecent",
)

# ---------------------------------------------------------------------------------------------
# Processes and admin (supervisor side)

workers_alive: Gauge = Gauge(
    "bridge_workers_alive",
    "Worker processes currently running.",
    multiprocess_mode="livesum",
)
worker_restarts_total: Counter = Counter(
    "bridge_worker_restarts_total",
    "Worker processes restarted by the supervisor after an unexpected exit.",
)
admin_requests_total: Counter = Counter(
    "bridge_admin_requests_total",
    "Admin port requests, by route template and HTTP status.",
    ["path", "status"],
)
build_info: Gauge = Gauge(
    "bridge_build_info",
    "Always 1; the labels say which bridge version and Python run.",
    ["version", "python"],
    multiprocess_mode="max",
)

#: Every metric defined here, in definition order.
ALL_METRICS: tuple[MetricWrapperBase, ...] = (
    calls_active,
    calls_started_total,
    calls_ended_total,
    refused_total,
    call_duration_seconds,
    frames_total,
    audio_bytes_total,
    audio_errors_total,
    protocol_errors_total,
    upstream_connect_seconds,
    response_latency_seconds,
    barge_ins_total,
    barge_in_reaction_seconds,
    model_errors_total,
    model_races_total,
    tokens_total,
    transcription_audio_seconds_total,
    cost_usd_total,
    call_cost_per_minute_usd,
    dtmf_total,
    turns_total,
    tool_calls_total,
    tool_duration_seconds,
    mcp_events_total,
    model_reconnects_total,
    model_handovers_total,
    model_gap_seconds,
    webhook_deliveries_total,
    webhooks_pending,
    workers_alive,
    worker_restarts_total,
    admin_requests_total,
    build_info,
)


def _preinitialise() -> None:
    for outcome in OUTCOMES:
        calls_ended_total.labels(outcome=outcome)
    for direction in DIRECTIONS:
        frames_total.labels(direction=direction)
        audio_bytes_total.labels(direction=direction)
    for kind in AUDIO_ERROR_KINDS:
        audio_errors_total.labels(kind=kind)
    for outcome in ("delivered", "retried", "failed"):
        webhook_deliveries_total.labels(outcome=outcome)
    for route, reasons in REFUSALS.items():
        for reason in reasons:
            refused_total.labels(route=route, reason=reason)
    build_info.labels(version=__version__, python=platform.python_version()).set(1)


_preinitialise()


def metric_types() -> dict[str, str]:
    """Exposed name of every metric defined here → its type (counter, gauge, histogram).

    Counter names include the ``_total`` suffix as exposed; histogram names are the base name
    (exposed as ``_bucket``, ``_sum`` and ``_count`` series).
    """
    out: dict[str, str] = {}
    for metric in ALL_METRICS:
        for family in metric.describe():
            name = family.name + "_total" if family.type == "counter" else family.name
            out[name] = family.type
    return out


def multiprocess_enabled() -> bool:
    """True when this process runs in prometheus_client's multiprocess mode.

    Decided by ``PROMETHEUS_MULTIPROC_DIR`` at import time (see the module docstring).
    """
    return _MULTIPROC_DIR_AT_IMPORT is not None


def render_latest() -> tuple[bytes, str]:
    """Exposition body and its Content-Type for ``/metrics``.

    In multiprocess mode the files of all processes are merged through a registry created for
    this call only (the collector must not share a registry with live metrics, or they export
    twice). Reading the files is blocking I/O: inside a trio process call it through
    ``trio.to_thread.run_sync``.

    The content type is the classic text format 0.0.4, which every Prometheus version parses;
    all our names are valid legacy names so the body is the same as in format 1.0.0.
    """
    if _MULTIPROC_DIR_AT_IMPORT is not None:
        registry = CollectorRegistry(support_collectors_without_names=True)
        multiprocess.MultiProcessCollector(registry, path=_MULTIPROC_DIR_AT_IMPORT)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
    return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4


def mark_worker_dead(pid: int) -> None:
    """Forget the live-gauge contribution of an exited process (no-op in single-process mode).

    Removes only that pid's ``live*`` gauge files; its counters and histograms stay so totals
    keep going up. Call it from the supervisor whenever a worker exits, for whatever reason.
    """
    if _MULTIPROC_DIR_AT_IMPORT is not None:
        multiprocess.mark_process_dead(pid, path=_MULTIPROC_DIR_AT_IMPORT)  # type: ignore[no-untyped-call]


def prepare_multiprocess_dir(path: str) -> None:
    """Create ``path`` and remove metric files left there by earlier runs.

    Called by the supervisor at start, before any worker starts. Files of the calling process
    are kept when it writes to this very directory: they are open and in use (importing this
    module created them), and removing them would silently drop the supervisor's own metrics.
    """
    os.makedirs(path, exist_ok=True)
    keep: set[str] = set()
    if _MULTIPROC_DIR_AT_IMPORT is not None and os.path.realpath(
        _MULTIPROC_DIR_AT_IMPORT
    ) == os.path.realpath(path):
        keep = set(glob.glob(os.path.join(glob.escape(path), f"*_{os.getpid()}.db")))
    for filename in glob.glob(os.path.join(glob.escape(path), "*.db")):
        if filename in keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(filename)
