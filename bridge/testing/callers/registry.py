"""The simulated calls in progress, so a fake of a carrier's REST API can act on them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CallUpdate:
    """What a REST update of a live call asked for (``POST .../Calls/{CallSid}.json``)."""

    twiml: str | None = None  # the Twiml parameter
    targets: tuple[str, ...] = ()  # what its <Dial> dials (numbers, SIP URIs, clients)
    url: str | None = None  # the Url parameter
    status: str | None = None  # the Status parameter ("completed": hang up)


@dataclass
class LiveCall:
    """A simulated call in progress, as the carrier's REST API sees it (see :class:`CallRegistry`)."""

    call_sid: str
    account_sid: str
    stream_sid: str
    end_stream: Callable[[CallUpdate], None]
    """The carrier changed the call (new TwiML, a URL, or ``Status=completed``): the stream must end."""


class CallRegistry:
    """The simulated calls in progress by call id, so a fake of Twilio's REST API can act on them
    the way Twilio acts on a real call: a redirect ends the call's media stream (``stop``, then the
    WebSocket closes). Calls register themselves for as long as ``run_call`` runs."""

    _ENDED_KEPT = 10_000

    def __init__(self) -> None:
        self._live: dict[str, LiveCall] = {}
        self._ended: dict[str, str] = {}  # call_sid -> account_sid, most recent last

    def add(self, call: LiveCall) -> None:
        self._live[call.call_sid] = call

    def remove(self, call_sid: str) -> None:
        call = self._live.pop(call_sid, None)
        if call is not None:
            self._ended[call_sid] = call.account_sid
            while len(self._ended) > self._ENDED_KEPT:
                del self._ended[next(iter(self._ended))]

    def live(self, call_sid: str) -> LiveCall | None:
        return self._live.get(call_sid)

    def ended_account(self, call_sid: str) -> str | None:
        """The account of a call that was live here and has ended (None: never seen, or live)."""
        return self._ended.get(call_sid)


LIVE_CALLS = CallRegistry()
"""Where simulated calls register unless ``CallerOptions.registry`` names another registry."""
