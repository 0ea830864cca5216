"""Configuration: pydantic models, loaded from TOML with ``BRIDGE_<SECTION>__<KEY>`` overrides.

Order of precedence (highest first): environment variables, the TOML file, the defaults here.
Every model forbids unknown keys, so a typo in the file is an error rather than a silent default.
Secrets (the OpenAI API key, the Twilio auth token, the admin token) never come from the command
line: they are read from the environment or from files (systemd credentials) by
:func:`load_secrets`, kept as ``SecretStr`` and masked whenever the configuration is printed.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from bridge.accounting.pricing import PricingConfig
from bridge.carrier import registry
from bridge.carrier.common import CarrierSettings
from bridge.carrier.exotel import ExotelSettings
from bridge.carrier.plivo import PlivoSettings
from bridge.carrier.registry import TwilioSettings as TwilioCarrierSettings
from bridge.carrier.signalwire import SignalWireSettings
from bridge.carrier.telnyx import TelnyxSettings
from bridge.carrier.vonage import VonageSettings
from bridge.httpmsg import HttpResult
from bridge.toolspec import TOOL_NAME, McpServer, SecretRef, ToolChoice, WebhookTool, check_unique_names, secret_refs

AudioFormatName = Literal["pcmu", "pcma", "pcm16"]
Voice = str  # the API also accepts {"id": "voice_..."}; names are checked by the server

_STRICT = ConfigDict(extra="forbid", validate_default=True)

# Upper bounds that catch unit mistakes (someone writing seconds into a *_ms key) without
# getting in the way of any sane tuning.
_MAX_PADDING_MS = 5_000
_MAX_SILENCE_MS = 10_000
_MAX_IDLE_TIMEOUT_MS = 600_000


class ServerVad(BaseModel):
    """OpenAI's volume-based turn detection (https://platform.openai.com/docs/guides/realtime-vad)."""

    model_config = _STRICT
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=_MAX_PADDING_MS)
    silence_duration_ms: int = Field(500, ge=0, le=_MAX_SILENCE_MS)
    idle_timeout_ms: int | None = Field(None, ge=1_000, le=_MAX_IDLE_TIMEOUT_MS)
    create_response: bool = True
    interrupt_response: bool = True


class SemanticVad(BaseModel):
    """OpenAI's word-based end-of-turn model (https://platform.openai.com/docs/guides/realtime-vad)."""

    model_config = _STRICT
    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


class LocalVad(BaseModel):
    """``turn_detection = none`` on the wire; the bridge detects speech itself.

    Energy with hysteresis: speech starts when the level stays above ``start_dbfs`` for
    ``start_ms``; it ends after ``end_silence_ms`` below ``stop_dbfs``. At the end of speech the
    bridge commits the buffer and asks for a response; at the start of speech during playback
    it runs the barge-in path.
    """

    model_config = _STRICT
    type: Literal["none"] = "none"
    start_dbfs: float = Field(-35.0, ge=-90.0, le=0.0)
    stop_dbfs: float = Field(-45.0, ge=-90.0, le=0.0)
    start_ms: int = Field(60, ge=20, le=2_000)
    end_silence_ms: int = Field(500, ge=100, le=_MAX_SILENCE_MS)
    create_response: bool = True

    @model_validator(mode="after")
    def _hysteresis(self) -> LocalVad:
        if self.stop_dbfs > self.start_dbfs:
            raise ValueError(
                f"stop_dbfs ({self.stop_dbfs}) must not be above start_dbfs ({self.start_dbfs}): "
                "the hysteresis would be inverted"
            )
        return self


TurnDetection = Annotated[ServerVad | SemanticVad | LocalVad, Field(discriminator="type")]


class Transcription(BaseModel):
    model_config = _STRICT
    model: str = "gpt-4o-mini-transcribe"
    language: str | None = None
    prompt: str | None = None


NoiseReduction = Literal["near_field", "far_field"]


class SessionSettings(BaseModel):
    """What a call's Realtime session looks like; ``[realtime]`` holds the defaults."""

    model_config = _STRICT
    model: str = "gpt-realtime"
    voice: Voice = "marin"
    instructions: str = (
        "You are a helpful, concise phone assistant. Speak naturally and keep answers short."
    )
    audio_format: AudioFormatName = "pcmu"
    turn_detection: TurnDetection = Field(default_factory=lambda: ServerVad())
    greeting: str | None = None
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    dtmf_response: bool = True
    tools: list[WebhookTool] = Field(default_factory=list)
    mcp_servers: list[McpServer] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    end_call_tool: bool = False
    transfer_targets: dict[str, str] = Field(default_factory=dict)

    @field_validator("transfer_targets")
    @classmethod
    def _targets(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_transfer_targets(v)

    @model_validator(mode="after")
    def _unique_tools(self) -> SessionSettings:
        check_unique_names(self.tools, self.mcp_servers)
        return self


def _check_transfer_targets(targets: dict[str, str]) -> dict[str, str]:
    for name, target in targets.items():
        if not TOOL_NAME.match(name):
            raise ValueError(f"target name {name!r} must match {TOOL_NAME.pattern}")
        if not re.fullmatch(r"\+[1-9][0-9]{6,14}|sips?:[^\s<>&]+|client:[A-Za-z0-9_.-]+", target):
            raise ValueError(
                f"target {name!r} = {target!r} must be an E.164 number (+15551230000), a sip: URI or a client: name"
            )
    return targets


class Profile(BaseModel):
    """A named set of session settings; every key is optional and overrides ``[realtime]``."""

    model_config = _STRICT
    model: str | None = None
    voice: Voice | None = None
    instructions: str | None = None
    audio_format: AudioFormatName | None = None
    turn_detection: TurnDetection | None = None
    greeting: str | None = None
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    dtmf_response: bool | None = None
    # A profile's list replaces the default's (it does not add to it).
    tools: list[WebhookTool] | None = None
    mcp_servers: list[McpServer] | None = None
    tool_choice: ToolChoice | None = None
    end_call_tool: bool | None = None
    transfer_targets: dict[str, str] | None = None

    @field_validator("transfer_targets")
    @classmethod
    def _targets(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return None if v is None else _check_transfer_targets(v)

    @model_validator(mode="after")
    def _unique_tools(self) -> Profile:
        check_unique_names(self.tools or [], self.mcp_servers or [])
        return self


class Route(BaseModel):
    """Pick a profile from the voice webhook's To/From (shell-style patterns, e.g. ``+44*``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    to: str | None = None
    from_: str | None = Field(None, alias="from")
    profile: str

    @model_validator(mode="after")
    def _needs_a_pattern(self) -> Route:
        if self.to is None and self.from_ is None:
            raise ValueError("a route needs 'to' or 'from'")
        return self


class RealtimeSettings(SessionSettings):
    url: str = "wss://api.openai.com/v1/realtime"
    organization: str | None = None
    project: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    api_key_file: Path | None = None
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024 * 1024)
    ping_interval_s: float = Field(15.0, gt=0)
    ping_timeout_s: float = Field(20.0, gt=0)  # an unanswered ping means the session is lost
    # A lost model session is replaced within this long (retries with backoff), or the call ends.
    reconnect_timeout_s: float = Field(5.0, gt=0, le=120)
    # A session is replaced (at a quiet moment) once it is this old: OpenAI ends them at 60 min.
    session_handover_s: float = Field(3300.0, gt=0)
    # Caller audio goes up in appends of at least this many ms (0: each carrier frame as it comes).
    # Fewer, larger messages cost less CPU; each ms is latency the server's VAD reacts later.
    append_interval_ms: int = Field(0, ge=0, le=200)

    @field_validator("url")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        if not v.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError("must start with wss://, ws://, https:// or http://")
        return v


# Calls one worker (one CPU core) carries while its p99 added latency stays near 2 ms: flat up to
# 75 calls in every run of BENCHMARKS.md "One worker under load", 100 in only one run of three.
DEFAULT_MAX_CALLS_PER_WORKER = 75
DEFAULT_OVERFLOW_MESSAGE = "Sorry, all our lines are busy right now. Please call again in a few minutes."


class OverflowSettings(BaseModel):
    """What ``/twiml`` answers when every worker is full: ``message`` spoken then hang up
    (the default), or ``redirect_url``, whose TwiML Twilio fetches instead (another number,
    a queue, a voicemail)."""

    model_config = _STRICT
    message: str | None = Field(None, min_length=1, max_length=4096)
    redirect_url: str | None = None

    @field_validator("redirect_url")
    @classmethod
    def _absolute_http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("must be an absolute http(s) URL that answers with TwiML")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> OverflowSettings:
        if self.message is not None and self.redirect_url is not None:
            raise ValueError("set message or redirect_url, not both")
        return self


class ServerSettings(BaseModel):
    model_config = _STRICT
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None
    workers: int = Field(0, ge=0, le=256)  # 0: one per CPU
    drain_timeout_s: float = Field(300.0, ge=0)
    max_call_duration_s: float = Field(4 * 3600.0, gt=0)  # a business limit: sessions are handed over
    max_calls_per_worker: int = Field(DEFAULT_MAX_CALLS_PER_WORKER, ge=1, le=10_000)
    overflow: OverflowSettings = Field(default_factory=lambda: OverflowSettings())
    max_message_bytes: int = Field(256 * 1024, ge=4096)
    # A request head (and a webhook's body) must arrive within this time and size; connections
    # still in that phase are capped per worker, so slow or idle clients cannot pile up.
    head_timeout_s: float = Field(5.0, gt=0, le=60)
    max_head_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    max_pending_connections: int = Field(64, ge=1, le=100_000)
    # Only for a public address without signature checking: naming the risk is the opt-in.
    insecure_allow_unauthenticated_calls: bool = False
    ping_interval_s: float = Field(15.0, gt=0)
    ping_timeout_s: float = Field(20.0, gt=0)
    idle_timeout_s: float = Field(30.0, gt=0)  # no carrier message for this long ends the call
    metrics_dir: Path | None = None
    # How a call's WebSockets (carrier and model) are read and written: "direct" (the call's own
    # tasks, bridge.websocket.direct; about half the CPU per call, BENCHMARKS.md) or
    # "trio-websocket" (a reader task and a channel per socket, as before).
    websocket: Literal["direct", "trio-websocket"] = "direct"
    # A playback mark after every chunk of model audio sent to the caller (0), or once this many ms
    # were sent since the last one, and at the end of each answer's audio.
    mark_interval_ms: int = Field(0, ge=0, le=2000)

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://", "wss://", "ws://")):
            raise ValueError("must be an absolute URL such as https://bridge.example.com")
        return v.rstrip("/") if v else v


class TwilioSettings(BaseModel):
    model_config = _STRICT
    # On by default: an unsigned webhook or upgrade could open Realtime sessions billed to you.
    validate_signature: bool = True
    auth_token_file: Path | None = None
    # The REST API (transfer_call redirects the live call): regional edges and tests change the base.
    api_base_url: str = "https://api.twilio.com"
    account_sid: str | None = None  # default: the account of the call's start message
    # An API key instead of the auth token for REST calls; its secret comes from TWILIO_API_KEY_SECRET,
    # twilio.api_key_secret_file or the credential twilio_api_key_secret.
    api_key_sid: str | None = None
    api_key_secret_file: Path | None = None

    @field_validator("api_base_url")
    @classmethod
    def _base(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL such as https://api.twilio.com")
        return v.rstrip("/")


class CarriersSettings(BaseModel):
    """``[carriers.NAME]``: one table per carrier the service answers (each dialect's own model).

    Twilio is always answered (``/twiml`` and ``/media``, also ``/twilio/answer`` and
    ``/twilio/media``); another carrier is answered once its table exists. Authentication is on
    by default wherever the carrier offers it; ``verify = false`` turns it off (loopback tests).
    Secrets are never written here, only the *names* of the environment variables (or systemd
    credentials) holding them.
    """

    model_config = _STRICT
    twilio: TwilioCarrierSettings | None = None
    telnyx: TelnyxSettings | None = None
    plivo: PlivoSettings | None = None
    vonage: VonageSettings | None = None
    signalwire: SignalWireSettings | None = None
    exotel: ExotelSettings | None = None


class AdminSettings(BaseModel):
    model_config = _STRICT
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    token_file: Path | None = None


class ToolsSettings(BaseModel):
    """How bridge calls webhook tools (the tools themselves are in ``[[realtime.tools]]``)."""

    model_config = _STRICT
    secret_file: Path | None = None  # signing secret; or BRIDGE_TOOLS_SECRET, or the credential tools_secret
    max_output_bytes: int = Field(16 * 1024, ge=256, le=1024 * 1024)  # a longer answer is cut, and says so
    # After end_call or transfer_call: how long the caller may take to hear the model's last words.
    goodbye_timeout_s: float = Field(10.0, gt=0, le=120)


WebhookEvent = Literal["call.started", "call.ended"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("call.started", "call.ended")


class WebhookEndpoint(BaseModel):
    model_config = _STRICT
    url: str
    events: list[WebhookEvent] = Field(default_factory=lambda: list(WEBHOOK_EVENTS))

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class WebhooksSettings(BaseModel):
    """Call webhooks: every call's start and end told to the business's systems, never lost."""

    model_config = _STRICT
    endpoints: list[WebhookEndpoint] = Field(default_factory=list)
    timeout_s: float = Field(10.0, gt=0, le=120)
    retry_initial_s: float = Field(5.0, gt=0)  # the first retry waits this long, then it doubles
    retry_max_s: float = Field(600.0, gt=0)  # ... up to this
    retry_horizon_s: float = Field(24 * 3600.0, gt=0)  # an event still undelivered after this has failed


class SessionWebhookSettings(BaseModel):
    """Per-call session lookup: the business's system personalises a call before its first word."""

    model_config = _STRICT
    url: str | None = None
    timeout_s: float = Field(1.5, gt=0, le=10)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class SessionLookupAnswer(BaseModel):
    """What the session lookup may set for one call (validated like the configuration)."""

    model_config = _STRICT
    instructions: str | None = None
    voice: Voice | None = None
    greeting: str | None = None
    parameters: dict[str, str] | None = None  # placeholder values, e.g. {"caller_name": "Ada"}
    tools: list[WebhookTool] | None = None  # replaces the profile's webhook tools

    @model_validator(mode="after")
    def _unique(self) -> SessionLookupAnswer:
        check_unique_names(self.tools or [], [])
        return self


def parse_lookup_answer(result: HttpResult) -> SessionLookupAnswer:
    """The session lookup's answer, or ValueError saying in a few words why it cannot be used."""
    if result.status is None:
        raise ValueError(result.detail or "no answer")
    if not result.ok:
        raise ValueError(f"HTTP status {result.status}")
    if not result.body.strip():
        return SessionLookupAnswer()
    try:
        return SessionLookupAnswer.model_validate_json(result.body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(answer)"
        raise ValueError(f"invalid answer: {where}: {first['msg']}") from None


class LogSettings(BaseModel):
    model_config = _STRICT
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    transcripts: bool = True  # caller's and model's words in the log and the call record


class RecordsSettings(BaseModel):
    model_config = _STRICT
    path: Path = Path("bridge-calls.sqlite")
    update_interval_s: float = Field(5.0, gt=0, le=60)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    server: ServerSettings = Field(default_factory=lambda: ServerSettings())
    realtime: RealtimeSettings = Field(default_factory=lambda: RealtimeSettings())
    twilio: TwilioSettings = Field(default_factory=lambda: TwilioSettings())
    carriers: CarriersSettings = Field(default_factory=lambda: CarriersSettings())
    admin: AdminSettings = Field(default_factory=lambda: AdminSettings())
    log: LogSettings = Field(default_factory=lambda: LogSettings())
    records: RecordsSettings = Field(default_factory=lambda: RecordsSettings())
    tools: ToolsSettings = Field(default_factory=lambda: ToolsSettings())
    webhooks: WebhooksSettings = Field(default_factory=lambda: WebhooksSettings())
    session_webhook: SessionWebhookSettings = Field(default_factory=lambda: SessionWebhookSettings())
    pricing: PricingConfig = Field(default_factory=lambda: PricingConfig())
    profiles: dict[str, Profile] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment wins over it, deeply merged.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _twilio_in_one_place(self) -> Settings:
        # The [twilio] keys of the first release keep working: they are [carriers.twilio].
        legacy = self.twilio
        if self.carriers.twilio is not None:
            # Secret file paths stay in [twilio]: they are where the secrets are, not settings.
            behaviour = legacy.model_fields_set - {"auth_token_file", "api_key_secret_file"}
            if "twilio" in self.model_fields_set and behaviour:
                raise ValueError(
                    "twilio: configure Twilio in one place, [carriers.twilio] or the older [twilio] keys, not both"
                )
            return self
        self.carriers.twilio = TwilioCarrierSettings(
            verify=legacy.validate_signature,
            api_base_url=legacy.api_base_url,
            account_sid=legacy.account_sid,
            api_key_sid=legacy.api_key_sid,
        )
        return self

    @model_validator(mode="after")
    def _routes_name_profiles(self) -> Settings:
        for i, route in enumerate(self.routes):
            if route.profile != "default" and route.profile not in self.profiles:
                known = ", ".join(sorted(["default", *self.profiles])) or "default"
                raise ValueError(f"routes[{i}].profile: unknown profile {route.profile!r} (known: {known})")
        return self

    def session_for(self, profile: str | None) -> tuple[str, SessionSettings, str | None]:
        """The effective session settings of a profile: ``(name, settings, warning)``.

        An unknown profile falls back to the default with a warning, so a typo in a TwiML
        parameter degrades the call instead of dropping it.
        """
        base = SessionSettings.model_validate(
            self.realtime.model_dump(include=set(SessionSettings.model_fields))
        )
        if profile is None or profile == "default":
            return "default", base, None
        chosen = self.profiles.get(profile)
        if chosen is None:
            return "default", base, f"unknown profile {profile!r}, using the default"
        overrides = chosen.model_dump(exclude_none=True)
        merged = base.model_copy(update={k: getattr(chosen, k) for k in overrides})
        return profile, merged, None


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key, the value and the rule."""


@dataclass(frozen=True)
class Secrets:
    openai_api_key: SecretStr | None
    twilio_auth_token: SecretStr | None
    admin_token: SecretStr | None
    tools_secret: SecretStr | None = None  # signs requests to tools and call webhooks
    twilio_api_key_secret: SecretStr | None = None
    refs: Mapping[SecretRef, SecretStr] = field(default_factory=dict)  # { env = ... } / { file = ... } values
    carrier: Mapping[str, SecretStr] = field(default_factory=dict)  # by name, as the carriers' tables name them

    def carrier_values(self) -> dict[str, str]:
        """The carriers' secrets by name, as the dialects' factories take them (Twilio's included)."""
        values = {name: value.get_secret_value() for name, value in self.carrier.items()}
        if self.twilio_auth_token is not None:
            values.setdefault("TWILIO_AUTH_TOKEN", self.twilio_auth_token.get_secret_value())
        if self.twilio_api_key_secret is not None:
            values.setdefault("TWILIO_API_KEY_SECRET", self.twilio_api_key_secret.get_secret_value())
        return values

    def resolve(self, value: str | SecretRef) -> str:
        """A header value as sent: inline text, or the secret a reference names."""
        return value if isinstance(value, str) else self.refs[value].get_secret_value()


def config_path(cli_path: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    raw = cli_path or env.get("BRIDGE_CONFIG")
    return Path(raw) if raw else None


def load_settings(path: Path | None) -> Settings:
    """Read the TOML file (if any) and the environment; raise ConfigError with a clear message."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): TOML files are UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    # The file's tables arrive as keyword arguments, and pydantic-settings takes the ones that
    # start with "_" (_env_prefix, _env_file, _secrets_dir, _cli_parse_args, ...) as options of
    # its own instead of refusing them as unknown keys.
    private = [key for key in data if key.startswith("_")]
    if private:
        allowed = ", ".join(info.alias or name for name, info in Settings.model_fields.items())
        lines = [f"  {key}: unknown key with value {data[key]!r}; allowed keys: {allowed}" for key in private]
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}invalid configuration ({len(private)} problem(s)):\n" + "\n".join(lines))
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, path)) from None
    except SettingsError as exc:  # a BRIDGE_* variable whose value is not the JSON its key needs
        raise ConfigError(_describe_settings_error(exc)) from None


def _describe_settings_error(exc: SettingsError) -> str:
    """pydantic-settings names the field (``error parsing value for field "server" ...``) and
    keeps the JSON error as the cause: say which variables, and why."""
    found = re.search(r'field "(\w+)"', str(exc))
    where = "a BRIDGE_* variable"
    if found:
        name = f"BRIDGE_{found.group(1).upper()}"
        where = f"{name} (or a {name}__* variable)"
    cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
    return f"environment: {where} is not a valid value{cause}"


#: Keys that were renamed, so an old file is told the new name rather than a near miss.
RENAMED_KEYS: dict[str, str] = {"server.max_calls": "max_calls_per_worker"}


def describe_validation_error(exc: ValidationError, path: Path | None = None) -> str:
    """One line per problem: ``key: value 'x' is not allowed: <rule>``."""
    where = f"{path}: " if path else ""
    lines = [f"{where}invalid configuration ({exc.error_count()} problem(s)):"]
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        # Discriminated unions add the tag as a path element (turn_detection.server_vad.x);
        # keep it, it tells the user which variant the rule belongs to.
        key = ".".join(loc) or "(top level)"
        value = err.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if err["type"] == "extra_forbidden":
            allowed = _keys_at(err["loc"][:-1])
            hint = ""
            if key in RENAMED_KEYS:
                hint = f" (renamed: use {RENAMED_KEYS[key]!r})"
            elif allowed:
                close = difflib.get_close_matches(loc[-1], allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                hint += "; allowed keys: " + ", ".join(allowed)
            lines.append(f"  {key}: unknown key with value {shown}{hint}")
            continue
        if err["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
            continue
        if err["type"] == "union_tag_not_found":
            tags = ", ".join(repr(t) for t in _tags_at(err["loc"]))
            lines.append(f"  {key}.type: required key is missing (allowed: {tags})")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:  # whole-file rules name their key in the message
            lines.append(f"  {msg}")
            continue
        lines.append(f"  {key}: value {shown} is not allowed: {msg}")
    return "\n".join(lines)


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types behind ``Annotated``, ``X | None`` and unions."""
    if get_origin(tp) is Annotated:
        return _unwrap(get_args(tp)[0])
    if get_origin(tp) in (Union, UnionType):
        return [t for arg in get_args(tp) if arg is not type(None) for t in _unwrap(arg)]
    return [tp]


def _types_at(loc: tuple[int | str, ...]) -> list[Any]:
    """The types a location in the configuration can hold (for error messages only)."""
    current: list[Any] = [Settings]
    for part in loc:
        following: list[Any] = []
        for tp in current:
            origin = get_origin(tp)
            if origin in (list, tuple) and isinstance(part, int):
                following += _unwrap(get_args(tp)[0])
            elif origin is dict:
                following += _unwrap(get_args(tp)[1])
            elif isinstance(tp, type) and issubclass(tp, BaseModel):
                for name, info in tp.model_fields.items():
                    if part in (name, info.alias):
                        following += _unwrap(info.annotation)
        # A discriminated union's tag is a path element of its own: keep the matching variant.
        tagged = [t for t in current if _tag_of(t) == part]
        current = tagged or following
    return current


def _tag_of(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel) and "type" in tp.model_fields:
        return tp.model_fields["type"].default
    return None


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    keys: set[str] = set()
    for tp in _types_at(loc):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            keys.update(info.alias or name for name, info in tp.model_fields.items())
    return sorted(keys)


def _tags_at(loc: tuple[int | str, ...]) -> list[str]:
    return [str(t) for t in (_tag_of(tp) for tp in _types_at(loc)) if t is not None]


def _read_secret_file(path: Path, what: str) -> SecretStr:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{what}: {path} is empty")
    return SecretStr(text)


def _secret(
    env_names: tuple[str, ...],
    file_setting: Path | None,
    credential: str,
    environ: Mapping[str, str],
    what: str,
) -> SecretStr | None:
    for name in env_names:
        value = environ.get(name, "").strip()
        if value:
            return SecretStr(value)
    if file_setting is not None:
        return _read_secret_file(file_setting, what)
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        candidate = Path(cred_dir) / credential
        if candidate.exists():
            return _read_secret_file(candidate, what)
    return None


def load_secrets(settings: Settings, environ: Mapping[str, str] | None = None) -> Secrets:
    """Read the secrets and register them with the log redactor, so no log line of this
    process can carry them, whatever path they take into a message."""
    env = os.environ if environ is None else environ
    secrets = _load_secrets(settings, env)
    from bridge.log import REDACTOR  # a leaf module; imported here to keep config importable alone

    for value in (
        secrets.openai_api_key,
        secrets.twilio_auth_token,
        secrets.admin_token,
        secrets.tools_secret,
        secrets.twilio_api_key_secret,
        *secrets.refs.values(),
        *secrets.carrier.values(),
    ):
        if value is not None:
            REDACTOR.add(value.get_secret_value())
    for header_value in settings.realtime.extra_headers.values():
        REDACTOR.add(header_value)  # Azure's api-key travels as an extra header
    return secrets


def _load_secrets(settings: Settings, env: Mapping[str, str]) -> Secrets:
    return Secrets(
        openai_api_key=_secret(
            ("OPENAI_API_KEY",), settings.realtime.api_key_file, "openai_api_key", env, "OpenAI API key"
        ),
        twilio_auth_token=_secret(
            ("TWILIO_AUTH_TOKEN", "BRIDGE_TWILIO_AUTH_TOKEN"),
            settings.twilio.auth_token_file,
            "twilio_auth_token",
            env,
            "Twilio auth token",
        ),
        admin_token=_secret(
            ("BRIDGE_ADMIN_TOKEN",),
            settings.admin.token_file,
            "admin_token",
            env,
            "admin token",
        ),
        tools_secret=_secret(
            ("BRIDGE_TOOLS_SECRET",), settings.tools.secret_file, "tools_secret", env, "tools signing secret"
        ),
        twilio_api_key_secret=_secret(
            ("TWILIO_API_KEY_SECRET",),
            settings.twilio.api_key_secret_file,
            "twilio_api_key_secret",
            env,
            "Twilio API key secret",
        ),
        refs=_load_refs(settings, env),
        carrier=_load_carrier_secrets(settings, env),
    )


def _load_carrier_secrets(settings: Settings, env: Mapping[str, str]) -> dict[str, SecretStr]:
    """Each answered carrier's secrets, by the names its table gives: the environment variable of
    that name, else the systemd credential of that name in lower case. Missing ones are left out
    (the carrier's factory says which it needs, and check-config reports it)."""
    found: dict[str, SecretStr] = {}
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    for table in enabled_carriers(settings).values():
        for name in table.secret_names():
            value = env.get(name, "").strip()
            if value:
                found[name] = SecretStr(value)
            elif cred_dir and (Path(cred_dir) / name.lower()).exists():
                found[name] = _read_secret_file(Path(cred_dir) / name.lower(), f"secret {name}")
    return found


def _all_tool_lists(settings: Settings) -> list[tuple[list[WebhookTool], list[McpServer]]]:
    lists = [(settings.realtime.tools, settings.realtime.mcp_servers)]
    lists += [(p.tools or [], p.mcp_servers or []) for p in settings.profiles.values()]
    return lists


def _load_refs(settings: Settings, env: Mapping[str, str]) -> dict[SecretRef, SecretStr]:
    values: dict[SecretRef, SecretStr] = {}
    for tools, servers in _all_tool_lists(settings):
        for where, ref in secret_refs(tools, servers):
            if ref in values:
                continue
            if ref.env is not None:
                value = env.get(ref.env, "").strip()
                if not value:
                    raise ConfigError(f"{where}: environment variable {ref.env} is not set or empty")
                values[ref] = SecretStr(value)
            else:
                assert ref.file is not None
                values[ref] = _read_secret_file(ref.file, where)
    return values




def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def unverified_carriers(settings: Settings) -> list[str]:
    """Carriers whose webhook and media requests are taken without checking who sent them.

    One entry per answered carrier with verification off (``carriers.NAME.verify = false``, or for
    Twilio the older ``twilio.validate_signature = false``); the rule about public addresses below
    applies to each the same way.
    """
    return [name for name, table in enabled_carriers(settings).items() if not table.verify]


def enabled_carriers(settings: Settings) -> dict[str, CarrierSettings]:
    """The carriers this service answers, with their tables: Twilio always, others once configured."""
    tables = {name: getattr(settings.carriers, name) for name in registry.CARRIERS}
    return {name: table for name, table in tables.items() if table is not None}


# Hosts that bill per session and refuse a session without a key: OpenAI's and Azure OpenAI's.
_KEYED_HOSTS = ("api.openai.com",)
_KEYED_SUFFIXES = (".openai.com", ".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
_CREDENTIAL_HEADERS = {"authorization", "api-key"}


def realtime_needs_key(realtime: RealtimeSettings) -> bool:
    """True when ``realtime.url`` is OpenAI's or Azure's and nothing else carries a credential
    (an ``Authorization`` or ``api-key`` extra header, or Azure's ``?api-key=`` in the URL)."""
    parts = urlsplit(realtime.url)
    host = (parts.hostname or "").lower()
    if host not in _KEYED_HOSTS and not host.endswith(_KEYED_SUFFIXES):
        return False  # the simulator, a local proxy, a test double: its own business
    if any(name.lower() in _CREDENTIAL_HEADERS for name in realtime.extra_headers):
        return False
    return not any(k.lower() == "api-key" for k, _ in parse_qsl(parts.query, keep_blank_values=True))


@dataclass(frozen=True)
class StartupCheck:
    """What ``serve`` (and ``check-config``, and a reload) decide about a valid configuration.

    ``problems`` make it refuse to start; ``warnings`` are logged at start and shown by
    ``/readyz``. Each message names the key, the value, what is wrong and how to fix it.
    """

    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def check_startup(settings: Settings, secrets: Secrets) -> StartupCheck:
    """The one set of rules ``serve`` and ``check-config`` apply after the file itself is valid."""
    problems: list[str] = []
    warnings: list[str] = []
    if not is_loopback(settings.admin.host) and secrets.admin_token is None:
        problems.append(
            f"admin.host: value {settings.admin.host!r} is not allowed without an admin token: "
            "set BRIDGE_ADMIN_TOKEN or admin.token_file, or bind the admin port to 127.0.0.1"
        )
    twilio_table = settings.carriers.twilio
    if twilio_table is not None and twilio_table.verify and secrets.twilio_auth_token is None:
        problems.append(
            "twilio.validate_signature: value True is not allowed without a Twilio auth token: "
            "set TWILIO_AUTH_TOKEN, twilio.auth_token_file or the credential twilio_auth_token "
            "(for a test on 127.0.0.1 only, set twilio.validate_signature = false)"
        )

    values = secrets.carrier_values()
    for name, table in enabled_carriers(settings).items():
        if name == "twilio" and problems and problems[-1].startswith("twilio."):
            continue  # said above, in the words of the [twilio] keys
        try:
            registry.build(name, table, values)
        except ValueError as exc:
            problems.append(f"carriers.{name}: {exc}")
    server = settings.server
    unverified = unverified_carriers(settings)
    if unverified and not is_loopback(server.host):
        switches = ", ".join(
            "twilio.validate_signature = false" if name == "twilio" else f"carriers.{name}.verify = false"
            for name in unverified
        )
        if not server.insecure_allow_unauthenticated_calls:
            problems.append(
                f"server.host: value {server.host!r} is not allowed with {switches}: anyone who finds "
                "this address could place calls that open Realtime sessions billed to you. Turn "
                "signature checking on (twilio.validate_signature = true with TWILIO_AUTH_TOKEN), or "
                "bind server.host to 127.0.0.1, or accept the risk with "
                "server.insecure_allow_unauthenticated_calls = true"
            )
        else:
            warnings.append(
                f"server.insecure_allow_unauthenticated_calls: value True: server.host {server.host!r} "
                f"takes calls without checking who sent them ({switches}); anyone who finds this "
                "address can open Realtime sessions billed to you"
            )
    if realtime_needs_key(settings.realtime) and secrets.openai_api_key is None:
        problems.append(
            f"realtime.url: value {_mask_query(settings.realtime.url)!r} needs an API key and none is "
            "set: set OPENAI_API_KEY, realtime.api_key_file or the credential openai_api_key "
            "(Azure: an api-key header in realtime.extra_headers)"
        )
    return StartupCheck(tuple(problems), tuple(warnings))


def format_startup_problems(check: StartupCheck) -> str:
    """The text ``check-config`` prints and ``serve`` logs when it refuses to start."""
    lines = [f"refusing to start ({len(check.problems)} problem(s)):"]
    lines.extend(f"  {p}" for p in check.problems)
    return "\n".join(lines)


_SECRET_QUERY_NAMES = {"api-key", "api_key", "apikey", "key", "token", "access_token", "sig", "signature"}


def _mask_query(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, "********" if k.lower() in _SECRET_QUERY_NAMES else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def masked_dump(settings: Settings, secrets: Secrets) -> dict[str, Any]:
    """The effective configuration as plain data, secrets replaced by a mask."""
    data = settings.model_dump(mode="json", by_alias=True)

    def mask(s: SecretStr | None) -> str | None:
        return None if s is None else "********"

    # Extra headers may carry credentials (Azure's api-key), so only their names are shown.
    data["realtime"]["extra_headers"] = {k: "********" for k in settings.realtime.extra_headers}
    # ... and so may the URL's query (Azure accepts ?api-key=...).
    data["realtime"]["url"] = _mask_query(settings.realtime.url)
    data["secrets"] = {
        "openai_api_key": mask(secrets.openai_api_key),
        "twilio_auth_token": mask(secrets.twilio_auth_token),
        "admin_token": mask(secrets.admin_token),
        "tools_secret": mask(secrets.tools_secret),
        "twilio_api_key_secret": mask(secrets.twilio_api_key_secret),
        # Header and authorization references show where a secret comes from, never its value.
        "references": sorted(ref.describe() for ref in secrets.refs),
    }
    return data
