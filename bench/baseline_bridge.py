"""The baseline bridge: a minimal FastAPI + uvicorn + websockets passthrough, for bench/load_bench.py.

This is the shape of Twilio's popular Python sample (FastAPI + uvicorn + websockets, one asyncio
task per direction per call; https://github.com/twilio-samples/speech-assistant-openai-realtime-api-python,
``main.py``), written here from the two protocols it joins:

* the carrier side is a Twilio Media Streams WebSocket (JSON ``connected``, ``start``, ``media``,
  ``mark``, ``stop``; https://www.twilio.com/docs/voice/media-streams/websocket-messages);
* the model side is the OpenAI Realtime API, GA event names
  (https://platform.openai.com/docs/api-reference/realtime-client-events): ``session.update``
  with ``audio/pcmu`` in both directions and server VAD, ``input_audio_buffer.append``,
  ``response.output_audio.delta``, ``input_audio_buffer.speech_started``,
  ``conversation.item.truncate``.

Per call: accept the carrier socket, open the model socket, send ``session.update``, then two
tasks. Caller ``media`` payloads go to the model unchanged as ``input_audio_buffer.append``;
each ``response.output_audio.delta`` goes to the caller as a ``media`` message followed by a
``mark`` (as the sample does, to know how much of the answer was played); on
``input_audio_buffer.speech_started`` during an answer the caller gets ``clear`` and the model a
``conversation.item.truncate`` at the point the caller had heard.

It is the baseline bridge must beat, so it is kept minimal but not crippled: one uvicorn process
(no reload, no access log, log level warning), the sample's stack and defaults otherwise
(uvicorn's default asyncio loop and its default WebSocket implementation, on websockets), no
print per message, the websockets client with ``max_size=None`` (the sample's 1 MiB default
could only close a call) and no compression (the audio does not compress; the fake model does
not offer it anyway). Unlike the sample it passes the model's base64 through as it came
instead of decoding and re-encoding it: the sample's round trip is pure overhead.

Run (load_bench starts it for you, pinned to the bridge's CPU):

    python bench/baseline_bridge.py --port 8080 --model-url ws://127.0.0.1:9000/v1/realtime
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

import uvicorn
import websockets
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()
MODEL_URL = os.environ.get("BASELINE_MODEL_URL", "ws://127.0.0.1:9000/v1/realtime?model=gpt-realtime")
SESSION = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy"},
        },
        "instructions": "You are a helpful assistant on a phone call.",
    },
}


@app.get("/")
async def index() -> dict[str, str]:
    return {"message": "baseline bridge"}


@app.websocket("/media")
async def media(carrier: WebSocket) -> None:
    await carrier.accept()
    headers = {"Authorization": "Bearer " + os.environ.get("OPENAI_API_KEY", "")}
    async with websockets.connect(MODEL_URL, additional_headers=headers, max_size=None, compression=None) as model:
        await model.send(json.dumps(SESSION))
        call = Call(carrier, model)
        await asyncio.gather(call.carrier_to_model(), call.model_to_carrier())


class Call:
    """The state of one call, shared by its two directions (both run in the same event loop)."""

    def __init__(self, carrier: WebSocket, model: Any) -> None:
        self.carrier = carrier
        self.model = model
        self.stream_sid: str | None = None
        self.latest_media_ms = 0  # caller audio timestamp of the last frame
        self.answer_item: str | None = None  # the model's item now playing
        self.answer_started_ms: int | None = None  # caller timestamp when that item began
        self.marks: list[str] = []  # marks sent and not yet echoed: audio still queued at the carrier

    async def carrier_to_model(self) -> None:
        try:
            async for text in self.carrier.iter_text():
                msg = json.loads(text)
                event = msg.get("event")
                if event == "media":
                    self.latest_media_ms = int(msg["media"]["timestamp"])
                    await self.model.send(
                        json.dumps({"type": "input_audio_buffer.append", "audio": msg["media"]["payload"]})
                    )
                elif event == "mark":
                    if self.marks:
                        self.marks.pop(0)
                elif event == "start":
                    self.stream_sid = msg["start"]["streamSid"]
                    self.latest_media_ms = 0
                    self.answer_item = None
                    self.answer_started_ms = None
                elif event == "stop":
                    break
        except (WebSocketDisconnect, websockets.ConnectionClosed):
            pass  # either side hung up: the call is over
        finally:
            await self.model.close()  # ends model_to_carrier

    async def model_to_carrier(self) -> None:
        try:
            async for text in self.model:
                event = json.loads(text)
                kind = event.get("type")
                if kind == "response.output_audio.delta":
                    await self.carrier.send_json(
                        {"event": "media", "streamSid": self.stream_sid, "media": {"payload": event["delta"]}}
                    )
                    item = event.get("item_id")
                    if item and item != self.answer_item:
                        self.answer_item = item
                        self.answer_started_ms = self.latest_media_ms
                    await self.carrier.send_json(
                        {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": "responsePart"}}
                    )
                    self.marks.append("responsePart")
                elif kind == "input_audio_buffer.speech_started" and self.answer_item:
                    await self.barge_in()
        except (WebSocketDisconnect, websockets.ConnectionClosed):
            pass  # either side hung up: the call is over
        finally:
            try:
                await self.carrier.close()
            except (WebSocketDisconnect, RuntimeError):
                pass  # the carrier's side is already closed

    async def barge_in(self) -> None:
        """The caller spoke over the answer: stop its playback and tell the model what was heard."""
        if self.marks and self.answer_started_ms is not None:
            heard_ms = self.latest_media_ms - self.answer_started_ms
            await self.model.send(
                json.dumps(
                    {
                        "type": "conversation.item.truncate",
                        "item_id": self.answer_item,
                        "content_index": 0,
                        "audio_end_ms": heard_ms,
                    }
                )
            )
            await self.carrier.send_json({"event": "clear", "streamSid": self.stream_sid})
            self.marks.clear()
        self.answer_item = None
        self.answer_started_ms = None


def main() -> None:
    global MODEL_URL
    p = argparse.ArgumentParser(description="minimal FastAPI + uvicorn + websockets passthrough bridge")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model-url", default=MODEL_URL, help="the Realtime WebSocket URL")
    p.add_argument("--loop", default="auto", help="uvicorn's event loop: auto (the sample's), asyncio or uvloop")
    args = p.parse_args()
    MODEL_URL = args.model_url
    uvicorn.run(app, host=args.host, port=args.port, workers=1, loop=args.loop, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
