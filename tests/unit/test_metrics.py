"""bridge.metrics: names, labels, exposition, multiprocess merging, promtool lint."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

import bridge
from bridge import metrics
from bridge.vocabulary import EndReason, TokenKind

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = "/usr/bin/promtool"

SampleKey = tuple[str, frozenset[tuple[str, str]]]


def _samples(body: bytes) -> dict[SampleKey, float]:
    out: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: Mapping[SampleKey, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _exercise_all() -> None:
    """Touch every metric once (values chosen to be recognisable)."""
    metrics.calls_active.inc()
    metrics.calls_started_total.inc()
    metrics.calls_ended_total.labels(outcome="caller_hangup").inc()
    metrics.call_duration_seconds.observe(42.0)
    metrics.frames_total.labels(direction="to_model").inc(3)
    metrics.frames_total.labels(direction="to_carrier").inc(5)
    metrics.audio_bytes_total.labels(direction="to_model").inc(480)
    metrics.audio_bytes_total.labels(direction="to_carrier").inc(800)
    metrics.audio_errors_total.labels(kind="odd_length").inc()
    metrics.protocol_errors_total.labels(source="carrier", kind="bad_json").inc()
    metrics.upstream_connect_seconds.observe(0.25)
    metrics.response_latency_seconds.observe(0.6)
    metrics.barge_ins_total.inc()
    metrics.barge_in_reaction_seconds.observe(0.0003)
    metrics.model_errors_total.labels(code="rate_limit_exceeded").inc()
    metrics.tokens_total.labels(model="gpt-realtime", kind="audio_in").inc(120)
    metrics.cost_usd_total.labels(model="gpt-realtime", part="model").inc(0.0123)
    metrics.call_cost_per_minute_usd.observe(0.12)
    metrics.dtmf_total.inc()
    metrics.turns_total.inc()
    metrics.workers_alive.inc()
    metrics.worker_restarts_total.inc()
    metrics.admin_requests_total.labels(path="/sessions", status="200").inc()
    metrics.refused_total.labels(route="media", reason="bad_signature").inc()
    metrics.model_races_total.labels(code="response_cancel_not_active").inc()
    metrics.transcription_audio_seconds_total.labels(model="whisper-1").inc(1.5)


# --------------------------------------------------------------------------------------------------
# Definitions and naming


def test_all_metrics_lists_every_module_level_metric() -> None:
    defined = {id(v) for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)}
    assert defined == {id(m) for m in metrics.ALL_METRICS}
    assert len(metrics.ALL_METRICS) == 33


def test_metric_types_and_naming_conventions() -> None:
    types = metrics.metric_types()
    expected = {
        "bridge_calls_active": "gauge",
        "bridge_calls_started_total": "counter",
        "bridge_calls_ended_total": "counter",
        "bridge_refused_total": "counter",
        "bridge_call_duration_seconds": "histogram",
        "bridge_frames_total": "counter",
        "bridge_audio_bytes_total": "counter",
        "bridge_audio_errors_total": "counter",
        "bridge_protocol_errors_total": "counter",
        "bridge_upstream_connect_seconds": "histogram",
        "bridge_response_latency_seconds": "histogram",
        "bridge_barge_ins_total": "counter",
        "bridge_barge_in_reaction_seconds": "histogram",
        "bridge_model_errors_total": "counter",
        "bridge_model_races_total": "counter",
        "bridge_tokens_total": "counter",
        "bridge_transcription_audio_seconds_total": "counter",
        "bridge_cost_usd_total": "counter",
        "bridge_call_cost_per_minute_usd": "histogram",
        "bridge_dtmf_total": "counter",
        "bridge_turns_total": "counter",
        "bridge_tool_calls_total": "counter",
        "bridge_tool_duration_seconds": "histogram",
        "bridge_mcp_events_total": "counter",
        "bridge_model_reconnects_total": "counter",
        "bridge_model_handovers_total": "counter",
        "bridge_model_gap_seconds": "histogram",
        "bridge_webhook_deliveries_total": "counter",
        "bridge_webhooks_pending": "gauge",
        "bridge_workers_alive": "gauge",
        "bridge_worker_restarts_total": "counter",
        "bridge_admin_requests_total": "counter",
        "bridge_build_info": "gauge",
    }
    assert types == expected
    for name, typ in types.items():
        assert re.fullmatch(r"bridge_[a-z][a-z_]*[a-z]", name), name
        assert name.endswith("_total") == (typ == "counter"), name
        tokens = set(name.split("_"))
        assert not tokens & {"ms", "us", "ns", "sec", "s", "kb", "mb", "minutes", "milliseconds"}, name


def test_label_names() -> None:
    def labelnames(m: MetricWrapperBase) -> tuple[str, ...]:
        return tuple(m._labelnames)

    assert labelnames(metrics.calls_ended_total) == ("outcome",)
    assert labelnames(metrics.frames_total) == ("direction",)
    assert labelnames(metrics.audio_bytes_total) == ("direction",)
    assert labelnames(metrics.audio_errors_total) == ("kind",)
    assert labelnames(metrics.protocol_errors_total) == ("source", "kind")
    assert labelnames(metrics.model_errors_total) == ("code",)
    assert labelnames(metrics.tokens_total) == ("model", "kind")
    assert labelnames(metrics.cost_usd_total) == ("model", "part")
    assert labelnames(metrics.admin_requests_total) == ("path", "status")
    assert labelnames(metrics.calls_active) == ()
    assert labelnames(metrics.refused_total) == ("route", "reason")
    assert labelnames(metrics.model_races_total) == ("code",)
    assert labelnames(metrics.transcription_audio_seconds_total) == ("model",)
    assert labelnames(metrics.build_info) == ("version", "python")


def test_label_values_are_the_shared_vocabulary() -> None:
    # An ended call's outcome is exactly its record's end reason; no "rejected" that nothing counts.
    assert tuple(r.value for r in EndReason) == metrics.OUTCOMES
    assert "rejected" not in metrics.OUTCOMES
    # The meter's token kinds, except the transcription duration, which is seconds, not tokens.
    assert set(metrics.TOKEN_KINDS) == {k.value for k in TokenKind} - {"transcription_audio_ms"}
    assert metrics.DIRECTIONS == ("to_model", "to_carrier")


def test_histogram_buckets_fit_what_they_measure() -> None:
    def upper_bounds(h: object) -> list[float]:
        return [b for b in h._upper_bounds if b != float("inf")]  # type: ignore[attr-defined]

    duration = upper_bounds(metrics.call_duration_seconds)
    assert duration[0] == 5.0 and duration[-1] == 3600.0
    latency = upper_bounds(metrics.response_latency_seconds)
    assert latency[0] == 0.05 and latency[-1] == 5.0
    reaction = upper_bounds(metrics.barge_in_reaction_seconds)
    assert reaction[0] == 0.0001 and reaction[-1] == 0.1
    cost = upper_bounds(metrics.call_cost_per_minute_usd)
    assert cost[0] == 0.01 and cost[-1] == 2.0


# --------------------------------------------------------------------------------------------------
# Single-process exposition


@pytest.mark.skipif(metrics.multiprocess_enabled(), reason="test process runs in multiprocess mode")
def test_render_single_process_exposes_every_metric_with_labels() -> None:
    before = _samples(metrics.render_latest()[0])
    _exercise_all()
    body, content_type = metrics.render_latest()
    assert content_type.startswith("text/plain")
    text = body.decode()
    for name, typ in metrics.metric_types().items():
        assert f"# HELP {name} " in text, name
        assert f"# TYPE {name} {typ}\n" in text, name

    after = _samples(body)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("bridge_calls_active") == 1
    assert delta("bridge_calls_started_total") == 1
    assert delta("bridge_calls_ended_total", outcome="caller_hangup") == 1
    assert delta("bridge_call_duration_seconds_count") == 1
    assert delta("bridge_call_duration_seconds_bucket", le="60.0") == 1
    assert delta("bridge_call_duration_seconds_bucket", le="30.0") == 0
    assert delta("bridge_frames_total", direction="to_model") == 3
    assert delta("bridge_frames_total", direction="to_carrier") == 5
    assert delta("bridge_audio_bytes_total", direction="to_carrier") == 800
    assert delta("bridge_audio_errors_total", kind="odd_length") == 1
    assert delta("bridge_protocol_errors_total", source="carrier", kind="bad_json") == 1
    assert delta("bridge_upstream_connect_seconds_sum") == pytest.approx(0.25)
    assert delta("bridge_response_latency_seconds_bucket", le="0.75") == 1
    assert delta("bridge_response_latency_seconds_bucket", le="0.5") == 0
    assert delta("bridge_barge_ins_total") == 1
    assert delta("bridge_barge_in_reaction_seconds_bucket", le="0.0005") == 1
    assert delta("bridge_barge_in_reaction_seconds_bucket", le="0.00025") == 0
    assert delta("bridge_model_errors_total", code="rate_limit_exceeded") == 1
    assert delta("bridge_tokens_total", model="gpt-realtime", kind="audio_in") == 120
    assert delta("bridge_cost_usd_total", model="gpt-realtime", part="model") == pytest.approx(0.0123)
    assert delta("bridge_call_cost_per_minute_usd_bucket", le="0.15") == 1
    assert delta("bridge_dtmf_total") == 1
    assert delta("bridge_turns_total") == 1
    assert delta("bridge_workers_alive") == 1
    assert delta("bridge_worker_restarts_total") == 1
    assert delta("bridge_admin_requests_total", path="/sessions", status="200") == 1
    assert delta("bridge_refused_total", route="media", reason="bad_signature") == 1
    assert delta("bridge_model_races_total", code="response_cancel_not_active") == 1
    assert delta("bridge_model_errors_total", code="response_cancel_not_active") == 0
    assert delta("bridge_transcription_audio_seconds_total", model="whisper-1") == 1.5
    (build,) = [k for k in after if k[0] == "bridge_build_info"]
    assert dict(build[1]) == {"version": bridge.__version__, "python": platform.python_version()}
    assert after[build] == 1
    metrics.calls_active.dec()
    metrics.workers_alive.dec()


@pytest.mark.skipif(metrics.multiprocess_enabled(), reason="test process runs in multiprocess mode")
def test_known_label_values_are_preinitialised() -> None:
    samples = _samples(metrics.render_latest()[0])
    for outcome in metrics.OUTCOMES:
        assert ("bridge_calls_ended_total", frozenset({("outcome", outcome)})) in samples
    for direction in metrics.DIRECTIONS:
        assert ("bridge_frames_total", frozenset({("direction", direction)})) in samples
        assert ("bridge_audio_bytes_total", frozenset({("direction", direction)})) in samples
    for kind in metrics.AUDIO_ERROR_KINDS:
        assert ("bridge_audio_errors_total", frozenset({("kind", kind)})) in samples
    for route, reasons in metrics.REFUSALS.items():
        for reason in reasons:
            assert ("bridge_refused_total", frozenset({("route", route), ("reason", reason)})) in samples


def test_single_process_helpers_are_noops(tmp_path: Path) -> None:
    if metrics.multiprocess_enabled():
        pytest.skip("test process runs in multiprocess mode")
    metrics.mark_worker_dead(os.getpid())  # must not raise nor touch anything


def test_prepare_multiprocess_dir_creates_and_wipes_db_files(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "prom"
    metrics.prepare_multiprocess_dir(str(target))
    assert target.is_dir()
    (target / "counter_123.db").write_bytes(b"x")
    (target / "gauge_livesum_123.db").write_bytes(b"x")
    (target / "README").write_text("not a metric file")
    metrics.prepare_multiprocess_dir(str(target))
    assert sorted(p.name for p in target.iterdir()) == ["README"]


# --------------------------------------------------------------------------------------------------
# Multiprocess mode (real processes sharing PROMETHEUS_MULTIPROC_DIR)

WORKER = textwrap.dedent(
    """
    import os, sys
    from bridge import metrics as m
    assert m.multiprocess_enabled()
    started, active, frames = (int(a) for a in sys.argv[1:4])
    m.calls_started_total.inc(started)
    m.calls_active.inc(active)
    m.workers_alive.inc()
    m.frames_total.labels(direction="to_model").inc(frames)
    m.calls_ended_total.labels(outcome="drain").inc()
    m.response_latency_seconds.observe(0.3)
    m.refused_total.labels(route="answer", reason="at_capacity").inc()
    print(os.getpid())
    """
)

RENDER = textwrap.dedent(
    """
    import sys
    from bridge import metrics as m
    for pid in sys.argv[1:]:
        m.mark_worker_dead(int(pid))
    sys.stdout.buffer.write(m.render_latest()[0])
    """
)

PREPARE = textwrap.dedent(
    """
    import os, sys
    from bridge import metrics as m
    m.calls_started_total.inc(7)
    m.prepare_multiprocess_dir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    m.calls_started_total.inc(1)
    sys.stdout.buffer.write(m.render_latest()[0])
    """
)


def _run(code: str, env: Mapping[str, str], *args: str) -> bytes:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=dict(env),
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@pytest.fixture
def mp_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prom")  # created on import by bridge.metrics
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_multiprocess_sums_across_processes_and_drops_dead_live_gauges(mp_env: dict[str, str]) -> None:
    pid1 = int(_run(WORKER, mp_env, "2", "1", "10"))
    pid2 = int(_run(WORKER, mp_env, "3", "2", "20"))
    assert pid1 != pid2
    files = sorted(p.name for p in Path(mp_env["PROMETHEUS_MULTIPROC_DIR"]).iterdir())
    assert f"gauge_livesum_{pid1}.db" in files and f"counter_{pid2}.db" in files

    merged = _samples(_run(RENDER, mp_env))
    assert _value(merged, "bridge_calls_started_total") == 5
    assert _value(merged, "bridge_calls_active") == 3
    assert _value(merged, "bridge_workers_alive") == 2
    assert _value(merged, "bridge_frames_total", direction="to_model") == 30
    assert _value(merged, "bridge_calls_ended_total", outcome="drain") == 2
    assert _value(merged, "bridge_response_latency_seconds_count") == 2
    assert _value(merged, "bridge_response_latency_seconds_bucket", le="0.3") == 2
    assert _value(merged, "bridge_refused_total", route="answer", reason="at_capacity") == 2
    # One build_info series for the whole service, not one per process.
    (build,) = [k for k in merged if k[0] == "bridge_build_info"]
    assert merged[build] == 1 and "pid" not in dict(build[1])
    # the livesum gauge has one series, no pid label
    assert ("bridge_calls_active", frozenset()) in merged

    after_death = _samples(_run(RENDER, mp_env, str(pid1)))
    assert _value(after_death, "bridge_calls_active") == 2  # pid1's 1 is gone
    assert _value(after_death, "bridge_workers_alive") == 1
    assert _value(after_death, "bridge_calls_started_total") == 5  # counters never go back
    assert _value(after_death, "bridge_frames_total", direction="to_model") == 30
    assert not (Path(mp_env["PROMETHEUS_MULTIPROC_DIR"]) / f"gauge_livesum_{pid1}.db").exists()


def test_prepare_multiprocess_dir_keeps_the_callers_own_live_files(mp_env: dict[str, str]) -> None:
    _run(WORKER, mp_env, "4", "4", "4")  # a previous run's leftovers
    merged = _samples(_run(PREPARE, mp_env))
    # leftovers wiped; the calling process's own counter (7 + 1) survived the wipe
    assert _value(merged, "bridge_calls_started_total") == 8
    assert _value(merged, "bridge_calls_active") == 0
    assert _value(merged, "bridge_frames_total", direction="to_model") == 0


# --------------------------------------------------------------------------------------------------
# promtool lint


def _promtool_check(body: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )


@pytest.mark.skipif(
    not shutil.which(PROMTOOL),
    reason="promtool not installed (apt-get install prometheus provides /usr/bin/promtool; CI installs it)",
)
def test_promtool_check_metrics_is_clean(mp_env: dict[str, str]) -> None:
    _exercise_all()
    single = metrics.render_latest()[0]
    result = _promtool_check(single)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", result

    _run(WORKER, mp_env, "1", "1", "1")
    multi = _run(RENDER, mp_env)
    result = _promtool_check(multi)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", result


@pytest.mark.skipif(not shutil.which(PROMTOOL), reason="promtool not installed")
def test_promtool_would_catch_a_bad_name() -> None:
    """Guard against the lint check above passing vacuously."""
    bad = b"# HELP bridge_latency_ms Latency.\n# TYPE bridge_latency_ms gauge\nbridge_latency_ms 1\n"
    result = _promtool_check(bad)
    assert result.returncode != 0


def test_observability_reference_documents_every_metric_and_its_labels() -> None:
    # The metric reference in docs/observability.md is what operators alert on: a metric added in
    # bridge/metrics.py without a row there (or with different labels) is a silent contract change.
    doc = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    rows: dict[str, str] = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and re.fullmatch(r"`bridge_[a-z_]+`", cells[1]):
            rows[cells[1].strip("`")] = cells[3]
    types = metrics.metric_types()
    assert set(rows) == set(types)
    for metric in metrics.ALL_METRICS:
        name = metric._name if types.get(metric._name) else f"{metric._name}_total"
        documented = tuple(re.findall(r"`([a-z_]+)`", rows[name]))
        assert documented == tuple(metric._labelnames), name
