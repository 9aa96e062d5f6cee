"""Fixtures of the drop-in tests: one run of metatreedb 0.2.3's own suite per session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.dropin.upstream import SuiteRun, SuiteUnavailable, fetch_suite, run_suite

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="session")
def metatreedb_suite() -> Path:
    """metatreedb 0.2.3's test file (skips, with pip's error, when it cannot be downloaded)."""
    try:
        return fetch_suite()
    except SuiteUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def suite_run(metatreedb_suite: Path, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """The outcome of each of its tests, run against metatree."""
    return run_suite(metatreedb_suite, tmp_path_factory.mktemp("metatreedb-suite"))
