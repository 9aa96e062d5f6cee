"""Collection of the backends' suites: the second, format v2 run is a subset but on memory.

tests/backends/test_index_v2.py runs the whole conformance suite again with a threshold of
one child on memory. On local disk, S3, Azure, GCS and WebHDFS it runs the tests listed in
v2_subset.txt: those that grow a node past one child, so that format v2 is exercised on each
backend's primitives; the others would repeat the first run exactly (local disk ran them all
until Azure joined the suites: CI's time went to the new backend instead). The list is
checked against the suite (`test_v2_subset_names_exist`), so a renamed test cannot drop out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

SUBSET = frozenset(
    line.strip()
    for line in (Path(__file__).parent / "v2_subset.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
_REMOTE_V2 = ("TestLocalV2", "TestS3V2", "TestWebHDFSV2", "TestAzureV2", "TestGCSV2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        cls = getattr(item, "cls", None)
        name = getattr(item, "originalname", item.name)
        if cls is not None and cls.__name__ in _REMOTE_V2 and name not in SUBSET:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
