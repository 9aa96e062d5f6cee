from __future__ import annotations

from pathlib import Path

import pytest

from metatree import Storage, as_storage
from metatree.testing.conformance import BackendConformance


class TestLocal(BackendConformance):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return as_storage(str(tmp_path / "db"))
