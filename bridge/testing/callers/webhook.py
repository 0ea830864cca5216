"""The carrier's voice webhook, simulated: the request a carrier sends, and its answer parsed. Pure.

A carrier asks the bridge what to do with a new call (``/{carrier}/answer``) and follows the
document it gets back: TwiML, TeXML, Plivo XML or cXML name a stream URL and its custom
parameters; Vonage answers an NCCO (JSON) and Exotel ``{"url": ...}``. Each carrier's caller
module writes its webhook request (:class:`WebhookRequest`, signed as the carrier signs it) and
reads its answer into a :class:`StreamSetup`, raising :class:`AnswerError` when the document is
not one the carrier would follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit
from xml.etree import ElementTree

from bridge.testing.callers.options import CallerOptions, Credentials


class AnswerError(ValueError):
    """The answer document is not what the carrier expects."""


@dataclass(frozen=True)
class WebhookCall:
    """A new call as the carrier's voice webhook describes it."""

    call_sid: str
    from_number: str = "+15550100001"
    to_number: str = "+15550100002"
    account_sid: str = "AC00000000000000000000000000000000"


@dataclass(frozen=True)
class WebhookRequest:
    """One HTTP request to the answer URL (``url`` includes the query of a GET)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class StreamSetup:
    """What the answer document tells the carrier to do, parsed.

    ``url`` is the stream URL as the document names it (the carrier connects there and signs
    it as is); ``params`` what the carrier carries from the document to the stream, in its own
    terms (``<Parameter>``s, Plivo's ``extraHeaders`` pairs, the NCCO's ``headers``, Exotel's
    query); ``attributes`` the stream element's settings as written, for checking.
    """

    carrier: str
    url: str = field(repr=False)  # Exotel's holds its credentials
    audio_format: str
    params: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict, repr=False)  # may hold a token
    bearer_token: str | None = field(default=None, repr=False)  # SignalWire's authBearerToken
    basic: tuple[str, str] | None = field(default=None, repr=False)  # Exotel: user-info in the URL
    authorization: bool = False  # Vonage: the NCCO asks for the signed JWT on the upgrade

    def caller_options(
        self, call: WebhookCall | None = None, *, insecure: bool = False, **overrides: object
    ) -> CallerOptions:
        """Options for the call this document starts. ``insecure``: connect the stream over plain
        ``ws://`` (a loopback bridge without TLS); the URL is still signed as written."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rpartition("@")[2]
        written = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        scheme = {"wss": "ws"}.get(parts.scheme, parts.scheme) if insecure else parts.scheme
        fields: dict[str, object] = {
            "url": urlunsplit((scheme, netloc, parts.path, parts.query, "")),
            "signed_url": written,
            "carrier": self.carrier,
            "audio_format": self.audio_format,
            "params": dict(self.params),
            "bearer_token": self.bearer_token,
        }
        if self.basic is not None:
            fields["credentials"] = Credentials(self.basic[1], user=self.basic[0])
        if call is not None:
            fields.update(call_sid=call.call_sid, from_number=call.from_number, to_number=call.to_number)
        fields.update(overrides)
        return CallerOptions(**fields)  # type: ignore[arg-type]


# --- reading answer documents ---------------------------------------------------------------------


def xml_root(body: bytes, carrier: str) -> ElementTree.Element:
    """The ``<Response>`` of an XML answer (the bridge's own document: trusted, small)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise AnswerError(f"{carrier} answer is not XML: {exc}") from None
    if root.tag != "Response":
        raise AnswerError(f"{carrier} answer's root is <{root.tag}>, not <Response>")
    return root


def connect_stream(root: ElementTree.Element, carrier: str) -> ElementTree.Element:
    """The one ``<Connect><Stream>`` of a TwiML-style answer, checked."""
    verbs = list(root)
    if [v.tag for v in verbs] != ["Connect"]:
        raise AnswerError(f"{carrier} answer has {[v.tag for v in verbs]}, expected one <Connect>")
    streams = list(verbs[0])
    if [s.tag for s in streams] != ["Stream"]:
        raise AnswerError(f"{carrier} <Connect> holds {[s.tag for s in streams]}, expected one <Stream>")
    stream = streams[0]
    if not stream.get("url"):
        raise AnswerError(f"{carrier} <Stream> without a url")
    return stream


def stream_parameters(stream: ElementTree.Element, carrier: str) -> dict[str, str]:
    """``<Parameter name value/>`` children, as ``customParameters`` will carry them."""
    params: dict[str, str] = {}
    for child in stream:
        if child.tag != "Parameter" or child.get("name") is None or child.get("value") is None:
            raise AnswerError(f"{carrier} <Stream> holds <{child.tag} {dict(child.attrib)}>, not a <Parameter>")
        params[child.get("name", "")] = child.get("value", "")
    return params


def user_info(url: str) -> tuple[str, str] | None:
    """``(user, password)`` written into ``url`` (``wss://user:password@host/...``)."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


def credentials_secret(credentials: Credentials | None) -> str | None:
    return credentials.secret if credentials is not None else None
