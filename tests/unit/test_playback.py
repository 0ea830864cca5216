"""PlaybackTracker: what the caller heard, from mark echoes and the clock. Pure, virtual time."""

from __future__ import annotations

import pytest

from bridge.call.playback import PlaybackTracker


def send(t: PlaybackTracker, item: str, ms: float, now: float) -> str:
    return t.on_sent(item, ms, ms, now)


def test_clock_estimate_runs_at_real_time_and_never_passes_what_was_sent() -> None:
    t = PlaybackTracker()
    send(t, "a", 100, now=0.0)
    send(t, "a", 100, now=0.0)
    assert t.head(0.05) == pytest.approx(50)
    assert t.head(0.15) == pytest.approx(150)
    assert t.head(5.0) == pytest.approx(200)  # clamped: only 200 ms were sent
    assert not t.is_playing(5.0)


def test_echo_confirms_position_and_reanchors_the_clock() -> None:
    t = PlaybackTracker()
    m1 = send(t, "a", 100, 0.0)
    send(t, "a", 100, 0.0)
    # The carrier started late (network): at 0.2 s the first echo says only 100 ms played.
    t.on_echo(m1, now=0.2)
    assert t.head(0.2) == pytest.approx(200)  # the clock estimate was already ahead: kept
    t2 = PlaybackTracker()
    n1 = send(t2, "a", 100, 0.0)
    send(t2, "a", 100, 0.0)
    t2.on_echo(n1, now=0.05)  # echo ahead of the clock estimate: position jumps to it
    assert t2.head(0.05) == pytest.approx(100)
    assert t2.head(0.1) == pytest.approx(150)


def test_marks_echoed_out_of_order_or_twice() -> None:
    t = PlaybackTracker()
    names = [send(t, "a", 100, 0.0) for _ in range(3)]
    assert t.on_echo(names[1], 0.2) is True  # the second overtook the first
    assert t.pending_marks == 1  # the first is implied played: audio plays in order
    assert t.on_echo(names[0], 0.21) is False  # late echo of an implied mark: ignored
    assert t.on_echo(names[1], 0.22) is False  # duplicate
    assert t.stale_echoes == 2
    assert t.head(0.22) >= 200


def test_buffer_ran_dry_then_new_audio_starts_playing_when_sent() -> None:
    t = PlaybackTracker()
    send(t, "a", 100, 0.0)
    # Nothing sent for 2 s: the caller heard "a" and then silence.
    send(t, "b", 100, 2.0)
    assert t.heard_ms("a", 2.0) == pytest.approx(100)
    assert t.heard_ms("b", 2.05) == pytest.approx(50)


def test_speech_before_any_audio_played() -> None:
    t = PlaybackTracker()
    send(t, "a", 100, 0.0)
    cut = t.interrupt(0.0)
    assert cut.item_id == "a"
    assert cut.audio_end_ms == 0
    assert cut.was_playing


def test_item_finished_playing_before_interruption_needs_no_truncate() -> None:
    t = PlaybackTracker()
    m = send(t, "a", 300, 0.0)
    t.on_echo(m, 0.31)
    cut = t.interrupt(0.5)
    assert cut.item_id == "a"
    assert cut.audio_end_ms is None
    assert not cut.was_playing


def test_truncate_is_clamped_to_model_audio_received() -> None:
    t = PlaybackTracker()
    # A resampler may emit slightly more carrier audio than the model sent (rounding): the
    # truncate must never exceed what the server generated, or it is rejected.
    t.on_sent("a", 500.0, 480.0, 0.0)
    cut = t.interrupt(0.49)
    assert cut.audio_end_ms == 480


def test_clear_racing_with_echoes_does_not_count_cleared_audio() -> None:
    t = PlaybackTracker()
    names = [send(t, "a", 100, 0.0) for _ in range(5)]  # 500 ms queued
    t.on_echo(names[0], 0.1)
    cut = t.interrupt(0.15)
    assert cut.audio_end_ms == 150
    # The carrier echoes every pending mark on clear, and a play echo can race the clear.
    for n in names[1:]:
        assert t.on_echo(n, 0.16) is False
    assert t.head(1.0) == pytest.approx(150)  # nothing after the clear was heard
    assert not t.is_playing(1.0)


def test_two_interruptions_in_one_response() -> None:
    t = PlaybackTracker()
    send(t, "a", 1000, 0.0)
    first = t.interrupt(0.3)
    assert (first.item_id, first.audio_end_ms) == ("a", 300)
    # The model's next item plays after the clear; the second interruption cuts it alone.
    send(t, "b", 1000, 0.5)
    second = t.interrupt(0.7)
    assert second.item_id == "b"
    assert second.audio_end_ms == 200
    assert t.item("a") is not None and t.item("a").truncated  # type: ignore[union-attr]


def test_same_item_is_not_truncated_twice() -> None:
    t = PlaybackTracker()
    send(t, "a", 1000, 0.0)
    assert t.interrupt(0.3).audio_end_ms == 300
    assert t.interrupt(0.4).audio_end_ms is None


def test_audio_held_back_by_resampler_counts_as_received() -> None:
    t = PlaybackTracker()
    t.on_received_only("a", 5.0)
    t.on_sent("a", 95.0, 95.0, 0.0)
    item = t.item("a")
    assert item is not None
    assert item.received_ms == pytest.approx(100)
    assert item.sent_ms == pytest.approx(95)


def test_unmarked_chunks_are_marked_together_and_a_clear_leaves_nothing_to_mark() -> None:
    t = PlaybackTracker()
    assert t.on_sent("a", 100, 100, 0.0, mark=False) is None
    assert t.on_sent("a", 100, 100, 0.0, mark=False) is None
    assert t.unmarked_ms == 200 and t.pending_marks == 0
    name = t.mark()
    assert name is not None and t.unmarked_ms == 0 and t.mark() is None  # nothing new to mark
    assert t.on_echo(name, 0.2)
    assert t.head(0.2) == pytest.approx(200) and not t.is_playing(0.2)
    t.on_sent("b", 300, 300, 1.0, mark=False)
    t.interrupt(1.1)  # cleared after 100 ms: the rest was never played, nothing to mark
    assert t.unmarked_ms == 0 and t.mark() is None
