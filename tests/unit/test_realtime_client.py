"""Realtime connection URL and headers (pure parts of bridge/realtime/client.py)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from bridge.config import RealtimeSettings
from bridge.realtime.client import _safe, realtime_headers, realtime_url


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# --- URL ----------------------------------------------------------------------------------


def test_openai_default_url() -> None:
    assert realtime_url("wss://api.openai.com/v1/realtime", "gpt-realtime") == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    )


def test_default_setting_gives_openai_url() -> None:
    s = RealtimeSettings()
    assert realtime_url(s.url, s.model) == "wss://api.openai.com/v1/realtime?model=gpt-realtime"


@pytest.mark.parametrize(
    ("base", "expected_prefix"),
    [
        ("https://api.openai.com/v1/realtime", "wss://api.openai.com/v1/realtime?"),
        ("http://127.0.0.1:8765/v1/realtime", "ws://127.0.0.1:8765/v1/realtime?"),
        ("ws://127.0.0.1:8765/v1/realtime", "ws://127.0.0.1:8765/v1/realtime?"),
    ],
)
def test_http_schemes_map_to_websocket_schemes(base: str, expected_prefix: str) -> None:
    url = realtime_url(base, "gpt-realtime")
    assert url.startswith(expected_prefix)
    assert _query(url) == [("model", "gpt-realtime")]


def test_existing_query_parameters_are_kept() -> None:
    url = realtime_url("wss://gateway.example.com/v1/realtime?region=eu&flag=", "gpt-realtime")
    assert _query(url) == [("region", "eu"), ("flag", ""), ("model", "gpt-realtime")]


def test_existing_model_parameter_is_replaced() -> None:
    url = realtime_url("wss://api.openai.com/v1/realtime?model=old-model&x=1", "gpt-realtime-mini")
    query = _query(url)
    assert ("model", "old-model") not in query
    assert [v for k, v in query if k == "model"] == ["gpt-realtime-mini"]
    assert ("x", "1") in query


def test_model_name_is_encoded() -> None:
    url = realtime_url("wss://api.openai.com/v1/realtime", "my model&x=y")
    assert _query(url) == [("model", "my model&x=y")]


def test_azure_ga_url() -> None:
    url = realtime_url("https://myres.openai.azure.com/openai/v1/realtime", "my-gpt-realtime-deployment")
    assert url == "wss://myres.openai.azure.com/openai/v1/realtime?model=my-gpt-realtime-deployment"
    assert "api-version" not in url


def test_safe_url_drops_query() -> None:
    url = realtime_url("wss://myres.openai.azure.com/openai/v1/realtime?api-key=SECRETKEY", "dep")
    assert _safe(url) == "wss://myres.openai.azure.com/openai/v1/realtime"


# --- headers ------------------------------------------------------------------------------


def _names(headers: list[tuple[bytes, bytes]]) -> list[str]:
    return [name.decode().lower() for name, _ in headers]


def test_bearer_authorization_only_by_default() -> None:
    headers = realtime_headers(RealtimeSettings(), "sk-test-123")
    assert headers == [(b"Authorization", b"Bearer sk-test-123")]


def test_organization_and_project() -> None:
    settings = RealtimeSettings(organization="org-abc", project="proj_xyz")
    headers = realtime_headers(settings, "sk-test-123")
    assert (b"OpenAI-Organization", b"org-abc") in headers
    assert (b"OpenAI-Project", b"proj_xyz") in headers
    assert (b"Authorization", b"Bearer sk-test-123") in headers
    assert len(headers) == 3


def test_extra_headers_are_sent() -> None:
    settings = RealtimeSettings(extra_headers={"X-Gateway-Tenant": "acme"})
    headers = realtime_headers(settings, "sk-test-123")
    assert (b"X-Gateway-Tenant", b"acme") in headers


def test_azure_api_key_without_openai_key_sends_no_authorization() -> None:
    settings = RealtimeSettings(
        url="wss://myres.openai.azure.com/openai/v1/realtime", extra_headers={"api-key": "azure-key-1"}
    )
    headers = realtime_headers(settings, None)
    assert headers == [(b"api-key", b"azure-key-1")]
    assert "authorization" not in _names(headers)


def test_empty_key_sends_no_authorization() -> None:
    assert realtime_headers(RealtimeSettings(), "") == []


@pytest.mark.parametrize("name", ["OpenAI-Beta", "openai-beta", "OPENAI-BETA"])
def test_beta_header_from_extra_headers_is_dropped(name: str) -> None:
    settings = RealtimeSettings(extra_headers={name: "realtime=v1", "X-Keep": "1"})
    headers = realtime_headers(settings, "sk-test-123")
    assert "openai-beta" not in _names(headers)
    assert (b"X-Keep", b"1") in headers


def test_never_a_beta_header() -> None:
    settings = RealtimeSettings(organization="org", project="proj", extra_headers={"a": "b"})
    for key in ("sk-x", None):
        headers = realtime_headers(settings, key)
        assert "openai-beta" not in _names(headers)
        assert all(b"realtime=v1" not in value for _, value in headers)


def test_headers_are_bytes_pairs() -> None:
    settings = RealtimeSettings(organization="org", extra_headers={"X-Name": "välue"})
    for name, value in realtime_headers(settings, "sk-test"):
        assert isinstance(name, bytes)
        assert isinstance(value, bytes)
