"""Configuration files and ``BRIDGE_*`` overrides against anything an operator may write.

Contract: ``load_settings`` returns ``Settings`` or raises ``ConfigError`` (whose message names the
problem), whatever the file holds (any bytes, any TOML, any keys and values) and whatever the
environment holds; a configuration that loads once loads the same again. The session lookup's
answer (``parse_lookup_answer``) is a ``SessionLookupAnswer`` or a ``ValueError``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from bridge.config import ConfigError, SessionLookupAnswer, Settings, load_settings, parse_lookup_answer
from bridge.httpmsg import Failure, HttpResult
from tests.fuzz.strategies import json_values

_DIR = Path(tempfile.mkdtemp(prefix="bridge-fuzz-config-"))
_PATH = _DIR / "bridge.toml"


# --- a small TOML writer (the standard library only reads TOML) --------------------------------


def _toml_key(key: str) -> str:
    return _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for c in text:
        o = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{_toml_key(k)} = {toml_value(v)}\n" for k, v in data.items())


# --- configurations shaped like the schema ------------------------------------------------------

# Surrogates cannot be written to a UTF-8 file (and TOML cannot hold them).
toml_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | toml_text
    | st.sampled_from(
        [
            0,
            1,
            2,
            5,
            8080,
            0.5,
            5.0,
            3600.0,
            "pcmu",
            "pcm16",
            "127.0.0.1",
            "0.0.0.0",
            "info",
            "json",
            "wss://api.example/v1/realtime",
            "https://x.example/h",
            "gpt-realtime",
            "server_vad",
            "local",
            "semantic_vad",
            "default",
            "/tmp/x.sqlite",
            "+1555*",
            "alloy",
            "auto",
        ]
    )
)
# Top-level keys pydantic-settings would take as options of its own, not as configuration.
SPECIAL_KEYS = ["_env_prefix", "_env_file", "_secrets_dir", "_cli_parse_args", "_case_sensitive", "_build_sources"]


def _models(annotation: Any) -> list[type[BaseModel]]:
    if get_origin(annotation) is Annotated:
        return _models(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType, list, dict):
        return [m for arg in get_args(annotation) for m in _models(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def shaped(model: type[BaseModel], depth: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """A table with some of ``model``'s keys (values of the right kind or any other) and,
    sometimes, a key it does not have."""
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, info in model.model_fields.items():
        value: st.SearchStrategy[Any] = toml_scalars | st.lists(toml_scalars, max_size=3)
        subs = _models(info.annotation)
        if subs and depth > 0:
            sub = st.sampled_from(subs).flatmap(lambda m: shaped(m, depth - 1))
            value = value | sub | st.lists(sub, max_size=2) | st.dictionaries(toml_text, sub, max_size=2)
        optional[info.alias or name] = value
    table = st.fixed_dictionaries({}, optional=optional)
    extra = st.dictionaries(toml_text, toml_scalars, max_size=1)
    return st.tuples(table, extra, st.booleans()).map(lambda t: {**t[0], **t[1]} if t[2] else t[0])


settings_tables = st.tuples(
    shaped(Settings), st.dictionaries(st.sampled_from(SPECIAL_KEYS), toml_scalars, max_size=1), st.integers(0, 4)
).map(lambda t: {**t[0], **t[1]} if t[2] == 0 else t[0])


@contextmanager
def clean_env(extra: dict[str, str] | None = None) -> Iterator[None]:
    """The process environment without BRIDGE_* (the developer's shell must not leak in), plus ``extra``."""
    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name.startswith("BRIDGE_"):
                del os.environ[name]
        os.environ.update(extra or {})
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _load(content: str | bytes) -> Settings | ConfigError:
    if isinstance(content, str):
        _PATH.write_text(content, encoding="utf-8")
    else:
        _PATH.write_bytes(content)
    try:
        return load_settings(_PATH)
    except ConfigError as exc:
        assert str(exc), "a ConfigError must say what is wrong"
        return exc


# --- the properties ---------------------------------------------------------------------------


@given(table=settings_tables)
def test_any_configuration_loads_or_is_refused_and_loads_the_same_again(table: dict[str, Any]) -> None:
    with clean_env():
        first = _load(toml_document(table))
        if isinstance(first, ConfigError):
            assert str(_load(toml_document(table))) == str(first)  # and says the same thing again
            return
        again = _load(toml_document(table))
    assert isinstance(again, Settings)
    assert again.model_dump() == first.model_dump()


@given(content=st.text(max_size=300) | st.binary(max_size=300))
def test_any_file_content_loads_or_is_refused(content: str | bytes) -> None:
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")  # lone surrogates too: not UTF-8
    with clean_env():
        assert isinstance(_load(content), Settings | ConfigError)


ENV_NAMES = [
    "BRIDGE_SERVER", "BRIDGE_SERVER__PORT", "BRIDGE_SERVER__HOST", "BRIDGE_SERVER__OVERFLOW",
    "BRIDGE_SERVER__OVERFLOW__MESSAGE", "BRIDGE_REALTIME", "BRIDGE_REALTIME__URL", "BRIDGE_REALTIME__TURN_DETECTION",
    "BRIDGE_REALTIME__EXTRA_HEADERS", "BRIDGE_REALTIME__TOOLS", "BRIDGE_PROFILES", "BRIDGE_ROUTES", "BRIDGE_CARRIERS",
    "BRIDGE_CARRIERS__TELNYX", "BRIDGE_CARRIERS__TWILIO__VERIFY", "BRIDGE_TWILIO__VALIDATE_SIGNATURE",
    "BRIDGE_LOG__LEVEL", "BRIDGE_RECORDS__UPDATE_INTERVAL_S", "BRIDGE_PRICING", "BRIDGE_WEBHOOKS",
    "BRIDGE_NOT_A_SECTION", "BRIDGE_SERVER__NOT_A_KEY", "BRIDGE__", "BRIDGE_SERVER____PORT",
]  # fmt: skip
env_values = (
    st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
    | json_values().map(lambda v: json.dumps(v))
    | st.sampled_from(["{", "[1", "{}", "[]", "null", "true", '{"port": "x"}', '[{"to": 5}]', "8080", ""])
)


@given(env=st.dictionaries(st.sampled_from(ENV_NAMES), env_values, max_size=3), table=settings_tables)
def test_environment_overrides_load_or_are_refused(env: dict[str, str], table: dict[str, Any]) -> None:
    with clean_env(env):
        assert isinstance(_load(toml_document(table)), Settings | ConfigError)
        try:
            loaded: object = load_settings(None)
        except ConfigError as exc:
            loaded = exc
        assert isinstance(loaded, Settings | ConfigError)


# --- the session lookup's answer ----------------------------------------------------------------

lookup_keys = st.sampled_from(
    [
        "instructions",
        "voice",
        "greeting",
        "parameters",
        "tools",
        "name",
        "url",
        "description",
        "parameters",
        "timeout_s",
        "headers",
    ]
)


@given(
    status=st.none() | st.integers(100, 599),
    body=st.binary(max_size=200)
    | st.dictionaries(lookup_keys, json_values(lookup_keys)).map(lambda v: json.dumps(v).encode()),
    failure=st.none() | st.sampled_from(list(Failure)),
)
def test_the_session_lookup_answer_is_used_or_refused_with_value_error(
    status: int | None, body: bytes, failure: Failure | None
) -> None:
    result = HttpResult(0.1, status=status, body=body, failure=failure, detail="x" if status is None else "")
    try:
        answer = parse_lookup_answer(result)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(answer, SessionLookupAnswer)
    assert status is not None and 200 <= status < 300
