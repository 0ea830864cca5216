"""Local voice-activity detection for ``turn_detection = none``. Pure.

Energy with hysteresis, on 10 ms windows: speech starts when the level stays above
``start_dbfs`` for ``start_ms``; it ends when it stays below ``stop_dbfs`` for ``end_silence_ms``.
The gap between the two thresholds keeps a level hovering near one threshold from flapping.
Positions are kept on the caller-audio timeline (ms since the first frame), so the detected
boundaries can be compared with a recording's true ones. Any carrier format works: G.711 is
expanded to linear samples, L16 is read as it is, and a window is 10 ms at the format's rate.
"""

from __future__ import annotations

import binascii
import math
import warnings

from bridge.audio.codec import to_linear
from bridge.audio.formats import AudioError, AudioFormat

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

_WINDOW_MS = 10.0  # the detector's window; its byte size follows the sample rate


class EnergyVad:
    def __init__(self, start_dbfs: float, stop_dbfs: float, start_ms: int, end_silence_ms: int) -> None:
        self._start_rms = 32768.0 * 10 ** (start_dbfs / 20)
        self._stop_rms = 32768.0 * 10 ** (stop_dbfs / 20)
        self._start_ms = start_ms
        self._end_ms = end_silence_ms
        self._pending = b""  # linear samples not yet filling a window
        self.position_ms = 0.0
        self.speaking = False
        self._run_ms = 0.0  # how long the current candidate change has held
        self._run_start = 0.0
        self.last_start_ms: float | None = None  # estimated true onset of the last speech
        self.last_end_ms: float | None = None  # estimated true end of the last speech

    def feed(self, payload_b64: str, fmt: AudioFormat) -> str | None:
        """Feed a carrier payload (base64, in ``fmt``); return "start", "stop" or None."""
        try:
            raw = binascii.a2b_base64(payload_b64, strict_mode=True)
        except ValueError as exc:  # binascii.Error, or non-ASCII characters in a str
            raise AudioError("base64", f"invalid base64: {exc}") from None
        return self.feed_pcm16(to_linear(raw, fmt.encoding), fmt.sample_rate)

    def feed_pcm16(self, lin: bytes, sample_rate: int = 8000) -> str | None:
        """Feed native-endian 16-bit samples at ``sample_rate`` (fixed for a call); return
        "start", "stop" or None for the last change in this chunk."""
        data = self._pending + lin
        change: str | None = None
        step = 2 * sample_rate // 100  # bytes in one 10 ms window
        end = len(data) - len(data) % step
        for off in range(0, end, step):
            rms = audioop.rms(data[off : off + step], 2)
            result = self._window(rms)
            if result is not None:
                change = result
        self._pending = data[end:]
        return change

    def _window(self, rms: float) -> str | None:
        win_ms = _WINDOW_MS
        at = self.position_ms
        self.position_ms += win_ms
        if not self.speaking:
            if rms >= self._start_rms:
                if self._run_ms == 0.0:
                    self._run_start = at
                self._run_ms += win_ms
                if self._run_ms >= self._start_ms:
                    self.speaking = True
                    self._run_ms = 0.0
                    self.last_start_ms = self._run_start
                    return "start"
            else:
                self._run_ms = 0.0
            return None
        if rms < self._stop_rms:
            if self._run_ms == 0.0:
                self._run_start = at
            self._run_ms += win_ms
            if self._run_ms >= self._end_ms:
                self.speaking = False
                self._run_ms = 0.0
                self.last_end_ms = self._run_start
                return "stop"
        else:
            self._run_ms = 0.0
        return None


def dbfs(rms: float) -> float:
    return -120.0 if rms <= 0 else 20 * math.log10(rms / 32768.0)
