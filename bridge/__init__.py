"""bridge: phone calls (carrier media streams) to OpenAI Realtime sessions, on trio."""

from __future__ import annotations

from functools import cache

__all__ = ["__version__"]


@cache
def _version() -> str:
    # importlib.metadata costs ~30 ms to import; only --version and the metrics need it.
    from importlib import metadata

    try:
        return metadata.version("bridge")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
