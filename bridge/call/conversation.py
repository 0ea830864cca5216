"""What was said so far, kept to seed a replacement Realtime session. Pure.

A Realtime session lives at most 60 minutes and its socket can drop at any time; the call must
go on in a new session that knows the conversation. The API has no way to resume a session, so
the conversation is replayed as items (``conversation.item.create``): the assistant's words (from
its audio transcripts), the caller's words (only where input transcription is on: without it
the caller's audio was never turned into text and cannot be replayed), keypad presses, and tool
calls with their outputs. See https://platform.openai.com/docs/guides/realtime-conversations.

The history is bounded (the newest items win) so a long call's replay stays within the model's
context and its cost (replayed items are billed as input) stays small.
"""

from __future__ import annotations

from collections import deque
from typing import Any

# Enough for the gist of a long call; a replay of this size is a few thousand tokens at most.
MAX_ITEMS = 60
MAX_TEXT_CHARS = 2000  # per item: a runaway transcript or tool output is cut


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + " […]"


class Conversation:
    def __init__(self, max_items: int = MAX_ITEMS) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=max_items)
        self.caller_turns = 0  # caller turns transcribed (so replayable)

    def __len__(self) -> int:
        return len(self._items)

    def user(self, text: str) -> None:
        if text.strip():
            self.caller_turns += 1
            self._items.append(
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": _cut(text)}]}
            )

    def assistant(self, text: str) -> None:
        if text.strip():
            self._items.append(
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": _cut(text)}]}
            )

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        self._items.append({"type": "function_call", "call_id": call_id, "name": name, "arguments": _cut(arguments)})

    def tool_output(self, call_id: str, output: str) -> None:
        self._items.append({"type": "function_call_output", "call_id": call_id, "output": _cut(output)})

    def seed_events(self) -> list[dict[str, Any]]:
        """The ``conversation.item.create`` events that replay the conversation, oldest first.

        An output whose call fell off the bounded history is dropped: the API refuses an output
        for a call it has not seen.
        """
        calls = {i["call_id"] for i in self._items if i["type"] == "function_call"}
        items = [i for i in self._items if i["type"] != "function_call_output" or i["call_id"] in calls]
        return [{"type": "conversation.item.create", "item": dict(item)} for item in items]
