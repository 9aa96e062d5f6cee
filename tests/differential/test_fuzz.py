"""The differential fuzzer in CI: a fixed budget of random programs, and its counterexamples.

`test_random_programs` runs ``METATREE_FUZZ_EXAMPLES`` programs (default 500), derandomised
under ``CI=true`` so that CI runs the same programs every time; ``scripts/fuzz`` runs long
campaigns with seeds. A divergence fails with hypothesis's shrunk program; each one found
so far is a regular test in `COUNTEREXAMPLES`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.differential.fuzz import (
    INTENDED_DIFFERENCES,
    Program,
    RefWorker,
    compare_program,
    programs,
    run_program,
)
from tests.differential.test_differential import INTENDED_DIFFERENCES as DOCUMENTED

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

EXAMPLES = int(os.environ.get("METATREE_FUZZ_EXAMPLES", "500"))
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def ref_worker(metatreedb_python: Path) -> Iterator[RefWorker]:
    """One metatreedb subprocess for all the programs of the module."""
    worker = RefWorker(metatreedb_python)
    yield worker
    worker.close()


def check(program: Program, worker: RefWorker) -> None:
    """Run `program` on both sides; fail with the divergence, if any."""
    verdicts = compare_program(run_program(program, worker))
    assert not verdicts.problems, "\n".join(verdicts.problems)


@settings(
    max_examples=EXAMPLES,
    derandomize=IN_CI,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(program=programs())
def test_random_programs(program: Program, ref_worker: RefWorker) -> None:
    check(program, ref_worker)


def test_intended_differences_are_documented() -> None:
    for difference in INTENDED_DIFFERENCES:
        assert difference.name in DOCUMENTED, difference.name
        assert difference.reason.endswith(".")


def _put(location: Any, file: str = "src/a.bin", **more: Any) -> dict[str, Any]:
    return {"op": "put", "location": location, "file": file, **more}


LOCATION = {"op": "location"}
UPDATE = {"op": "update", "metadata": {"status": "missing"}}
METADATA = {"op": "metadata"}

COUNTEREXAMPLES: dict[str, list[dict[str, Any]]] = {
    # issue 18: the cursor after a failed get is on the node (root when the node is missing)
    "get_missing_file": [
        _put("m/v1"),
        _put("m/v2"),
        {"op": "get", "location": "m/v1/nope"},
        LOCATION,
        UPDATE,
        METADATA,
    ],
    "get_missing_node": [_put("m/v1"), {"op": "get", "location": "m/v9/a.bin"}, LOCATION, UPDATE],
    "get_directory": [_put("m/v1"), _put("m/v2"), {"op": "get", "location": "m/v1"}, LOCATION],
    "get_reserved_name": [  # found by the fuzzer: the node is found before the file name
        _put("m"),
        _put("n"),
        {"op": "get", "location": "m/metadata.json"},
        LOCATION,
    ],
    "get_unset_file_key": [_put("m/v1"), _put("n/v1"), {"op": "get", "location": "m/v1/<f>"}],
    "put_file_exists": [_put("m/v1"), _put("n/v1"), _put("m/v1"), LOCATION, UPDATE, METADATA],
    "put_unset_key": [_put("m/v1"), _put("m/<active>"), LOCATION, UPDATE],
    "put_through_a_file": [_put({}), _put("m/v1"), _put("a.bin/m"), LOCATION],  # campaign seed 11
    "put_on_a_file": [_put("m"), _put("m/v1"), _put("m/a.bin"), LOCATION],
    "metadata_json_prefix_by_key": [  # campaign seed 33: an intended difference, by <key>
        _put({}, "src/metadata.json.bak"),
        {"op": "update", "metadata": {"model_file": "metadata.json.bak"}},
        {"op": "node_get", "location": {}, "file": "<model_file>"},
        {"op": "get", "location": "<model_file>"},
        {"op": "list"},
    ],
    # issue 18: a find that does not parse resets the cursor to the root first
    "find_too_deep": [_put("m/v1"), {"op": "find", "location": "m/v1/x"}, LOCATION, UPDATE],
    "find_bad_template": [_put("m/v1"), {"op": "find", "location": "m/a<b"}, LOCATION],
    "find_skipping_level": [_put("m/v1"), {"op": "find", "location": {"version": "v1"}}, LOCATION],
    "put_leading_slash": [_put("m"), _put("n"), _put("/m"), LOCATION],  # campaign seed 202
}


@pytest.mark.parametrize("name", sorted(COUNTEREXAMPLES))
def test_counterexample(name: str, ref_worker: RefWorker) -> None:
    check({"keys": ["model", "version"], "ops": COUNTEREXAMPLES[name]}, ref_worker)
