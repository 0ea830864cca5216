"""Payload checks: the base64 test that never decodes agrees with strict decoding, sizes, samples."""

from __future__ import annotations

import base64
import binascii
import itertools

import numpy as np
import pytest

from bridge.audio import L16_24K, ULAW_8K, AudioError, decoded_len, is_base64
from bridge.audio.payload import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_APPEND_AUDIO_BYTES,
    MAX_EVENT_BYTES,
    PayloadCheck,
)
from bridge.realtime.events import append_audio


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def strictly_decodable(text: str) -> bool:
    """The reference: Python's strict decoder, minus its tolerance of surplus padding."""
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except ValueError:
        return False
    return base64.b64encode(data).decode("ascii") == text or (
        # same bytes, other (non-zero) trailing bits: still canonical length and padding
        len(text) % 4 == 0 and len(data) == decoded_len(text)
    )


def small_strings() -> list[str]:
    """Every string of up to 9 characters over an alphabet that exercises each rule: a base64
    character, padding, whitespace, a non-ASCII character."""
    alphabet = "A=\né"
    return ["".join(t) for n in range(10) for t in itertools.product(alphabet, repeat=n)]


def mutated_frames(count: int = 3000) -> list[str]:
    """Real-looking frames with one random edit each: a character, a cut, an insertion, padding."""
    rng = np.random.default_rng(11)
    out = []
    chars = "AZaz09+/=-_ \n\t.!é\x00"
    for _ in range(count):
        text = b64(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes())
        i = int(rng.integers(0, len(text) + 1))
        c = chars[int(rng.integers(0, len(chars)))]
        edit = int(rng.integers(0, 5))
        if edit == 0:
            text = text[:i] + c + text[i + 1 :]
        elif edit == 1:
            text = text[:i]
        elif edit == 2:
            text = text[:i] + c + text[i:]
        elif edit == 3:
            text += "=" * int(rng.integers(1, 4))
        out.append(text)  # edit 4: unchanged (valid)
    return out


def test_is_base64_agrees_with_strict_decoding_on_every_small_string() -> None:
    strings = small_strings()
    assert len(strings) == sum(4**n for n in range(10))
    disagree = [s for s in strings if is_base64(s) != strictly_decodable(s)]
    assert disagree == []


def test_is_base64_agrees_with_strict_decoding_on_mutated_frames() -> None:
    frames = mutated_frames()
    verdicts = [is_base64(s) for s in frames]
    assert 0.2 < np.mean(verdicts) < 0.8  # both kinds well represented
    assert verdicts == [strictly_decodable(s) for s in frames]


@pytest.mark.parametrize("text", ["AAAA====", "AAA===", "Zg===", "=Zg=", "Zg==Zg==", "Zg", "Zm9v\n", "Zm9v YmFy"])
def test_is_base64_rejects_what_a_strict_decoder_would(text: str) -> None:
    assert not is_base64(text)


@pytest.mark.parametrize("size", range(0, 40))
def test_decoded_len_matches_decoding(size: int) -> None:
    data = bytes(range(size))
    padded = b64(data)
    assert decoded_len(padded) == len(data)
    assert decoded_len(padded.rstrip("=")) == len(data)  # unpadded form too


def test_forward_and_decode_accept_and_reject_the_same_payloads_with_the_same_kind() -> None:
    # The passthrough (forward: never decodes) and the converters that decode must agree, or a
    # payload would be valid for one call and not for another.
    for fmt in (ULAW_8K, L16_24K):
        check = PayloadCheck(fmt, max_bytes=30)
        for payload in [*mutated_frames(1500), "", "A" * 44, "AAAA" * 11, b64(bytes(30)), b64(bytes(31))]:
            outcomes = []
            for fn in (check.forward, check.decode):
                try:
                    fn(payload)
                    outcomes.append("ok")
                except AudioError as exc:
                    outcomes.append(exc.kind)
            assert outcomes[0] == outcomes[1], (fmt.id, payload, outcomes)


def test_forward_returns_the_very_same_string() -> None:
    payload = b64(bytes(range(160)))
    assert PayloadCheck(ULAW_8K, 1000).forward(payload) is payload


def test_whole_samples_judged_from_the_length() -> None:
    check = PayloadCheck(L16_24K, 1000)
    for n in range(1, 12):
        payload = b64(bytes(n))
        if n % 2:
            for fn in (check.forward, check.decode):
                with pytest.raises(AudioError) as info:
                    fn(payload)
                assert info.value.kind == "odd_length"
        else:
            assert check.forward(payload) is payload
            assert check.decode(payload) == bytes(n)
    # G.711 has one byte per sample: any length is whole
    assert PayloadCheck(ULAW_8K, 1000).forward(b64(b"\x01")) == "AQ=="


def test_size_limit_is_exact_and_checked_before_the_characters() -> None:
    check = PayloadCheck(ULAW_8K, 160)
    assert check.decode(b64(bytes(160))) == bytes(160)  # exactly at the limit is fine
    for fn in (check.forward, check.decode):
        with pytest.raises(AudioError) as info:
            fn(b64(bytes(161)))
        assert info.value.kind == "too_large"
        with pytest.raises(AudioError) as info:
            fn("!" * 400)  # would be invalid base64 too; size wins, nothing looked at
        assert info.value.kind == "too_large"


def test_non_strings_and_empty_payloads() -> None:
    check = PayloadCheck(ULAW_8K, 1000)
    for fn in (check.forward, check.decode):
        for payload in [None, 123, b"AAAA", ["AAAA"]]:
            with pytest.raises(AudioError) as info:
                fn(payload)  # type: ignore[arg-type]
            assert info.value.kind == "base64"
        with pytest.raises(AudioError) as info:
            fn("")
        assert info.value.kind == "empty"
    with pytest.raises(ValueError):
        PayloadCheck(ULAW_8K, 0)


def test_the_largest_append_fits_the_api_cap_and_one_byte_more_would_not() -> None:
    # https://platform.openai.com/docs/api-reference/realtime-client-events/input_audio_buffer/append
    assert MAX_EVENT_BYTES == 15 * 2**20
    largest = len(append_audio("A" * (4 * -(-MAX_APPEND_AUDIO_BYTES // 3))))
    assert largest <= MAX_EVENT_BYTES
    assert MAX_EVENT_BYTES - largest < 8192  # and the limit is not needlessly low
    assert DEFAULT_MAX_PAYLOAD_BYTES * 6 * 4 // 3 < MAX_EVENT_BYTES // 4  # the default is far below
