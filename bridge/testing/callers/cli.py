"""``bridge call``: one simulated call from the command line, as any carrier."""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import urlsplit

import httpx
import trio

from bridge.testing.callers.answer import answer_call, stream_url
from bridge.testing.callers.carriers import CALLERS
from bridge.testing.callers.dialect import hex_sid, new_uuid
from bridge.testing.callers.engine import run_call
from bridge.testing.callers.options import ALAW, CallerOptions, Credentials
from bridge.testing.callers.result import CallResult, result_to_dict, summarise
from bridge.testing.callers.webhook import WebhookCall

DEFAULT_URL = "ws://127.0.0.1:8080"


def _parse_dtmf(text: str) -> list[tuple[int, str]]:
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        at, sep, digit = item.partition(":")
        if not sep or not at.strip().isdigit():
            raise argparse.ArgumentTypeError(f"DTMF entries look like MS:DIGIT, got {item!r}")
        out.append((int(at), digit.strip()))
    return out


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"parameters look like key=value, got {text!r}")
    return key, value


def _parse_header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition(":")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"headers look like 'Name: value', got {text!r}")
    return key.strip(), value.strip()


def _seconds_to_ms(value: float | None) -> int | None:
    return None if value is None else round(value * 1000)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bridge call",
        description="Simulated caller: a carrier's media stream (and, with --answer, its voice webhook) "
        "sending a recording to the bridge.",
    )
    p.add_argument(
        "--carrier", choices=sorted(CALLERS), default="twilio", help="whose protocol to speak (default twilio)"
    )
    p.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="media WebSocket, e.g. ws://127.0.0.1:8080/media; a bare base (ws:// or http://host:port) "
        f"means its /CARRIER/media (default {DEFAULT_URL})",
    )
    p.add_argument(
        "--answer",
        action="store_true",
        help="first fetch the carrier's answer document from the base's /CARRIER/answer and connect "
        "where it says, with its parameters (plain ws:// when the base is http:// or ws://)",
    )
    p.add_argument(
        "--format", dest="audio_format", help="audio on the wire: ulaw_8k, alaw_8k, l16_8k, l16_16k, l16_24k"
    )
    p.add_argument("--audio", help="WAV file in the call's format; default: the bundled recording")
    p.add_argument("--alaw", action="store_true", help="Twilio: declare and send A-law (audio/x-alaw)")
    p.add_argument("--from", dest="from_number", default="+15550100001", help="the caller's number")
    p.add_argument("--to", dest="to_number", default="+15550100002", help="the number called")
    p.add_argument(
        "--secret-env",
        metavar="NAME",
        help="environment variable holding the carrier's secret, to sign or authenticate as the carrier "
        "(Twilio/Plivo auth token, Telnyx Ed25519 private key, Vonage signature secret, SignalWire "
        "signing key, Exotel API token); never given on the command line",
    )
    p.add_argument("--user", help="Exotel: the API key (Basic user name) that goes with --secret-env")
    p.add_argument(
        "--param",
        action="append",
        type=_parse_param,
        default=[],
        metavar="K=V",
        help="custom parameter the carrier carries to the stream (repeatable; with --answer, added to the answer's)",
    )
    p.add_argument(
        "--header",
        action="append",
        type=_parse_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="extra HTTP header on the upgrade request (repeatable)",
    )
    p.add_argument("--fast", action="store_true", help="send frames as fast as possible, not in real time")
    p.add_argument("--turns", type=int, default=1, help="times to say the recording (default 1)")
    p.add_argument("--gap", type=float, default=1.0, metavar="SECONDS", help="silence between turns")
    p.add_argument("--leading-silence", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--trailing-silence", type=float, default=0.5, metavar="SECONDS")
    p.add_argument("--hang-up-after", type=float, metavar="SECONDS", help="hang up this long after start")
    p.add_argument(
        "--wait-for-reply",
        type=float,
        metavar="SECONDS",
        help="after speaking, stay on the line until the reply has played (at most this long)",
    )
    p.add_argument(
        "--interrupt-after",
        type=float,
        metavar="SECONDS",
        help="barge in once this much of a reply has played",
    )
    p.add_argument(
        "--dtmf",
        type=_parse_dtmf,
        default=[],
        metavar="MS:DIGIT,...",
        help='digits to press, e.g. "1500:5,2000:#" (ms since stream start)',
    )
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary")
    return p


def _credentials(args: argparse.Namespace) -> Credentials | None:
    if args.secret_env is None:
        return None
    value = os.environ.get(args.secret_env, "").strip()
    if not value:
        raise ValueError(f"--secret-env {args.secret_env}: that environment variable is empty or unset")
    return Credentials(value, user=args.user)


async def _call(args: argparse.Namespace) -> CallResult:
    credentials = _credentials(args)
    fields: dict[str, object] = {
        "audio": args.audio,
        "encoding": ALAW if args.alaw else None,
        "extra_headers": dict(args.header),
        "realtime": not args.fast,
        "turns": args.turns,
        "gap_ms": round(args.gap * 1000),
        "leading_silence_ms": round(args.leading_silence * 1000),
        "trailing_silence_ms": round(args.trailing_silence * 1000),
        "hang_up_after_ms": _seconds_to_ms(args.hang_up_after),
        "wait_for_reply_ms": _seconds_to_ms(args.wait_for_reply),
        "interrupt_after_assistant_ms": _seconds_to_ms(args.interrupt_after),
        "dtmf": args.dtmf,
        "connect_timeout_s": args.connect_timeout,
    }
    if args.answer:
        call = WebhookCall(call_sid=_new_call_id(args.carrier), from_number=args.from_number, to_number=args.to_number)
        setup = await answer_call(args.url, args.carrier, call, credentials)
        insecure = urlsplit(args.url).scheme in ("http", "ws")
        options = setup.caller_options(call, insecure=insecure, **fields)
        options.params.update(dict(args.param))
        if args.audio_format is not None and args.audio_format != options.audio_format:
            raise ValueError(f"--format {args.audio_format}: the answer asked for {options.audio_format}")
        if credentials is not None and options.credentials is None:
            options.credentials = credentials
    else:
        options = CallerOptions(
            url=stream_url(args.url, args.carrier),
            carrier=args.carrier,
            audio_format=args.audio_format,
            params=dict(args.param),
            from_number=args.from_number,
            to_number=args.to_number,
            credentials=credentials,
            **fields,  # type: ignore[arg-type]
        )
    return await run_call(options)


def _new_call_id(carrier: str) -> str:
    return hex_sid("CA") if carrier == "twilio" else new_uuid()


def main(argv: list[str] | None = None) -> int:
    """CLI entry (without the ``call`` subcommand name). 0: connected and ended normally;
    1: the call ended abnormally; 2: could not connect, the answer was refused, or bad arguments."""
    args = build_parser().parse_args(argv)
    try:
        result = trio.run(_call, args)
    except (ValueError, OSError) as exc:  # bad options, unreadable audio file, a refused answer
        print(f"bridge call: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:  # the answer step could not reach the bridge
        print(f"bridge call: could not fetch the answer: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result_to_dict(result), indent=2))
    elif result.connected:
        print(summarise(result))
    if not result.connected:
        print(f"bridge call: {result.connect_error}", file=sys.stderr)
        return 2
    return 0 if result.ok else 1
