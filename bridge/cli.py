"""``bridge`` command: serve, demo, simulator, call, check-config, sessions, cdr."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from bridge.config import (
    ConfigError,
    Secrets,
    Settings,
    check_startup,
    config_path,
    format_startup_problems,
    load_secrets,
    load_settings,
    masked_dump,
)

EXIT_CONFIG = 2  # what serve exits with when it refuses a configuration


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(config_path(args.config))


def cmd_check_config(args: argparse.Namespace) -> int:
    """The checks ``serve`` runs at start (:func:`bridge.config.check_startup`), with its exit code."""
    settings = _load(args)
    secrets = load_secrets(settings)
    print(json.dumps(masked_dump(settings, secrets), indent=2))
    check = check_startup(settings, secrets)
    for warning in check.warnings:
        print(f"bridge: warning: {warning}", file=sys.stderr)
    if not check.ok:
        print(f"bridge: {format_startup_problems(check)}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.server.supervisor import serve

    settings = _load(args)
    if args.workers is not None:
        settings.server.workers = args.workers
    return int(serve(settings, config_file=config_path(args.config)))


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.demo import main as demo_main

    return demo_main(calls=args.calls, fast=args.fast)


def cmd_simulator(args: argparse.Namespace) -> int:
    import trio

    from bridge import log
    from bridge.testing.simulator_server import SimulatorOptions, serve_simulator
    from bridge.testing.simulator_tools import build_triggers, parse_mcp_call, parse_preamble, parse_tool_call

    log.setup("info", "auto")
    try:
        calls = [parse_tool_call(spec) for spec in args.tool_call]
        mcp_calls = [parse_mcp_call(spec, fail=args.mcp_call_fails) for spec in args.mcp_call]
        preambles = [parse_preamble(spec) for spec in args.preamble]
        options = SimulatorOptions(
            speed=args.speed,
            response_audio_ms=args.response_ms,
            seed=args.seed,
            max_session_s=args.max_session,
            tool_triggers=build_triggers(calls, preambles, mcp_calls),
            mcp_list_fail=args.mcp_list_fails,
            drop_after_s=args.drop_after,
            drop_mode=args.drop_mode,
            expire_after_s=args.expire_after,
            fault_sessions=args.fault_sessions,
            refuse_connections=args.refuse_connections,
            refuse_status=args.refuse_status,
        )
    except ValueError as exc:
        print(f"bridge simulator: {exc}", file=sys.stderr)
        return 2
    print(f"Realtime simulator on ws://{args.host}:{args.port}/v1/realtime", file=sys.stderr)
    try:
        trio.run(lambda: serve_simulator(args.host, args.port, options=options))
    except KeyboardInterrupt:
        pass
    return 0


def _pop_option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """``--name VALUE`` or ``--name=VALUE`` taken out of ``argv`` (the last one wins)."""
    value: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
            continue
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def upgrade_signature(settings: Settings, secrets: Secrets, url: str) -> str | None:
    """The X-Twilio-Signature a service with this configuration expects on an upgrade to ``url``,
    or None when it checks none (or no token is known here)."""
    from urllib.parse import urlsplit

    from bridge.carrier.twilio_signature import compute_signature, request_url

    token = secrets.twilio_auth_token
    table = settings.carriers.twilio
    if table is None or not table.verify or token is None:
        return None
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    signed = request_url(settings.server.public_url, {"host": parts.netloc}, target, websocket=True)
    return compute_signature(token.get_secret_value(), signed)


def cmd_call(argv: list[str]) -> int:
    """``bridge call``: the simulated caller. A Twilio caller streaming straight to a URL signs its
    upgrade as Twilio would when the configuration checks signatures and the auth token is at
    hand; other carriers, and callers that sign themselves (``--secret-env``) or go through the
    answer document (``--answer``), are left as they are."""
    from bridge.testing.caller import main as caller_main
    from bridge.testing.callers.answer import stream_url

    config, rest = _pop_option(argv, "--config")
    url, _ = _pop_option(rest, "--url")
    carrier, _ = _pop_option(rest, "--carrier")
    has_signature = any("x-twilio-signature" in a.lower() for a in rest)
    signs_itself = any(a == "--answer" or a.startswith("--secret-env") for a in rest)
    asks_help = "-h" in rest or "--help" in rest
    if url is not None and (carrier or "twilio") == "twilio" and not (has_signature or signs_itself or asks_help):
        settings = load_settings(config_path(config))
        signature = upgrade_signature(settings, load_secrets(settings), stream_url(url, "twilio"))
        if signature is not None:
            rest += ["--header", f"X-Twilio-Signature: {signature}"]
    return caller_main(rest)


def cmd_sessions(args: argparse.Namespace) -> int:
    from bridge.server.admin_client import print_sessions

    settings = _load(args)
    return int(print_sessions(settings, load_secrets(settings), url=args.url, as_json=args.json))


def cmd_cdr(args: argparse.Namespace) -> int:
    from bridge.accounting.cdr_command import run_cdr

    settings = _load(args)
    return int(run_cdr(settings, args))


def cmd_webhooks(args: argparse.Namespace) -> int:
    from bridge.accounting.webhooks_command import run_webhooks

    settings = _load(args)
    return int(run_webhooks(settings, args))


def build_parser() -> argparse.ArgumentParser:
    from bridge import __version__

    p = argparse.ArgumentParser(prog="bridge", description="Phone calls to OpenAI Realtime, on trio.")
    p.add_argument("--version", action="version", version=f"bridge {__version__}")
    p.add_argument("--config", help="TOML configuration file (or BRIDGE_CONFIG)")
    # Also accepted after the subcommand; SUPPRESS keeps a value given before it.
    config_after = argparse.ArgumentParser(add_help=False)
    config_after.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file (or BRIDGE_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, **kw: object) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[config_after], **kw)  # type: ignore[arg-type]

    s = add("serve", help="run the service")
    s.add_argument("--workers", type=int, help="worker processes (default: server.workers, 0 = CPUs)")
    s.set_defaults(func=cmd_serve)

    d = add("demo", help="the whole path on this machine: simulator, bridge, simulated calls")
    d.add_argument("--calls", type=int, default=4)
    d.add_argument("--fast", action="store_true", help="callers send audio faster than real time")
    d.set_defaults(func=cmd_demo)

    m = add("simulator", help="serve the Realtime simulator alone")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=8765)
    m.add_argument("--speed", type=float, default=4.0, help="audio generation speed vs real time")
    m.add_argument("--response-ms", type=int, metavar="MS", help="length of each spoken answer")
    m.add_argument("--seed", type=int, help="seed for ids (reproducible runs)")
    m.add_argument("--max-session", type=float, default=3600.0, metavar="SECONDS", help="session lifetime")
    m.add_argument(
        "--tool-call",
        action="append",
        default=[],
        metavar="TURN:NAME[:ARGS_JSON]",
        help='after caller turn TURN call function NAME, e.g. 1:end_call:{"reason":"done"} (repeatable; '
        "several for one turn are one response); only tools the session declares are called",
    )
    m.add_argument(
        "--preamble",
        action="append",
        default=[],
        metavar="TURN:TEXT",
        help="say TEXT before that turn's tool calls (repeatable)",
    )
    m.add_argument(
        "--mcp-call",
        action="append",
        default=[],
        metavar="TURN:SERVER_LABEL:NAME[:ARGS_JSON]",
        help="after caller turn TURN call tool NAME of the declared MCP server (repeatable)",
    )
    m.add_argument("--mcp-call-fails", action="store_true", help="MCP calls end with response.mcp_call.failed")
    m.add_argument("--mcp-list-fails", action="store_true", help="listing MCP tools fails (mcp_list_tools.failed)")
    m.add_argument(
        "--drop-after", type=float, metavar="SECONDS", help="drop each session's socket this long after it opened"
    )
    m.add_argument(
        "--drop-mode",
        choices=["close", "reset", "silent"],
        default="close",
        help="close: close frame 1011; reset: TCP reset, no close frame; silent: no data and no pongs",
    )
    m.add_argument(
        "--expire-after", type=float, metavar="SECONDS", help="send session_expired this long after opening"
    )
    m.add_argument("--fault-sessions", type=int, metavar="K", help="faults hit only the first K sessions")
    m.add_argument(
        "--refuse-connections", type=int, default=0, metavar="K", help="refuse the first K connection attempts"
    )
    m.add_argument("--refuse-status", type=int, default=503, metavar="STATUS", help="HTTP status for refusals")
    m.set_defaults(func=cmd_simulator)

    sub.add_parser("call", help="a simulated caller (bridge call --help)", add_help=False)

    c = add("check-config", help="validate and print the effective configuration; exit 2 where serve would refuse it")
    c.set_defaults(func=cmd_check_config)

    ss = add("sessions", help="list live calls (reads the admin port)")
    ss.add_argument("--url", help="admin base URL (default from admin.host/admin.port)")
    ss.add_argument("--json", action="store_true")
    ss.set_defaults(func=cmd_sessions)

    r = add("cdr", help="list and export call records")
    r.add_argument("--format", choices=["table", "csv", "jsonl"], default="table")
    r.add_argument("--since", help="ISO date/time or a duration like 2h, 7d")
    r.add_argument("--until", help="ISO date/time or a duration like 1h")
    r.add_argument("--profile")
    r.add_argument("--end-reason")
    r.add_argument("--limit", type=int)
    r.add_argument("--db", help="records database (default: records.path)")
    r.set_defaults(func=cmd_cdr)

    w = sub.add_parser("webhooks", help="call webhooks pending delivery, or failed")
    w.add_argument("--status", choices=["all", "pending", "failed"], default="all")
    w.add_argument("--limit", type=int)
    w.add_argument("--json", action="store_true")
    w.add_argument("--db", help="records database (default: records.path)")
    w.set_defaults(func=cmd_webhooks)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        # `bridge call` has its own parser (it is also used on its own by load tests); --config
        # may come before or after the word `call`.
        config, without_config = _pop_option(args_list, "--config")
        if without_config[:1] == ["call"]:
            return cmd_call((["--config", config] if config else []) + without_config[1:])
        parser = build_parser()
        args = parser.parse_args(args_list)
        return int(args.func(args))
    except ConfigError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
