"""Fixtures of the differential tests: a virtualenv holding metatreedb 0.2.3, the reference."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from metatree.testing.reference import ReferenceUnavailable, ensure_reference_venv, venv_python

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="session")
def metatreedb_python() -> Path:
    """The python of a virtualenv with metatreedb 0.2.3 (skips when it cannot be installed)."""
    try:
        return venv_python(ensure_reference_venv())
    except ReferenceUnavailable as exc:
        pytest.skip(str(exc))
