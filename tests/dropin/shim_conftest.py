"""The conftest of the run of metatreedb's suite (copied in beside it as ``conftest.py``).

metatreedb 0.2.3 installs its code as the package ``metatree``, our name, so its
``from metatree import Metatree`` already imports ours. Its file also imports its private
``metatree.io_handler`` at the top, for the one test of that module; metatree has no such
module, so a stub stands in for it in that run only (it never reaches our own test session),
and exactly that test is skipped, by name, with the reason below.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Sequence

PRIVATE_MODULE = "metatree.io_handler"
SKIPPED = "test_custom_io_handler"
REASON = (
    "tests metatreedb's private io_handler module (a YAML metadata handler), which is not "
    "part of its public API and has no counterpart in metatree"
)


class _Unsupported:
    """Stands for metatreedb's handler classes: importable, refused when used."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError(f"{PRIVATE_MODULE} is metatreedb's private module")


def pytest_configure(config: pytest.Config) -> None:
    """Make ``from metatree.io_handler import LocalYamlHandler`` importable (a stub)."""
    stub = types.ModuleType(PRIVATE_MODULE, "A stub of metatreedb's private module.")
    stub.LocalYamlHandler = _Unsupported  # type: ignore[attr-defined]
    sys.modules[PRIVATE_MODULE] = stub


def pytest_collection_modifyitems(config: pytest.Config, items: Sequence[pytest.Item]) -> None:
    """Skip the one test of the private module, by its name."""
    for item in items:
        if item.name == SKIPPED:
            item.add_marker(pytest.mark.skip(reason=REASON))
