"""The ``bridge`` command line: --version, --config anywhere, check-config refusing what serve refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

import bridge
from bridge import cli
from bridge.carrier.twilio_signature import request_url, signature_valid
from bridge.config import Secrets, Settings

REPO = Path(__file__).resolve().parents[2]
TOKEN = "0123456789abcdef0123456789abcdef"
SECRET_NAMES = {"OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "CREDENTIALS_DIRECTORY"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BRIDGE_") or name in SECRET_NAMES:
            monkeypatch.delenv(name)


def _clean_subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") and k not in SECRET_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bridge {bridge.__version__}"
    assert bridge.__version__ and bridge.__version__ != "0+unknown"  # read from the package metadata


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{path}", "check-config"],
        ["check-config", "--config", "{path}"],
        ["check-config", "--config={path}"],
    ],
)
def test_config_before_or_after_the_subcommand(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.toml"
    path.write_text('[realtime]\nmodel = "gpt-realtime-mini"\n[twilio]\nvalidate_signature = false\n')
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000000")
    assert cli.main([a.replace("{path}", str(path)) for a in argv]) == 0
    assert json.loads(capsys.readouterr().out)["realtime"]["model"] == "gpt-realtime-mini"


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{path}", "call", "--url", "ws://127.0.0.1:8080/media?x=1"],
        ["call", "--config", "{path}", "--url", "ws://127.0.0.1:8080/media?x=1"],
        ["call", "--url", "ws://127.0.0.1:8080/media?x=1", "--config={path}"],
    ],
)
def test_call_takes_config_anywhere_and_signs_its_upgrade(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.toml"
    path.write_text('[server]\npublic_url = "https://bridge.example.com"\n')
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    seen: list[list[str]] = []
    monkeypatch.setattr("bridge.testing.caller.main", lambda args: seen.append(list(args)) or 0)
    assert cli.main([a.replace("{path}", str(path)) for a in argv]) == 0
    (args,) = seen
    assert "--config" not in " ".join(args)
    header = args[args.index("--header") + 1]
    expected = RequestValidator(TOKEN).compute_signature("wss://bridge.example.com/media?x=1", {})
    assert header == f"X-Twilio-Signature: {expected}"


def test_upgrade_signature_is_what_the_front_door_expects() -> None:
    secrets = Secrets(None, SecretStr(TOKEN), None)
    url = "ws://127.0.0.1:8080/media?tenant=acme"
    for public_url in (None, "https://bridge.example.com"):
        settings = Settings(server={"public_url": public_url})  # type: ignore[arg-type]
        signature = cli.upgrade_signature(settings, secrets, url)
        # The URL the front door rebuilds for this request (the caller sends Host: 127.0.0.1:8080).
        rebuilt = request_url(public_url, {"host": "127.0.0.1:8080"}, "/media?tenant=acme", websocket=True)
        assert signature_valid(TOKEN, rebuilt, [], signature)
    unsigned = Settings(twilio={"validate_signature": False})  # type: ignore[arg-type]
    assert cli.upgrade_signature(unsigned, secrets, url) is None
    assert cli.upgrade_signature(Settings(), Secrets(None, None, None), url) is None


def test_serve_and_check_config_refuse_a_public_unsigned_port_with_the_same_words(tmp_path: Path) -> None:
    path = tmp_path / "public.toml"
    path.write_text(
        '[server]\nhost = "0.0.0.0"\nport = 0\n[admin]\nport = 0\n[twilio]\nvalidate_signature = false\n'
        f'[records]\npath = "{tmp_path / "calls.sqlite"}"\n[log]\nformat = "json"\n'
    )
    env = _clean_subprocess_env(OPENAI_API_KEY="sk-test-0000000000000")

    def bridge_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
        )

    serve = bridge_cmd("serve", "--config", str(path))
    assert serve.returncode == 2, serve.stderr
    logged = [json.loads(line) for line in serve.stderr.splitlines() if line.startswith("{")]
    serve_problems = [e["error"] for e in logged if e["event"] == "config_error"]

    check = bridge_cmd("--config", str(path), "check-config")
    assert check.returncode == 2
    header, *check_problems = check.stderr.strip().splitlines()
    assert header == "bridge: refusing to start (1 problem(s)):"
    assert [p.strip() for p in check_problems] == serve_problems
    (problem,) = serve_problems
    # Why, and how to fix it.
    assert problem.startswith("server.host: value '0.0.0.0' is not allowed with twilio.validate_signature = false")
    assert "server.insecure_allow_unauthenticated_calls = true" in problem and "TWILIO_AUTH_TOKEN" in problem

    # Saying so explicitly starts (here: check-config passes and warns).
    opt_in = "port = 0\ninsecure_allow_unauthenticated_calls = true\n[admin]"
    path.write_text(path.read_text().replace("port = 0\n[admin]", opt_in, 1))
    allowed = bridge_cmd("check-config", "--config", str(path))
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stderr.startswith("bridge: warning: server.insecure_allow_unauthenticated_calls: value True")


def test_check_config_refuses_a_missing_openai_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "f.toml"
    path.write_text("[twilio]\nvalidate_signature = false\n")
    assert cli.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "realtime.url: value 'wss://api.openai.com/v1/realtime' needs an API key" in err
    simulator = tmp_path / "sim.toml"
    simulator.write_text('[twilio]\nvalidate_signature = false\n[realtime]\nurl = "ws://127.0.0.1:8765/v1/realtime"\n')
    assert cli.main(["check-config", "--config", str(simulator)]) == 0
