"""Valid and mutated messages for bench/fuzz_bench.py: the six carriers' stream dialects (what a
caller sends, what the bridge sends back) and the Realtime server's events.

Everything here is pure and driven by a ``random.Random``, so a run is repeatable from its seed.
Each mutation has a *kind* (the figures are counted by kind) and some end the call by design (an
invalid start, a message over the size cap, a text frame that is not UTF-8): those are sent last.

Message shapes follow the carriers' documentation, as the dialects in ``bridge/carrier`` cite it.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

Frame = str | bytes  # str: a text frame, bytes: a binary frame


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- the carriers' dialects, as a caller speaks them ----------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """One carrier's stream protocol from the caller's side (the bench's view, not the bridge's)."""

    name: str
    frame_bytes: int  # 20 ms of its audio
    binary_audio: bool = False  # Vonage: audio travels as binary frames
    passthrough: bool = True  # its audio reaches a pcmu session unchanged (byte-exact check possible)

    @property
    def route(self) -> str:
        return f"/{self.name}/media"

    def start(self, sid: str, call: str, params: dict[str, str]) -> Frame:
        n = self.name
        if n in ("twilio", "signalwire"):
            return dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
                "streamSid": sid, "callSid": call, "accountSid": "AC" + "0" * 32, "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})  # fmt: skip
        if n == "telnyx":
            return dumps({"event": "start", "sequence_number": "1", "stream_id": sid, "start": {
                "call_control_id": call, "user_id": "u1", "from": "+15550100", "to": "+15550199",
                "custom_parameters": params,
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}})  # fmt: skip
        if n == "plivo":
            packed = base64.b32encode(urlencode(params).encode()).decode("ascii").rstrip("=")
            return dumps({"event": "start", "sequenceNumber": 0, "start": {
                "callId": call, "streamId": sid, "accountId": "MA1", "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
                "extra_headers": f"bridge={packed}"})  # fmt: skip
        if n == "vonage":
            return dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                          "call_sid": call, **params})  # fmt: skip
        assert n == "exotel"
        return dumps({"event": "start", "sequence_number": 1, "stream_sid": sid, "start": {
            "stream_sid": sid, "call_sid": call, "account_sid": "acc", "from": "+15550100", "to": "+15550199",
            "custom_parameters": params,
            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}})  # fmt: skip

    def media(self, payload: str, seq: int, sid: str) -> Frame:
        n = self.name
        if n == "vonage":
            return base64.b64decode(payload)
        ts = str(20 * seq)
        if n in ("twilio", "signalwire"):
            return ('{"event":"media","sequenceNumber":"' + str(seq + 1) + '","streamSid":"' + sid
                    + '","media":{"track":"inbound","chunk":"' + str(seq) + '","timestamp":"' + ts
                    + '","payload":"' + payload + '"}}')  # fmt: skip
        if n == "telnyx":
            return ('{"event":"media","stream_id":"' + sid + '","media":{"track":"inbound","chunk":"' + str(seq)
                    + '","timestamp":"' + ts + '","payload":"' + payload + '"}}')  # fmt: skip
        if n == "plivo":
            return ('{"event":"media","sequenceNumber":' + str(seq) + ',"streamId":"' + sid
                    + '","media":{"track":"inbound","timestamp":"' + ts + '","chunk":' + str(seq)
                    + ',"payload":"' + payload + '"}}')  # fmt: skip
        return ('{"event":"media","stream_sid":"' + sid + '","media":{"chunk":' + str(seq) + ',"timestamp":"'
                + ts + '","payload":"' + payload + '"}}')  # fmt: skip

    def mark_echo(self, name: str, sid: str) -> Frame:
        n = self.name
        if n == "plivo":
            return dumps({"event": "playedStream", "streamId": sid, "name": name})
        if n == "vonage":
            return dumps({"event": "websocket:notify", "payload": {"name": name}})
        key = {"twilio": "streamSid", "signalwire": "streamSid", "telnyx": "stream_id"}.get(n, "stream_sid")
        return dumps({"event": "mark", key: sid, "mark": {"name": name}})

    def dtmf(self, digit: str, sid: str) -> Frame:
        if self.name == "vonage":
            return dumps({"event": "websocket:dtmf", "digit": digit, "duration": 250})
        return dumps(
            {"event": "dtmf", "streamSid": sid, "stream_sid": sid, "dtmf": {"digit": digit, "track": "inbound_track"}}
        )

    def stop(self, sid: str, call: str) -> Frame | None:
        """The stop message; None for Vonage, whose stream ends with the socket's close."""
        n = self.name
        if n == "vonage":
            return None
        if n == "plivo":
            return dumps({"event": "stop", "streamId": sid})
        if n == "telnyx":
            return dumps({"event": "stop", "stream_id": sid, "stop": {"call_control_id": call}})
        if n == "exotel":
            return dumps({"event": "stop", "stream_sid": sid, "stop": {"call_sid": call, "reason": "callended"}})
        return dumps({"event": "stop", "streamSid": sid, "stop": {"callSid": call, "accountSid": "AC"}})

    def read(self, frame: Frame) -> tuple[str, str] | None:
        """What the bridge sent: ``("media", payload_b64)``, ``("mark", name)``, ``("clear", "")``."""
        if isinstance(frame, bytes):
            return ("media", b64(frame)) if self.name == "vonage" else None
        try:
            msg = json.loads(frame)
        except ValueError:
            return None
        if not isinstance(msg, dict):
            return None
        kind = msg.get("event") or msg.get("action")
        if kind in ("media", "playAudio"):
            return "media", msg["media"]["payload"]
        if kind in ("mark", "checkpoint", "notify"):
            name = msg.get("name") or (msg.get("mark") or msg.get("payload") or {}).get("name")
            return "mark", str(name)
        if kind in ("clear", "clearAudio"):
            return "clear", ""
        return None


DIALECTS = {
    d.name: d
    for d in (
        Dialect("twilio", 160),
        Dialect("telnyx", 160),
        Dialect("plivo", 160),
        Dialect("signalwire", 160),
        Dialect("vonage", 640, binary_audio=True, passthrough=False),  # L16 16 kHz ↔ pcmu: resampled
        Dialect("exotel", 320, passthrough=False),  # L16 8 kHz ↔ pcmu: encoded
    )
}


# --- mutations of what a caller sends -----------------------------------------------------------

#: Kinds that end the call by design; a fuzzing call sends at most one, as its last message.
ENDING_CARRIER_KINDS = frozenset({"over_cap", "bad_utf8", "bad_start"})

CARRIER_KINDS: dict[str, int] = {  # kind -> weight
    "truncated": 10, "wrong_type": 12, "missing_field": 8, "invalid_base64": 14, "unknown_event": 6,
    "binary_for_text": 6, "text_for_binary": 2, "not_json": 5, "deep_nesting": 2, "huge": 1,
    "media_before_start": 3, "second_start": 3, "unknown_mark": 6, "bad_dtmf": 3, "odd_numbers": 5,
    "empty": 3, "control_chars": 3,
}  # fmt: skip
ODD_VALUES: list[Any] = [None, True, 0, -1, 1.5, 1e308, 2**70, "", "x", [], {}, [1, 2], {"a": 1}, "\u0000",
                         "\ud800", "9" * 400]  # fmt: skip
JUNK_PAYLOADS = ["not base64!!", "AAA", "AAAA====", "A===", "=AAA", "AA AA", "AAAA\n", "\u00e9\u00e9\u00e9\u00e9",
                 "____", "----", "", "AAAAAAA", "YWJj\u0000", "++//++//+"]  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    return out


def _set(value: Any, path: tuple[Any, ...], new: Any, delete: bool = False) -> Any:
    copy = dict(value)
    if len(path) == 1:
        if delete:
            copy.pop(path[0], None)
        else:
            copy[path[0]] = new
        return copy
    copy[path[0]] = _set(value[path[0]], path[1:], new, delete)
    return copy


def _odd_payload(rng: random.Random, dialect: Dialect) -> str:
    if rng.random() < 0.3 and dialect.frame_bytes % 2 == 0 and dialect.name != "vonage":
        return b64(bytes(rng.getrandbits(8) for _ in range(dialect.frame_bytes - 1)))  # L16: odd byte count
    return rng.choice(JUNK_PAYLOADS)


def valid_message(rng: random.Random, dialect: Dialect, sid: str, call: str, seq: int) -> Frame:
    """A message the dialect accepts: mostly media, sometimes a dtmf or an unknown mark's echo."""
    r = rng.random()
    if r < 0.85:
        return dialect.media(b64(rng.randbytes(dialect.frame_bytes)), seq, sid)
    if r < 0.95:
        return dialect.dtmf(rng.choice("0123456789*#"), sid)
    return dialect.mark_echo(f"g0m{rng.randint(1, 50)}", sid)


def mutate_carrier(rng: random.Random, dialect: Dialect, kind: str, sid: str, call: str, seq: int) -> Frame:
    """One message of ``kind`` for ``dialect``."""
    base_text = dialect.media(b64(rng.randbytes(dialect.frame_bytes)), seq, sid)
    if isinstance(base_text, bytes):  # Vonage audio: mutate its text events instead
        base_text = str(dialect.dtmf("5", sid))
    templates = [base_text, dialect.start(sid, call, {"bench_call": "fuzzc"}), dialect.mark_echo("g0m1", sid),
                 dialect.dtmf("1", sid), dialect.stop(sid, call) or dialect.dtmf("2", sid)]  # fmt: skip
    template = json.loads(rng.choice(templates))
    if kind == "truncated":
        text = dumps(template)
        return text[: rng.randrange(0, len(text))]
    if kind == "wrong_type":
        paths = _paths(template)
        return dumps(_set(template, rng.choice(paths), rng.choice(ODD_VALUES))) if paths else "{}"
    if kind == "missing_field":
        paths = _paths(template)
        return dumps(_set(template, rng.choice(paths), None, delete=True)) if paths else "{}"
    if kind == "invalid_base64":
        if dialect.binary_audio:
            return bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 3, 639, 641])))  # not whole samples
        return dialect.media(_odd_payload(rng, dialect), seq, sid)
    if kind == "unknown_event":
        return dumps({"event": rng.choice(["foo", "MEDIA", "media ", "websocket:foo", "", "start2", "clear"]),
                      "streamSid": sid, "media": {"payload": "AAAA"}})  # fmt: skip
    if kind == "binary_for_text":
        return rng.choice([dumps(template).encode(), rng.randbytes(rng.randint(1, 64))])
    if kind == "text_for_binary":
        return b64(rng.randbytes(dialect.frame_bytes)) if dialect.binary_audio else dumps({"payload": "AAAA"})
    if kind == "not_json":
        return rng.choice(["", "null", "[]", "42", '"event"', "{", "}", "{'event': 'media'}", "event=media",
                           "\ufeff{}", "NaN", "[" * 50])  # fmt: skip
    if kind == "deep_nesting":
        depth = rng.choice([100, 1000, 5000])
        return '{"event":"media","media":' + "[" * depth + "]" * depth + "}"
    if kind == "huge":
        return dumps({"event": "unknown", "junk": "x" * rng.randint(60_000, 200_000)})
    if kind == "media_before_start" or kind == "second_start":  # sequence-dependent: the caller places them
        return dialect.start(sid, call, {"bench_call": "fuzzc"}) if kind == "second_start" else base_text
    if kind == "unknown_mark":
        return dialect.mark_echo(rng.choice(["g9m9", "", "x" * 300, "g0m0", "\u00e9"]), sid)
    if kind == "bad_dtmf":
        return _dtmf_with(dialect, sid, rng.choice(["", "55", "x", 10, None, ["1"], "\u0663"]))
    if kind == "odd_numbers":
        text = dumps(template)
        for key in ("sampleRate", "sample_rate", "channels", "timestamp", "chunk", "sequenceNumber"):
            text = text.replace(
                f'"{key}":', f'"{key}":' + rng.choice(["1e999,", "NaN,", "-0,", '"\u00b2",', "1.5,"]), 1
            )
        return text
    if kind == "empty":
        return rng.choice(["", "{}", '{"event":null}', '{"event":"media"}', '{"event":"start"}'])
    if kind == "control_chars":
        return dumps(template).replace('"', '"\u0000\u001f', 1)
    if kind == "over_cap":  # past server.max_message_bytes: the bridge closes with 1009
        return dumps({"event": "media", "media": {"payload": "A" * 300_000}})
    if kind == "bad_utf8":  # a text frame that is not UTF-8: the WebSocket library closes with 1007
        return b"\xff\xfe{" + rng.randbytes(8)
    if kind == "bad_start":  # a start the bridge cannot use: the call ends with 1003 or 1008
        bad = json.loads(dialect.start(sid, call, {"bench_call": "fuzzc"}))
        for path in _paths(bad):
            if path[-1] in ("encoding", "sampleRate", "sample_rate", "content-type", "streamSid", "stream_id",
                            "streamId", "stream_sid", "bit_rate"):  # fmt: skip
                bad = _set(bad, path, rng.choice(["opus", 0, -8000, "", None, "audio/l16;rate=\u00b2"]))
                break
        return dumps(bad)
    raise ValueError(kind)


def _dtmf_with(dialect: Dialect, sid: str, digit: Any) -> str:
    if dialect.name == "vonage":
        return dumps({"event": "websocket:dtmf", "digit": digit})
    return dumps({"event": "dtmf", "streamSid": sid, "dtmf": {"digit": digit}})


def is_text(frame: Frame, kind: str) -> bool:
    """Whether to send ``frame`` as a text frame (``bad_utf8`` bytes are sent as text on purpose)."""
    return isinstance(frame, str) or kind == "bad_utf8"


# --- the Realtime server's events, valid and mutated ------------------------------------------------

MODEL_KINDS: dict[str, int] = {
    "truncated": 10, "wrong_type": 12, "missing_field": 8, "invalid_base64": 14, "unknown_event": 8,
    "binary": 5, "not_json": 5, "deep_nesting": 2, "huge": 1, "out_of_order": 14, "error_event": 6,
    "function_call": 5, "repeated_session_updated": 2, "control_chars": 2,
}  # fmt: skip
#: Kinds that cost the bridge its model session (it reconnects) or end the call by design.
ENDING_MODEL_KINDS = frozenset({"bad_utf8", "close", "fatal_error"})


def model_templates(rng: random.Random, rid: str, iid: str, delta_b64: str) -> list[dict[str, Any]]:
    return [
        {"type": "response.output_audio.delta", "event_id": "e1", "response_id": rid, "item_id": iid,
         "output_index": 0, "content_index": 0, "delta": delta_b64},
        {"type": "response.created", "event_id": "e2", "response": {"id": rid, "status": "in_progress"}},
        {"type": "response.done", "event_id": "e3", "response": {"id": rid, "status": "completed",
         "usage": {"total_tokens": 10, "input_tokens": 6, "output_tokens": 4,
                   "input_token_details": {"audio_tokens": 3, "text_tokens": 3, "cached_tokens": 0},
                   "output_token_details": {"audio_tokens": 4, "text_tokens": 0}}}},
        {"type": "input_audio_buffer.speech_started", "event_id": "e4", "audio_start_ms": 1200, "item_id": iid},
        {"type": "input_audio_buffer.speech_stopped", "event_id": "e5", "audio_end_ms": 2300, "item_id": iid},
        {"type": "conversation.item.truncated", "event_id": "e6", "item_id": iid, "content_index": 0,
         "audio_end_ms": 500},
        {"type": "conversation.item.input_audio_transcription.completed", "event_id": "e7", "item_id": iid,
         "content_index": 0, "transcript": "hello", "usage": {"type": "duration", "seconds": 1.2}},
        {"type": "response.output_audio_transcript.done", "event_id": "e8", "response_id": rid, "item_id": iid,
         "transcript": "hi there"},
        {"type": "error", "event_id": "e9", "error": {"type": "invalid_request_error", "code": "x",
                                                      "message": "m", "param": None, "event_id": None}},
    ]  # fmt: skip


def mutate_model(rng: random.Random, kind: str, rid: str, iid: str, delta_b64: str) -> Frame:
    templates = model_templates(rng, rid, iid, delta_b64)
    template = rng.choice(templates)
    if kind == "truncated":
        text = dumps(template)
        return text[: rng.randrange(0, len(text))]
    if kind == "wrong_type":
        paths = _paths(template)
        return dumps(_set(template, rng.choice(paths), rng.choice(ODD_VALUES)))
    if kind == "missing_field":
        paths = [p for p in _paths(template) if p != ("type",)]
        return dumps(_set(template, rng.choice(paths), None, delete=True))
    if kind == "invalid_base64":
        return dumps({**templates[0], "delta": rng.choice([*JUNK_PAYLOADS, "A" * 700_001])})
    if kind == "unknown_event":
        return dumps({"type": rng.choice(["response.future_thing", "rate_limits.updated", "", "x" * 200,
                                          "response.output_audio.delta.v2"]), "event_id": "u"})  # fmt: skip
    if kind == "binary":
        return rng.choice([dumps(template).encode(), rng.randbytes(rng.randint(1, 64))])
    if kind == "not_json":
        return rng.choice(["", "null", "[]", "{", "type=error", "[" * 40, "\ufeff{}", "NaN"])
    if kind == "deep_nesting":
        depth = rng.choice([200, 2000, 20000])
        return '{"type":"response.done","response":' + "[" * depth + "]" * depth + "}"
    if kind == "huge":  # well under realtime.max_message_bytes (16 MiB): a big, useless event
        return dumps({"type": "response.output_audio_transcript.done", "item_id": iid, "response_id": rid,
                      "transcript": "x" * rng.randint(100_000, 1_000_000)})  # fmt: skip
    if kind == "out_of_order":
        return dumps(rng.choice([
            {**templates[0], "response_id": "resp_never_created"},  # a delta of an unknown response
            {**templates[0], "item_id": "item_unknown"},
            {"type": "response.done", "response": {"id": "resp_unknown", "status": "cancelled"}},
            {"type": "response.output_audio.done", "response_id": "resp_unknown", "item_id": iid},
            templates[3], templates[4],  # speech events out of the blue
            {"type": "conversation.item.truncated", "item_id": "never_sent", "audio_end_ms": 10**9},
            {"type": "input_audio_buffer.committed", "item_id": "x", "previous_item_id": None},
            {"type": "session.created", "session": {}},
        ]))  # fmt: skip
    if kind == "error_event":
        code = rng.choice(["response_cancel_not_active", "conversation_already_has_active_response",
                           "input_audio_buffer_commit_empty", "invalid_value", "rate_limit_exceeded",
                           "server_error", None, 5, ""])  # fmt: skip
        return dumps({"type": "error", "error": {"type": rng.choice(["invalid_request_error", None, 3]),
                                                 "code": code, "message": rng.choice(["m", None, 7]),
                                                 "param": rng.choice([None, "item_id", 9])}})  # fmt: skip
    if kind == "function_call":
        name = rng.choice(["end_call_maybe", "lookup", "", "transfer_call", "x" * 100])
        args = rng.choice(["{", "[]", '{"a":1}', "null", "", '"str"', "{" * 100])
        return dumps({"type": "response.function_call_arguments.done", "response_id": rid, "item_id": iid,
                      "call_id": f"call_{rng.randint(1, 9)}", "name": name, "arguments": args})  # fmt: skip
    if kind == "repeated_session_updated":
        pcm = {"format": {"type": "audio/pcm"}}  # not the pcmu the bridge asked for
        return dumps({"type": "session.updated", "session": {"audio": {"input": pcm, "output": pcm}}})
    if kind == "control_chars":
        return dumps(template).replace('"', '"\u0000\u0007', 1)
    if kind == "bad_utf8":  # the bridge's WebSocket client closes the session (1007); it reconnects
        return b"\xc3\x28" + rng.randbytes(6)
    if kind == "fatal_error":  # no new session would fix it: the call ends with model_error
        return dumps({"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_api_key",
                                                 "message": "bench: fatal on purpose"}})  # fmt: skip
    raise ValueError(kind)


def weighted(rng: random.Random, weights: dict[str, int]) -> str:
    kinds = list(weights)
    return rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
