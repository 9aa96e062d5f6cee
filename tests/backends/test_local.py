from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from metatree import Storage, as_storage
from metatree.testing import BackendTests
from metatree.testing._stateful import StatefulTests
from metatree.testing.conformance import BackendConformance

if TYPE_CHECKING:
    from pathlib import Path


class _Storage:
    """Where every test of this module stores: local disk."""

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return as_storage(str(tmp_path / "db"))


class TestLocal(_Storage, BackendConformance):
    # memory runs 40 programs; on disk 25 keep the suite's time in check
    state_machine_settings = settings(StatefulTests.state_machine_settings, max_examples=25)


class TestBackend(_Storage, BackendTests):
    """The primitives on local disk."""
