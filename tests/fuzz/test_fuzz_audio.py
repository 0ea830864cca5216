"""Audio payload checks and converters against any string a carrier or the model may send.

Contract (bridge/audio/payload.py, convert.py): a payload is accepted exactly when it is canonical
base64 of a whole number of samples within the size cap, and refused with ``AudioError`` (never
anything else) otherwise; what a converter returns is canonical base64 of whole samples of its
output format, so nothing invalid goes upstream or to the phone.
"""

from __future__ import annotations

import base64
import binascii

from hypothesis import given
from hypothesis import strategies as st

from bridge.audio import AudioError, SessionFormat, decoded_len, make_converter
from bridge.audio.formats import CARRIER_FORMATS, AudioFormat
from bridge.audio.payload import PayloadCheck, is_base64

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
base64ish = (
    st.binary(max_size=700).map(lambda b: base64.b64encode(b).decode("ascii"))
    | st.text(alphabet=B64 + "=", max_size=64)
    | st.text(alphabet=B64 + "=-_ \n\r\t.", max_size=64)
    | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode("ascii") + "=")
    | st.binary(min_size=1, max_size=60).map(lambda b: base64.b64encode(b).decode("ascii").rstrip("="))
    | st.text(max_size=40)
)
FORMATS = list(CARRIER_FORMATS)
SMALL_CAP = 600  # bytes: small enough that generated payloads cross it


def canonical(text: str) -> bool:
    """The reference definition: strict decoding that re-encodes to the very same text."""
    try:
        return base64.b64encode(base64.b64decode(text, validate=True)).decode("ascii") == text
    except (binascii.Error, ValueError):
        return False


@given(text=base64ish)
def test_is_base64_is_exactly_canonical_base64(text: str) -> None:
    assert is_base64(text) == canonical(text)


@given(text=base64ish, fmt=st.sampled_from(FORMATS))
def test_forward_and_decode_accept_exactly_valid_payloads(text: str, fmt: AudioFormat) -> None:
    check = PayloadCheck(fmt, SMALL_CAP)
    valid = (
        canonical(text)
        and 0 < len(base64.b64decode(text)) <= SMALL_CAP
        and len(base64.b64decode(text)) % fmt.sample_width == 0
    )
    for method in (check.forward, check.decode):
        try:
            out = method(text)
        except AudioError as exc:
            assert exc.kind in ("base64", "empty", "too_large", "odd_length")
            assert not valid, f"{method.__name__} refused a valid payload: {exc}"
            continue
        assert valid, f"{method.__name__} accepted {text!r}"
        assert out == (text if method == check.forward else base64.b64decode(text))
    if valid:
        assert decoded_len(text) == len(base64.b64decode(text))


@given(
    carrier=st.sampled_from(FORMATS),
    session=st.sampled_from(list(SessionFormat)),
    payloads=st.lists(base64ish, max_size=6),
    direction=st.sampled_from(["to_session", "to_carrier"]),
)
def test_converters_refuse_with_audio_error_and_emit_only_valid_audio(
    carrier: AudioFormat, session: SessionFormat, payloads: list[str], direction: str
) -> None:
    converter = make_converter(carrier, session, max_payload_bytes=SMALL_CAP)
    src, dst = (carrier, session.audio) if direction == "to_session" else (session.audio, carrier)
    convert = getattr(converter, direction)
    for text in payloads:
        valid = canonical(text) and 0 < len(base64.b64decode(text)) <= SMALL_CAP
        valid = valid and len(base64.b64decode(text)) % src.sample_width == 0
        try:
            out = convert(text)
        except AudioError:
            assert not valid
            continue
        assert valid
        assert isinstance(out, str)
        if out:  # "" is a decimator holding samples back for the next payload
            assert is_base64(out)
            assert len(base64.b64decode(out)) % dst.sample_width == 0
        if converter.passthrough:
            assert out == text  # the passthrough is the very string
        if direction == "to_carrier":
            converter.reset_to_carrier()
