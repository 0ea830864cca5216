"""TwiML for the voice webhook. Pure.

``/twiml`` answers Twilio's voice webhook with ``<Connect><Stream>`` pointing back at our
``/media`` WebSocket. Profile routing happens here: the webhook carries ``To``/``From``, the
media stream does not, so the chosen profile travels as a ``<Parameter>``. When every worker is
full the answer is an overflow document instead: ``<Say>`` then ``<Hangup/>``, or ``<Redirect>``
to another number's TwiML (https://www.twilio.com/docs/voice/twiml). The request signature is in
:mod:`bridge.carrier.twilio_signature`.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

# Twilio: "The combined length of each <Parameter> name and value must be under 500 characters."
MAX_PARAMETER_LENGTH = 499
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'


def connect_stream(url: str, parameters: Mapping[str, str]) -> str:
    """``<Response><Connect><Stream url=...>`` with ``<Parameter>`` children."""
    params = []
    for name, value in parameters.items():
        if len(name) + len(value) > MAX_PARAMETER_LENGTH:
            value = value[: max(0, MAX_PARAMETER_LENGTH - len(name))]
        params.append(f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>")
    return (
        f"{_XML_HEAD}<Response><Connect><Stream url={quoteattr(url)}>{''.join(params)}</Stream></Connect></Response>"
    )


def dial(destination: str) -> str:
    """``<Response><Dial>`` for a transfer: a number, a ``sip:`` URI or a ``client:`` name."""
    if destination.startswith(("sip:", "sips:")):
        noun = f"<Sip>{escape(destination)}</Sip>"
    elif destination.startswith("client:"):
        noun = f"<Client>{escape(destination.removeprefix('client:'))}</Client>"
    else:
        noun = f"<Number>{escape(destination)}</Number>"
    return f"<Response><Dial>{noun}</Dial></Response>"


def say_and_hang_up(message: str) -> str:
    """``<Say>message</Say><Hangup/>``: what a caller hears when no worker can take the call."""
    return f"{_XML_HEAD}<Response><Say>{escape(message)}</Say><Hangup/></Response>"


def redirect(url: str) -> str:
    """``<Redirect method="POST">url</Redirect>``: Twilio fetches that URL's TwiML instead."""
    return f'{_XML_HEAD}<Response><Redirect method="POST">{escape(url)}</Redirect></Response>'
