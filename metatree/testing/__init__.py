"""Testing support shipped with metatree: the backend suites and test servers.

Registered as a pytest plugin (entry point ``pytest11``), it adds nothing by itself. A
backend's test module subclasses `BackendTests` (its primitives) and `BackendConformance`
(the database on them); see docs/backends.md. Both are imported on first use, so that
importing the test servers does not import pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metatree.testing.backend_tests import BackendTests
    from metatree.testing.conformance import BackendConformance

__all__ = ["BackendConformance", "BackendTests"]


def __getattr__(name: str) -> Any:
    if name == "BackendTests":
        from metatree.testing.backend_tests import BackendTests

        return BackendTests
    if name == "BackendConformance":
        from metatree.testing.conformance import BackendConformance

        return BackendConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
