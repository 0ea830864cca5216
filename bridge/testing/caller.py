"""The simulated caller's first home, kept so existing imports go on working.

Everything lives in :mod:`bridge.testing.callers` now (one engine, one module per carrier);
this module re-exports its names. ``bridge call`` runs :func:`main`.
"""

from bridge.testing.callers import (
    ALAW,
    LIVE_CALLS,
    MULAW,
    CallerOptions,
    CallRegistry,
    CallResult,
    CallUpdate,
    ClearEvent,
    Credentials,
    InterruptEvent,
    LiveCall,
    MarkEvent,
    Pause,
    PlaybackBuffer,
    Say,
    Step,
    Utterance,
    WaitForReply,
    build_parser,
    main,
    result_to_dict,
    run_call,
    summarise,
)

__all__ = [
    "ALAW",
    "LIVE_CALLS",
    "MULAW",
    "CallRegistry",
    "CallResult",
    "CallUpdate",
    "CallerOptions",
    "ClearEvent",
    "Credentials",
    "InterruptEvent",
    "LiveCall",
    "MarkEvent",
    "Pause",
    "PlaybackBuffer",
    "Say",
    "Step",
    "Utterance",
    "WaitForReply",
    "build_parser",
    "main",
    "result_to_dict",
    "run_call",
    "summarise",
]
