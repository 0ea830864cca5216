"""A fake of Twilio's REST endpoint for changing a live call, for tests and ``bridge demo``.

``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with HTTP basic auth and a
form body (``Twiml=<Response><Dial>…</Dial></Response>``, or ``Url=``, or ``Status=completed``),
answered as Twilio answers (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource):
200 with the call resource as JSON, 401 for bad credentials (error 20003), 404 for a call it does
not know (20404), 400 for a call that has ended (21220) or TwiML that does not parse (12100).

It acts on the simulated callers of :mod:`bridge.testing.caller` through their
:class:`~bridge.testing.caller.CallRegistry`: a successful update ends that call's media stream
the way Twilio does ("a live ``<Connect><Stream>`` ends when the call is redirected": ``stop``,
then the WebSocket closes), and the caller's result records the redirect.

``failure`` makes it fail on purpose: an HTTP status (for example 500) or ``"close"`` (close the
connection without answering).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from typing import Any, Final, Literal
from urllib.parse import parse_qs

import trio

from bridge.testing.caller import LIVE_CALLS, CallRegistry, CallUpdate
from bridge.testing.http_fake import FakeHttpServer, RecordedRequest, Reply

API_VERSION: Final = "2010-04-01"
_CALL_PATH: Final = re.compile(rf"^/{API_VERSION}/Accounts/(AC[0-9a-fA-F]{{32}})/Calls/(CA[0-9a-fA-F]{{32}})\.json$")
_DIAL_NOUNS: Final = ("Number", "Sip", "Client", "Conference", "Queue", "Application", "WhatsApp")


@dataclass
class CallUpdateRequest:
    """One request to the call update endpoint, as the fake saw and answered it."""

    account_sid: str
    call_sid: str
    auth_user: str | None  # the basic-auth user name (never the password)
    form: dict[str, str]  # the form fields (first value of each)
    update: CallUpdate | None  # the parsed update (None when refused before parsing)
    status: int | None  # the HTTP status answered (None: the connection was closed instead)
    at: float  # trio clock

    @property
    def twiml(self) -> str | None:
        return self.form.get("Twiml")

    @property
    def dial(self) -> tuple[str, ...]:
        return self.update.targets if self.update is not None else ()


def dial_targets(twiml: str) -> tuple[str, ...]:
    """What a ``<Response>``'s ``<Dial>`` verbs dial: their text, or their nouns' (``<Number>``,
    ``<Sip>``, ...). Raises ``ValueError`` when the TwiML is not a well-formed ``<Response>``."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise ValueError(f"TwiML does not parse: {exc}") from None
    if root.tag != "Response":
        raise ValueError(f"TwiML root is <{root.tag}>, not <Response>")
    targets: list[str] = []
    for dial in root.iter("Dial"):
        nouns = [child for child in dial if child.tag in _DIAL_NOUNS]
        if nouns:
            targets.extend((n.text or "").strip() for n in nouns)
        elif dial.text and dial.text.strip():
            targets.append(dial.text.strip())
    return tuple(targets)


def _error(status: int, code: int, message: str) -> Reply:
    # Twilio's error body (https://www.twilio.com/docs/usage/twilios-response#response-formats-exceptions).
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Reply(status, body)


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class FakeTwilioRest:
    """Twilio's call update endpoint on loopback. Point bridge's ``twilio.api_base_url`` at
    :attr:`base_url`. Accepted credentials: the URL's Account SID with ``auth_token``, or any
    ``api_keys`` pair (API key SID, secret). ``requests`` records every call update request."""

    def __init__(
        self,
        *,
        auth_token: str = "twilio-test-auth-token",
        api_keys: Mapping[str, str] | None = None,
        registry: CallRegistry | None = None,
    ) -> None:
        self.auth_token = auth_token
        self.api_keys = dict(api_keys or {})
        self.registry = registry or LIVE_CALLS
        self.failure: int | Literal["close"] | None = None
        self.requests: list[CallUpdateRequest] = []
        self.http = FakeHttpServer(self._handle, name="fake Twilio REST")

    @property
    def base_url(self) -> str:
        return self.http.base_url

    @property
    def port(self) -> int:
        return self.http.port

    def redirects(self) -> list[CallUpdateRequest]:
        """The updates that were accepted (200) and applied to a live call."""
        return [r for r in self.requests if r.status == 200]

    def _authorised(self, account_sid: str, request: RecordedRequest) -> tuple[bool, str | None]:
        creds = _basic_auth(request.header("authorization"))
        if creds is None:
            return False, None
        user, password = creds
        if user == account_sid:
            expected = self.auth_token
        elif user in self.api_keys:
            expected = self.api_keys[user]
        else:
            return False, user
        return hmac.compare_digest(password.encode(), expected.encode()), user

    def _handle(self, request: RecordedRequest) -> Reply:
        match = _CALL_PATH.match(request.path)
        if match is None:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        account_sid, call_sid = match.groups()
        record = CallUpdateRequest(account_sid, call_sid, None, {}, None, None, request.received_at)
        self.requests.append(record)
        reply = self._update(request, record, account_sid, call_sid)
        record.status = reply.status if reply.action == "answer" else None
        return reply

    def _update(self, request: RecordedRequest, record: CallUpdateRequest, account_sid: str, call_sid: str) -> Reply:
        if self.failure == "close":
            return Reply(action="close")
        ok, record.auth_user = self._authorised(account_sid, request)
        if not ok:
            return _error(401, 20003, "Authenticate")
        if isinstance(self.failure, int):
            return _error(self.failure, 20500, "An internal server error has occurred")
        if request.method != "POST":
            return _error(405, 20004, "Method not allowed")
        live = self.registry.live(call_sid)
        if live is None or live.account_sid != account_sid:
            if self.registry.ended_account(call_sid) == account_sid:
                return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        record.form = form
        twiml = form.get("Twiml")
        try:
            targets = dial_targets(twiml) if twiml is not None else ()
        except ValueError as exc:
            return _error(400, 12100, f"Document parse failure: {exc}")
        update = CallUpdate(twiml=twiml, targets=targets, url=form.get("Url"), status=form.get("Status"))
        record.update = update
        ends = twiml is not None or update.url is not None or update.status in ("completed", "canceled")
        if ends:
            live.end_stream(update)
        return Reply(200, self._call_resource(account_sid, call_sid, update))

    @staticmethod
    def _call_resource(account_sid: str, call_sid: str, update: CallUpdate) -> dict[str, Any]:
        return {
            "sid": call_sid,
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "status": "completed" if update.status in ("completed", "canceled") else "in-progress",
            "direction": "inbound",
            "date_updated": formatdate(usegmt=True),
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}.json",
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.http.run(task_status=task_status)


@asynccontextmanager
async def open_twilio_rest(
    *,
    auth_token: str = "twilio-test-auth-token",
    api_keys: Mapping[str, str] | None = None,
    registry: CallRegistry | None = None,
) -> AsyncIterator[FakeTwilioRest]:
    """``async with open_twilio_rest(auth_token=t) as rest: ... rest.base_url``."""
    server = FakeTwilioRest(auth_token=auth_token, api_keys=api_keys, registry=registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.run))
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


__all__ = ["API_VERSION", "CallUpdateRequest", "FakeTwilioRest", "dial_targets", "open_twilio_rest"]
