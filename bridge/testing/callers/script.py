"""What a simulated caller says, step by step: speech, silence, waiting for the reply."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bridge.audio.wavfile import Wav

AudioSpec = Wav | str | Path | bytes | None
"""A recording: a :class:`Wav`, a WAV file's path, raw samples in the call's format, or None for
the bundled caller recording (converted to the call's format)."""


@dataclass(frozen=True)
class Say:
    """Send a recording (None: the call's recording) as speech frames."""

    audio: AudioSpec = None


@dataclass(frozen=True)
class Pause:
    """Send silence frames for ``ms`` milliseconds."""

    ms: int


@dataclass(frozen=True)
class WaitForReply:
    """Send silence until the assistant's reply has finished playing, at most ``timeout_ms``.

    "Finished": some media arrived after the caller's last voiced frame (or after the wait
    began, if the caller has not spoken) and the playback buffer has then been empty for
    ``settle_ms`` (default: the options' ``reply_settle_ms``). Frames are paced in real time
    even with ``realtime=False``, because the reply plays in real time.
    """

    timeout_ms: int
    settle_ms: int | None = None


Step = Say | Pause | WaitForReply
