from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from metatree import Storage, as_storage
from metatree.testing.conformance import BackendConformance

if TYPE_CHECKING:
    from pathlib import Path


class TestLocal(BackendConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return as_storage(str(tmp_path / "db"))
