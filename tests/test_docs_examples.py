"""The examples of the docs run as written (```python blocks; ```py ones are not run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks(name: str) -> list[str]:
    blocks = _BLOCK.findall((DOCS / name).read_text(encoding="utf-8"))
    assert blocks, f"docs/{name} has no python example"
    return blocks


@pytest.mark.parametrize("name", ["models.md", "datastore.md", "catalog.md"])
def test_examples_run(name: str, tmp_path: Path) -> None:
    namespace = {"ROOT": str(tmp_path / "store"), "WORK": str(tmp_path / "work")}
    (tmp_path / "work").mkdir()
    for block in _blocks(name):
        exec(compile(block, f"docs/{name}", "exec"), namespace)  # noqa: S102 - our own docs
