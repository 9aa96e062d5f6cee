"""Testing support shipped with metatree: the backend conformance suite and test servers.

Registered as a pytest plugin (entry point ``pytest11``), it adds nothing by itself; import
`metatree.testing.conformance` to subclass the suite for another backend.
"""

from __future__ import annotations

__all__: list[str] = []
