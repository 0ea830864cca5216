"""G.711 tables and helpers agree with audioop (the reference codec) for every code."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bridge.audio import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_CODES = bytes(range(256))


def test_decode_tables_match_audioop() -> None:
    assert g711.ULAW_TO_LIN.tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.ALAW_TO_LIN.tobytes() == audioop.alaw2lin(ALL_CODES, 2)
    # float tables hold exactly the same integers
    assert np.array_equal(g711.ULAW_TO_FLOAT.astype(np.int32), g711.ULAW_TO_LIN.astype(np.int32))
    assert np.array_equal(g711.ALAW_TO_FLOAT.astype(np.int32), g711.ALAW_TO_LIN.astype(np.int32))


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError):
        g711.ULAW_TO_FLOAT[0] = 1.0
    with pytest.raises(ValueError):
        g711.ALAW_TO_LIN[0] = 1


def test_transcoding_is_decode_then_encode_for_every_code() -> None:
    assert g711.ulaw_to_alaw(ALL_CODES) == audioop.lin2alaw(audioop.ulaw2lin(ALL_CODES, 2), 2)
    assert g711.alaw_to_ulaw(ALL_CODES) == audioop.lin2ulaw(audioop.alaw2lin(ALL_CODES, 2), 2)


def test_transcoding_preserves_level_within_one_step() -> None:
    # μ-law → A-law must land on one of the two A-law levels around the μ-law level.
    ulaw_levels = g711.ULAW_TO_LIN.astype(np.int32)
    via_alaw = g711.ALAW_TO_LIN[np.frombuffer(g711.ulaw_to_alaw(ALL_CODES), np.uint8)].astype(np.int32)
    alaw_levels = np.unique(g711.ALAW_TO_LIN.astype(np.int32))
    above = np.clip(np.searchsorted(alaw_levels, ulaw_levels), 1, len(alaw_levels) - 1)
    gap = alaw_levels[above] - alaw_levels[above - 1]
    assert np.all(np.abs(via_alaw - ulaw_levels) <= gap)


def test_encode_decode_helpers() -> None:
    samples = np.array([0, 1000, -1000, 32767, -32768], dtype=np.int16)
    assert g711.lin_to_ulaw(samples.tobytes()) == audioop.lin2ulaw(samples.tobytes(), 2)
    assert g711.lin_to_alaw(samples.data) == audioop.lin2alaw(samples.tobytes(), 2)
    assert g711.ulaw_to_lin(ALL_CODES) == g711.ULAW_TO_LIN.tobytes()
    assert g711.alaw_to_lin(ALL_CODES) == g711.ALAW_TO_LIN.tobytes()
