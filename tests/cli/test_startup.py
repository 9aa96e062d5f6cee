"""Start-up: ``metatree --help`` imports neither the core nor fsspec (lazy ``metatree``).

No timings (docs/cli.md has the measured numbers): the test lists modules that must stay out
of ``sys.modules``, which is what the time was spent on.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

import metatree

HEAVY = (
    "fsspec",
    "orjson",
    "asyncio",
    "importlib.metadata",
    "difflib",
    "pyarrow",
    "s3fs",
    "pandas",
    "metatree._tree",
    "metatree._core.db",
    "metatree._storage",
    "metatree.models",
    "metatree.fsck",
    "metatree.catalog",
    "metatree.datastore",
    "metatree.artifacts",
    "metatree.backends",
)
"""Modules a ``--help`` imported before ``metatree/__init__.py`` and the CLI became lazy."""

_PROBE = """
import json, sys
sys.argv = ["metatree", "--help"]
from metatree.cli.main import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def test_help_imports_no_heavy_module() -> None:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=environ
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "Usage: metatree" in done.stdout
    assert "metatree.cli.main" in loaded  # the probe did run the command
    assert sorted(loaded.intersection(HEAVY)) == []


def test_every_public_name_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from metatree import *", namespace)  # noqa: S102  # a fixed text: the star import
    for name in metatree.__all__:
        assert getattr(metatree, name) is namespace[name], name
        assert name in dir(metatree)
    assert set(metatree.__all__) == {*metatree._LAZY, "__version__"}  # one table, kept in step
    assert metatree.Metatree.__module__ == "metatree._tree"
    with pytest.raises(AttributeError, match="NoSuchName"):
        getattr(metatree, "NoSuchName")  # noqa: B009


@pytest.mark.parametrize(
    "sub", ["errors", "fsck", "backends", "datastore", "models", "artifacts", "warnings"]
)
def test_a_submodule_is_an_attribute_after_import_metatree(
    sub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``import metatree; metatree.errors.PathError``, as with the eager ``__init__``."""
    monkeypatch.delattr(metatree, sub, raising=False)  # as in a fresh interpreter
    assert getattr(metatree, sub) is importlib.import_module(f"metatree.{sub}")
    with pytest.raises(AttributeError, match="_nosuch"):
        getattr(metatree, "_nosuch")  # noqa: B009  # private names are never imported here
