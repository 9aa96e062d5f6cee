"""The catalog, search and Parquet export (issue 14), on every backend.

Part of the conformance suite. pyarrow is an optional extra of metatree: these tests skip
where it is not installed; DuckDB (a test dependency) cross-checks the export.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from metatree import Metatree
from metatree.errors import (
    AlreadyExistsError,
    CorruptMetadataError,
    NotFoundError,
    PathError,
    QueryError,
    StorageError,
    TemplateSyntaxError,
)
from metatree.testing._helpers import unchanged

if TYPE_CHECKING:
    from pathlib import Path

    from metatree._storage import Storage

__all__ = ["CatalogTests"]

KEYS = ("domain", "model", "version")


def _paths(result: Any) -> list[str]:
    return sorted(result.paths)


class CatalogTests:
    """One row per node, typed columns, filters, patterns, errors, export."""

    @pytest.fixture
    def pc(self) -> Any:
        pytest.importorskip("pyarrow")
        return pytest.importorskip("pyarrow.compute")

    @pytest.fixture
    def catalog_tree(self, storage: Storage, pc: Any) -> Metatree:
        """Two domains, three models, five versions, with metadata of every JSON type."""
        tree = Metatree(storage, KEYS)
        rows: list[tuple[str, dict[str, Any]]] = [
            ("fraud/xgb/v1", {"accuracy": 0.81, "framework": "xgboost", "epochs": 10}),
            ("fraud/xgb/v2", {"accuracy": 0.93, "framework": "xgboost", "epochs": 12.5}),
            ("fraud/net/v1", {"accuracy": 0.95, "framework": "torch", "params": {"lr": 0.1}}),
            (
                "churn/net/v1",
                {"accuracy": 0.7, "framework": "torch", "tags": ["a", "b"], "steps": 2**53 + 1},
            ),
            ("churn/net/v2", {"accuracy": None, "framework": "torch", "model": 3, "steps": 1.5}),
        ]
        with tree.transaction():
            for location, metadata in rows:
                tree.put(location, b"w", name="weights.bin")
                tree.find(location).update(**metadata)
            tree.find("fraud").update(production="xgb", owner="risk", Domain="d")
            tree.find("fraud/xgb").update(mixed="text")
            tree.find("fraud/net").update(mixed=1)
        stored = json.loads(storage.read_bytes("fraud/metadata.json"))
        stored["big"] = 2**70  # metatree refuses to write it; metatreedb and others do not
        storage.write_atomic("fraud/metadata.json", json.dumps(stored).encode())
        return tree

    def test_catalog_columns_and_types(self, catalog_tree: Metatree) -> None:
        table = catalog_tree.catalog()
        assert table.column_names[:5] == ["path", "depth", "domain", "model", "version"]
        assert table.column_names[-1] == "files"
        rows = {r["path"]: r for r in table.to_pylist()}
        assert sorted(rows) == sorted(
            [
                "fraud", "churn", "fraud/xgb", "fraud/net", "churn/net", "fraud/xgb/v1",
                "fraud/xgb/v2", "fraud/net/v1", "churn/net/v1", "churn/net/v2",
            ]
        )  # fmt: skip
        types = {f.name: str(f.type) for f in table.schema}
        assert types["depth"] == "int8"
        assert types["accuracy"] == "double"
        assert types["epochs"] == "double"  # 10 and 12.5: integers and floats
        assert types["steps"] == "double"  # beyond 2**53 too: float64, as documented
        assert types["framework"] == "string"
        assert types["params"] == "string"  # objects are JSON text
        assert types["mixed"] == "string"  # "text" and 1
        assert rows["fraud/net"]["mixed"] == "1"
        assert rows["fraud/net/v1"]["params"] == '{"lr":0.1}'
        assert rows["churn/net/v1"]["tags"] == '["a","b"]'
        assert rows["churn/net/v2"]["metadata.model"] == 3  # renamed: "model" is a level
        assert rows["churn/net/v2"]["model"] == "net"
        assert rows["churn/net/v2"]["accuracy"] is None
        assert rows["fraud"]["accuracy"] is None  # a key the node lacks
        assert (rows["fraud"]["depth"], rows["fraud"]["model"]) == (1, None)
        assert rows["fraud"]["production"] == "xgb"
        assert rows["fraud"]["big"] == str(2**70)  # beyond 64 bits: exact, as text
        assert rows["fraud"]["metadata.Domain"] == "d"  # "domain" in any case is the level's
        assert "children" not in table.column_names
        assert not any(c.startswith(".metatree") for c in table.column_names)
        (record,) = rows["fraud/xgb/v1"]["files"]
        assert (record["name"], record["size"]) == ("weights.bin", 1)
        assert record["sha256"] == catalog_tree.stat("fraud/xgb/v1/weights.bin").sha256
        assert rows["fraud"]["files"] == []
        assert catalog_tree.catalog(concurrency=4).sort_by("path").equals(table.sort_by("path"))

    def test_catalog_narrows_by_pattern_depth_and_columns(self, catalog_tree: Metatree) -> None:
        def paths(**kwargs: Any) -> list[str]:
            return sorted(catalog_tree.catalog(**kwargs).column("path").to_pylist())

        assert paths(under="churn") == ["churn", "churn/net", "churn/net/v1", "churn/net/v2"]
        assert paths(under="*/net", depth="version") == [
            "churn/net/v1",
            "churn/net/v2",
            "fraud/net/v1",
        ]
        assert paths(under="*/*/v2") == ["churn/net/v2", "fraud/xgb/v2"]
        assert paths(under="fraud/x*") == ["fraud/xgb", "fraud/xgb/v1", "fraud/xgb/v2"]
        assert paths(under="*/<production>", depth=3) == ["fraud/xgb/v1", "fraud/xgb/v2"]
        assert paths(depth=1) == ["churn", "fraud"]
        assert paths(under="nothere") == []
        table = catalog_tree.catalog(depth="version", columns=["accuracy", "unknown"])
        assert table.column_names == [
            "path", "depth", "domain", "model", "version", "accuracy", "unknown", "files",
        ]  # fmt: skip
        assert table.column("unknown").null_count == table.num_rows

    def test_search_filters(self, catalog_tree: Metatree, pc: Any) -> None:
        field = pc.field
        cases: list[tuple[Any, list[str]]] = [
            ({"framework": "torch"}, ["churn/net/v1", "churn/net/v2", "fraud/net/v1"]),
            ({"framework": ("!=", "torch")}, ["fraud/xgb/v1", "fraud/xgb/v2"]),
            ({"accuracy": ("<", 0.81)}, ["churn/net/v1"]),
            ({"accuracy": ("<=", 0.81)}, ["churn/net/v1", "fraud/xgb/v1"]),
            ({"accuracy": (">", 0.93)}, ["fraud/net/v1"]),
            ({"accuracy": (">=", 0.93), "framework": "xgboost"}, ["fraud/xgb/v2"]),
            ({"framework": ("in", ["xgboost"])}, ["fraud/xgb/v1", "fraud/xgb/v2"]),
            ({"domain": ("not in", ["fraud"]), "depth": 3}, ["churn/net/v1", "churn/net/v2"]),
            ({"accuracy": None, "depth": 3}, ["churn/net/v2"]),
            ({"accuracy": ("is_null",), "depth": ("==", 3)}, ["churn/net/v2"]),
            ({"owner": ("not_null",)}, ["fraud"]),
            ({"framework": ("starts_with", "xg")}, ["fraud/xgb/v1", "fraud/xgb/v2"]),
            ({"never_set": ("is_null",), "depth": 1}, ["churn", "fraud"]),
            ({"never_set": 5}, []),
            ((field("accuracy") > 0.9) | (field("framework") == "xgboost"),
             ["fraud/net/v1", "fraud/xgb/v1", "fraud/xgb/v2"]),
            (~(field("framework") == "torch") & (field("depth") == 3),
             ["fraud/xgb/v1", "fraud/xgb/v2"]),
            (field("never_set") == 1, []),
            (field("never_set").is_null() & (field("depth") == 1), ["churn", "fraud"]),
        ]  # fmt: skip
        for condition, expected in cases:
            assert _paths(catalog_tree.search(condition)) == expected, condition
        found = catalog_tree.search({"framework": "torch"}, under="fraud")
        assert found.paths == ["fraud/net/v1"]
        (node,) = found.nodes
        assert node.path == ("fraud", "net", "v1")
        assert node.metadata["framework"] == "torch"
        assert len(found) == 1
        assert list(found) == [node]
        pytest.importorskip("pandas")
        assert found.to_pandas()["accuracy"].tolist() == [0.95]

    def test_bad_requests_are_typed_errors(self, storage: Storage, pc: Any) -> None:
        tree = Metatree(storage, KEYS)
        tree.put("fraud/xgb/v1", b"w", name="f")
        cases: list[tuple[dict[str, Any], type[Exception]]] = [
            ({"filter": "accuracy > 0.9"}, QueryError),
            ({"filter": {"accuracy": ("~", 1)}}, QueryError),
            ({"filter": {"accuracy": ("in", 5)}}, QueryError),
            ({"filter": {"accuracy": (">",)}}, QueryError),
            ({"filter": {"accuracy": ("is_null", 1)}}, QueryError),
            ({"filter": {"accuracy": [1]}}, QueryError),
            ({"filter": {"framework": ("starts_with", 1)}}, QueryError),
            ({"filter": {5: 1}}, QueryError),
            ({"filter": {"n": 2**70}}, QueryError),
            ({"filter": {"n": ("in", [1, "a"])}}, QueryError),
            ({"under": "a/../b"}, PathError),
            ({"under": "<unclosed"}, TemplateSyntaxError),
            ({"under": "a/b/c/d"}, PathError),
            ({"under": 5}, PathError),
            ({"depth": 0}, QueryError),
            ({"depth": 4}, QueryError),
            ({"depth": "nolevel"}, QueryError),
            ({"depth": True}, QueryError),
            ({"under": "fraud/xgb", "depth": 1}, QueryError),
            ({"on_error": "ignore"}, QueryError),
            ({"concurrency": 0}, QueryError),
        ]
        with unchanged(storage):
            for kwargs, error in cases:
                with pytest.raises(error):
                    tree.search(**kwargs)

    def test_bad_columns_and_filters_arrow_cannot_evaluate(
        self, catalog_tree: Metatree, pc: Any
    ) -> None:
        for columns in ("accuracy", [5], [""], ["children"], [".metatree.records"]):
            with pytest.raises(QueryError):
                catalog_tree.catalog(columns=columns)  # type: ignore[arg-type]
        with pytest.raises(QueryError):
            catalog_tree.search(pc.field("framework") > 0.5)  # a number against strings
        with pytest.raises(QueryError):
            catalog_tree.search(pc.field("accuracy"))  # not a condition

    def test_empty_tree(self, storage: Storage, pc: Any) -> None:
        tree = Metatree(storage, KEYS)
        table = tree.catalog()
        assert table.num_rows == 0
        assert table.column_names == ["path", "depth", "domain", "model", "version", "files"]
        assert tree.search({"x": 1}).paths == []

    def test_unreadable_nodes_raise_or_are_skipped(
        self, catalog_tree: Metatree, storage: Storage
    ) -> None:
        storage.write_atomic("fraud/xgb/metadata.json", b"{not json")
        with pytest.raises(CorruptMetadataError, match="fraud/xgb"):
            catalog_tree.catalog()
        found = catalog_tree.search(on_error="skip")
        assert [s.location.rsplit("/", 2)[-2:] for s in found.skipped] == [["fraud", "xgb"]]
        assert isinstance(found.skipped[0].error, CorruptMetadataError)
        assert "fraud/xgb/v1" not in found.paths  # below it: unreachable, not guessed
        assert "fraud/net/v1" in found.paths
        metadata = orjson.loads(storage.read_bytes("fraud/net/metadata.json"))
        metadata[".metatree.records"] = {"files": {"x": 1}, "puts": {}}  # malformed records
        storage.write_atomic("fraud/net/metadata.json", orjson.dumps(metadata))
        found = catalog_tree.search(under="fraud", on_error="skip")
        assert sorted(found.paths) == ["fraud"]  # below a skipped node: nothing
        storage.remove_tree("churn/net/v2")  # listed by its parent, gone: a dangling entry
        with pytest.raises((CorruptMetadataError, NotFoundError)):
            catalog_tree.catalog(under="churn")
        found = catalog_tree.search(under="churn", on_error="skip")
        assert sorted(found.paths) == ["churn", "churn/net", "churn/net/v1"]
        assert isinstance(found.skipped[0].error, NotFoundError)

    def test_a_node_removed_and_recreated_mid_scan_is_read_again(
        self, catalog_tree: Metatree, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = type(catalog_tree.storage).read_many
        done: list[bool] = []

        def racing(storage: Storage, rels: list[str], *args: Any) -> Any:
            if "churn/net/metadata.json" not in rels or done:
                return real(storage, rels, *args)
            done.append(True)  # a writer removes the node, the read misses it, it comes back
            catalog_tree.remove("churn/net", recursive=True)
            got = real(storage, rels, *args)
            catalog_tree.put("churn/net/v9", b"x", name="f")
            return got

        monkeypatch.setattr(type(catalog_tree.storage), "read_many", racing)
        assert "churn/net/v9" in catalog_tree.search().paths  # not reported as damage
        assert done

    def test_a_search_during_writes_sees_each_node_old_or_new(
        self, catalog_tree: Metatree, pc: Any
    ) -> None:
        stop = threading.Event()
        failures: list[BaseException] = []

        def writer() -> None:
            try:
                for i in range(2):
                    for location in ("fraud/xgb/v1", "churn/net/v1"):
                        catalog_tree.find(location).update(a=i, b=i)
                    catalog_tree.put(f"churn/net/w{i}", b"x", name="f")
                    catalog_tree.remove(f"churn/net/w{i}", recursive=True)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)
            finally:
                stop.set()

        thread = threading.Thread(target=writer)
        thread.start()
        searches = 0
        while not stop.is_set() or searches == 0:
            rows = catalog_tree.catalog(depth=3, columns=["a", "b"]).to_pylist()
            assert all(r["a"] == r["b"] for r in rows)  # never a torn node
            searches += 1
        thread.join()
        assert not failures

    def test_export_reads_back_in_duckdb_as_search_answers(
        self, catalog_tree: Metatree, tmp_path: Path, pc: Any
    ) -> None:
        duckdb = pytest.importorskip("duckdb")
        catalog_tree.put("odd name=1%/m/v", b"x", name="f")  # a partition value to escape
        out = str(tmp_path / "catalog")
        assert catalog_tree.export_catalog(out, partition_by="domain") == out
        dataset = f"read_parquet('{out}/**/*.parquet', hive_partitioning = true)"
        query = f"SELECT path FROM {dataset} WHERE accuracy > 0.9 ORDER BY path"
        answer = [row[0] for row in duckdb.sql(query).fetchall()]
        assert answer == _paths(catalog_tree.search(pc.field("accuracy") > 0.9))
        rows = duckdb.sql(f"SELECT path, domain FROM {dataset} ORDER BY path").fetchall()
        assert len(rows) == catalog_tree.catalog().num_rows
        assert all(path.split("/")[0] == domain for path, domain in rows)
        assert ("odd name=1%/m/v", "odd name=1%") in rows
        flat = str(tmp_path / "flat")
        catalog_tree.export_catalog(flat, under="fraud", depth="version")
        count = duckdb.sql(f"SELECT count(*) FROM read_parquet('{flat}/*.parquet')").fetchall()
        assert count == [(3,)]

    def test_export_refuses_the_database_and_a_used_target(
        self, catalog_tree: Metatree, tmp_path: Path, pc: Any
    ) -> None:
        inside = catalog_tree.storage.url.rstrip("/") + "/export"
        with unchanged(catalog_tree.storage), pytest.raises(PathError):
            catalog_tree.export_catalog(inside)
        used = tmp_path / "used"
        used.mkdir()
        (used / "keep.txt").write_text("mine")
        with pytest.raises(AlreadyExistsError):
            catalog_tree.export_catalog(str(used))
        assert [p.name for p in used.iterdir()] == ["keep.txt"]
        with pytest.raises(QueryError):
            catalog_tree.export_catalog(str(tmp_path / "new"), partition_by="accuracy")
        with pytest.raises(PathError):
            catalog_tree.export_catalog(f"simplecache::{tmp_path}/new")
        catalog_tree.put("__HIVE_DEFAULT_PARTITION__/m/v", b"x", name="f")
        with pytest.raises(QueryError, match="null"):
            catalog_tree.export_catalog(str(tmp_path / "new"), partition_by="domain")
        assert not (tmp_path / "new").exists()

    def test_a_failed_export_leaves_nothing(
        self, catalog_tree: Metatree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pc: Any
    ) -> None:
        import pyarrow.dataset as ds

        real = ds.write_dataset

        def full_disk(*args: Any, **kwargs: Any) -> None:
            real(*args, **kwargs)  # every file written, then the failure
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(ds, "write_dataset", full_disk)
        out = tmp_path / "catalog"
        with pytest.raises(StorageError, match="nothing is left"):
            catalog_tree.export_catalog(str(out), partition_by="domain")
        assert not out.exists()
        out.mkdir()  # an empty directory stays, empty
        with pytest.raises(StorageError):
            catalog_tree.export_catalog(str(out), partition_by="domain")
        assert list(out.iterdir()) == []
        monkeypatch.undo()
        catalog_tree.export_catalog(str(out), partition_by="domain")  # a retry, same URL
        assert len(list(out.iterdir())) == 2
