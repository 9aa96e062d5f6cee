"""metatreedb 0.2.3's own tests pass against metatree, unchanged (docs/differences.md).

Each of its tests is one case here, so a failure names it and shows its traceback. The only
one not run is its test of metatreedb's private ``io_handler`` module, skipped by name in
`tests.dropin.shim_conftest` with the reason given there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.dropin.shim_conftest import REASON, SKIPPED

if TYPE_CHECKING:
    from tests.dropin.upstream import SuiteRun

UPSTREAM = (
    "test_put",
    "test_find",
    "test_get",
    "test_list",
    "test_update",
    "test_dict_query",
    "test_string_query",
    "test_download",
    "test_custom_io_handler",
    "test_lock",
)
"""Its tests, in file order (they share a session fixture and depend on that order)."""

pytestmark = pytest.mark.timeout(300)  # a first download, then its test_lock waits 5 s


def test_runs_exactly_its_tests(suite_run: SuiteRun) -> None:
    assert list(suite_run.outcomes) == list(UPSTREAM), suite_run.output


@pytest.mark.parametrize("name", [n for n in UPSTREAM if n != SKIPPED])
def test_passes(suite_run: SuiteRun, name: str) -> None:
    outcome = suite_run.outcomes.get(name)
    assert outcome is not None, f"{name} did not run:\n{suite_run.output}"
    assert outcome.status == "passed", f"{name} {outcome.status}:\n{outcome.detail}"


def test_skips_only_its_private_module_test(suite_run: SuiteRun) -> None:
    outcome = suite_run.outcomes.get(SKIPPED)
    assert outcome is not None, suite_run.output
    assert outcome.status == "skipped"
    assert REASON in outcome.detail
    assert suite_run.returncode == 0, suite_run.output
