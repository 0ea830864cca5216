"""Hypothesis profiles for the property-based fuzz tests.

``fast`` (the default) keeps the whole set to seconds in the normal test run; ``long`` is for a
fuzzing session (``BRIDGE_FUZZ_PROFILE=long python -m pytest tests/fuzz``, see bench/README.md).
``BRIDGE_FUZZ_EXAMPLES=N`` overrides the number of examples of whichever profile is chosen.

No example database: a failure prints the ``@reproduce_failure`` blob to paste instead, and the
repository stays free of a ``.hypothesis`` directory.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # a shared machine: timing says nothing about correctness here
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
# derandomize: the suite explores the same examples on every run, so CI cannot fail by chance;
# the long profile (and BRIDGE_FUZZ_EXAMPLES) explores new ones each time.
settings.register_profile("fast", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=5_000, **_COMMON)

_profile = os.environ.get("BRIDGE_FUZZ_PROFILE", "fast")
_examples = os.environ.get("BRIDGE_FUZZ_EXAMPLES")
if _examples:
    settings.register_profile("custom", parent=settings.get_profile(_profile), max_examples=int(_examples))
    _profile = "custom"
settings.load_profile(_profile)


def pytest_collection_modifyitems(config: object, items: list[pytest.Item]) -> None:
    """A long fuzzing session runs past the suite's per-test timeout (pyproject's 120 s): lift it."""
    if _profile == "fast":
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.timeout(0))
