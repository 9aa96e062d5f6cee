"""The catalog: a tree's metadata as one Arrow table, searched with Arrow and exported as Parquet.

`Metatree.catalog` scans the nodes under a pattern (`metatree._core.scan`: level by level,
each level's metadata.json files read concurrently) into a `pyarrow.Table` with one row per
node. `Metatree.search` filters that table (an Arrow compute expression, or a small dict
form) and gives `Node` handles; `Metatree.export_catalog` writes it as a Parquet dataset that
DuckDB, polars, Spark, Dask and Ray query without metatree.

Columns, in this order:

- ``path``: the node's location (``"fraud/v3"``); ``depth``: its level (1 for the first key);
- one per key level (``domain``, ``model_id``...), the node's name at that level, null below
  its own depth;
- one per metadata key found in any scanned node (never ``children`` nor metatree's hidden
  ``.metatree*`` keys): typed by Arrow from the JSON values. Integers and floats in one key
  become float64; any other mix of types becomes a string column (strings as they are, other
  values as their JSON text); objects and arrays are JSON text (a struct would give every
  node the union of every other node's fields, and break on the first heterogeneous one);
  a key some nodes lack is null there. A metadata key named like a column above is renamed
  ``metadata.<key>``.
- ``files``: the node's file records, a list of structs (name, size, sha256, created).

pyarrow is an optional dependency (``pip install metatree[data]``); nothing here imports it
before a catalog is asked for.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

import orjson

from metatree._core.scan import Skipped, parse_pattern, scan
from metatree._metadata import CHILDREN
from metatree._names import SYSTEM_PREFIX
from metatree._node import Node
from metatree._records import records_of
from metatree.errors import MetatreeError, PathError, QueryError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    import pandas
    import pyarrow as pa

    from metatree._core.db import Database
    from metatree._core.scan import OnError
    from metatree._types import NodePath

__all__ = ["SearchResult", "build_catalog", "export_catalog", "search"]

OPERATORS: Final = ("==", "!=", "<", "<=", ">", ">=", "in", "not in", "is_null", "not_null")
"""The dict form's operators, besides ``starts_with``: ``{"accuracy": (">", 0.9)}``."""


def _arrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.compute
    except ImportError:
        raise ImportError(
            "the catalog needs pyarrow: pip install 'metatree[data]' (or pyarrow)"
        ) from None
    return pa


class SearchResult:
    """What `Metatree.search` found: the matching rows, their nodes, and what was skipped."""

    def __init__(self, db: Database, table: pa.Table, skipped: list[Skipped]) -> None:
        self._db = db
        self.table = table
        """The catalog rows that matched (a `pyarrow.Table`)."""
        self.skipped = skipped
        """Nodes left out with ``on_error="skip"``, each with its error."""

    @property
    def paths(self) -> list[str]:
        """The matching nodes' locations, in catalog order."""
        paths: list[str] = self.table.column("path").to_pylist()
        return paths

    @property
    def nodes(self) -> list[Node]:
        """`Node` handles of the matching nodes (no request: their paths are in the rows)."""
        return [Node(self._db, tuple(path.split("/"))) for path in self.paths]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def to_pandas(self) -> pandas.DataFrame:
        """Return the rows as a pandas DataFrame (pandas must be installed)."""
        return self.table.to_pandas()

    def __repr__(self) -> str:
        return f"SearchResult({len(self)} nodes, {len(self.skipped)} skipped)"


def build_catalog(
    db: Database,
    under: object = "",
    depth: object = None,
    columns: object = None,
    *,
    on_error: object = "raise",
    concurrency: object = None,
    skipped: list[Skipped] | None = None,
) -> pa.Table:
    """Return the catalog table of the nodes under `under` (see the module docstring)."""
    pa = _arrow()
    pattern = parse_pattern(under, db.keys)
    level = _check_depth(depth, db.keys, len(pattern), under)
    wanted = _check_columns(columns)
    policy = _check_on_error(on_error)
    width = _check_concurrency(concurrency)
    nodes = scan(db, pattern, depth=level, on_error=policy, concurrency=width, skipped=skipped)
    return _table(pa, db, nodes, wanted, policy, skipped)


def search(
    db: Database,
    filter: object = None,
    under: object = "",
    depth: object = None,
    *,
    on_error: object = "raise",
    concurrency: object = None,
) -> SearchResult:
    """Return the nodes under `under` whose catalog row passes `filter`."""
    pa = _arrow()
    prepared = _filter_of(pa, filter)  # checked before anything is read
    skipped: list[Skipped] = []
    table = build_catalog(
        db, under, depth, on_error=on_error, concurrency=concurrency, skipped=skipped
    )
    if prepared is not None:
        table = _apply(pa, table, prepared)
    return SearchResult(db, table, skipped)


def export_catalog(
    db: Database,
    url: object,
    partition_by: object = None,
    *,
    under: object = "",
    depth: object = None,
    columns: object = None,
    on_error: object = "raise",
    concurrency: object = None,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write the catalog as a Parquet dataset at `url`; return the dataset's URL.

    `url` is any fsspec URL or local path, outside the database, absent or an empty
    directory (an export never deletes nor overwrites: export again to a new location).
    With `partition_by` (a key level), Hive partitioning by that level
    (``domain=fraud/part-0.parquet``); rows above that level go to its null partition.
    """
    pa = _arrow()
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    if not isinstance(url, str) or not url:
        raise PathError(repr(url), "the export's URL must be a non-empty str")
    if partition_by is not None and partition_by not in db.keys:
        raise QueryError(
            f"partition_by={partition_by!r}", f"partition by a key level: one of {list(db.keys)}"
        )
    fs, path = _target(db, url, dict(storage_options or {}))
    _check_outside(db, fs, path, url)
    if fs.exists(path) and (not fs.isdir(path) or fs.ls(path, detail=False)):
        from metatree.errors import AlreadyExistsError

        raise AlreadyExistsError(url, "an export goes to a new location or an empty directory")
    table = build_catalog(db, under, depth, columns, on_error=on_error, concurrency=concurrency)
    partitioning = None
    if partition_by is not None:
        schema = pa.schema([table.schema.field(str(partition_by))])
        partitioning = ds.partitioning(schema, flavor="hive")
    ds.write_dataset(
        table,
        path,
        format="parquet",
        filesystem=PyFileSystem(FSSpecHandler(fs)),
        partitioning=partitioning,
        basename_template="part-{i}.parquet",
        existing_data_behavior="overwrite_or_ignore",  # checked empty above
    )
    return url


# -- checks of the request (before anything is read) -------------------------------------
def _check_depth(depth: object, keys: tuple[str, ...], fixed: int, under: object) -> int | None:
    """Return the level `depth` names (an int from 1, or a key's name), or None for all."""
    if depth is None:
        return None
    level = keys.index(depth) + 1 if isinstance(depth, str) and depth in keys else depth
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= len(keys):
        raise QueryError(
            f"depth={depth!r}", f"a level from 1 to {len(keys)}, or a key of {list(keys)}"
        )
    if level < fixed:
        raise QueryError(f"depth={depth!r}", f"{under!r} names nodes at level {fixed}")
    return level


def _check_columns(columns: object) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not isinstance(columns, list | tuple):
        raise QueryError(f"columns={columns!r}", "a list of metadata keys")
    for column in columns:
        if not isinstance(column, str) or not column:
            raise QueryError(f"columns={columns!r}", f"{column!r} is not a metadata key")
    return list(dict.fromkeys(columns))


def _check_on_error(on_error: object) -> OnError:
    if on_error == "raise":
        return "raise"
    if on_error == "skip":
        return "skip"
    raise QueryError(f"on_error={on_error!r}", "'raise' or 'skip'")


def _check_concurrency(concurrency: object) -> int | None:
    if concurrency is None:
        return None
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise QueryError(f"concurrency={concurrency!r}", "a positive int")
    return concurrency


def _target(db: Database, url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """Return the filesystem and path of an export's `url`.

    A URL of the database's own protocol, given without storage options, uses the
    database's filesystem (its credentials, its endpoint): an export beside the tree.
    """
    import fsspec

    own = db.storage.fs
    protocols = (own.protocol,) if isinstance(own.protocol, str) else tuple(own.protocol)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if not options and protocol in protocols:
        return own, str(own._strip_protocol(url)).rstrip("/")
    try:
        fs, path = fsspec.url_to_fs(url, **options)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        raise PathError(url, f"cannot open the export's filesystem: {exc}") from None
    return fs, str(path).rstrip("/")


def _check_outside(db: Database, fs: Any, path: str, url: str) -> None:
    """Refuse an export into the database: its files would land in nodes' directories."""
    if type(fs) is not type(db.storage.fs):
        return
    root = db.storage.root.rstrip("/")
    if path == root or path.startswith(f"{root}/") or root.startswith(f"{path}/"):
        raise PathError(url, f"an export must go outside the database ({db.storage.url})")


# -- the table ---------------------------------------------------------------------------
def _table(
    pa: Any,
    db: Database,
    nodes: Iterator[tuple[NodePath, dict[str, Any]]],
    wanted: list[str] | None,
    on_error: OnError,
    skipped: list[Skipped] | None,
) -> Any:
    """Build the table column by column: one pass over the nodes, values padded with nulls."""
    keys = db.keys
    paths: list[str] = []
    depths: list[int] = []
    files: list[list[dict[str, Any]]] = []
    values: dict[str, list[Any]] = {} if wanted is None else {k: [] for k in wanted}
    base = db.storage.url.rstrip("/")
    for path, metadata in nodes:
        location = f"{base}/{'/'.join(path)}"
        try:
            records = records_of(metadata, location)
        except MetatreeError as exc:  # records are stored data too
            if on_error == "raise":
                raise
            if skipped is not None:
                skipped.append(Skipped(location, exc))
            continue
        row = len(paths)
        paths.append("/".join(path))
        depths.append(len(path))
        files.append(
            [
                {"name": r.name, "size": r.size, "sha256": r.sha256, "created": r.created}
                for r in records.values()
            ]
        )
        for key, value in metadata.items():
            if key == CHILDREN or key.startswith(SYSTEM_PREFIX):
                continue
            column = values.get(key)
            if column is None:
                if wanted is not None:
                    continue
                column = values[key] = [None] * row
            column.append(value)
        for column in values.values():
            if len(column) == row:  # this node lacks the key
                column.append(None)
    names = ["path", "depth", *keys]
    arrays: list[Any] = [
        pa.array(paths, pa.string()),
        pa.array(depths, pa.int8()),
        *(
            pa.array(
                [p.split("/")[i] if d > i else None for p, d in zip(paths, depths, strict=True)],
                pa.string(),
            )
            for i in range(len(keys))
        ),
    ]
    taken = {*names, "files"}
    for key, column in values.items():
        name = key
        while name in taken:
            name = f"metadata.{name}"
        taken.add(name)
        names.append(name)
        arrays.append(_typed(pa, column))
    names.append("files")
    arrays.append(pa.array(files, _files_type(pa)))
    return pa.Table.from_arrays(arrays, names=names)


def _files_type(pa: Any) -> Any:
    return pa.list_(
        pa.struct(
            [
                ("name", pa.string()),
                ("size", pa.int64()),
                ("sha256", pa.string()),
                ("created", pa.timestamp("us", tz="UTC")),
            ]
        )
    )


def _typed(pa: Any, column: list[Any]) -> Any:
    """Type one metadata column: Arrow's inference on scalars, JSON text otherwise."""
    kinds = {type(v) for v in column if v is not None}
    if not kinds:
        return pa.nulls(len(column))
    if kinds & {dict, list}:
        return pa.array([_text(v) for v in column], pa.string())
    if kinds == {int, float}:
        return pa.array(column, pa.float64())
    if len(kinds) == 1:
        try:
            return pa.array(column)
        except (pa.ArrowException, OverflowError):  # an integer beyond 64 bits
            pass
    return pa.array([_text(v) for v in column], pa.string())


def _text(value: Any) -> str | None:
    """Return a value of a string column: a str as it is, anything else as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


# -- filters -----------------------------------------------------------------------------
def _filter_of(pa: Any, filter: object) -> Any:
    """Return the filter as an Arrow expression (None: every row), checked before any read."""
    pc = pa.compute
    if filter is None:
        return None
    if isinstance(filter, pc.Expression):
        return filter
    if not isinstance(filter, dict):
        raise QueryError(
            repr(filter)[:80], "a filter is a pyarrow.compute expression or a dict of conditions"
        )
    expression = None
    for column, condition in filter.items():
        if not isinstance(column, str) or not column:
            raise QueryError(repr(column), "a filter's column is a non-empty str")
        one = _condition(pc, column, condition)
        expression = one if expression is None else expression & one
    return expression


def _condition(pc: Any, column: str, condition: object) -> Any:
    """One entry of the dict form: a value (equality, None: null) or (operator, operand)."""
    field = pc.field(column)
    if not isinstance(condition, tuple):
        return field.is_null() if condition is None else field == _scalar(column, condition)
    if not condition or not isinstance(condition[0], str):
        raise QueryError(f"{column}: {condition!r}", "a condition is (operator, operand)")
    op, rest = condition[0], condition[1:]
    if op in ("is_null", "not_null"):
        if rest:
            raise QueryError(f"{column}: {condition!r}", f"{op!r} takes no operand")
        return field.is_null() if op == "is_null" else field.is_valid()
    if len(rest) != 1:
        raise QueryError(f"{column}: {condition!r}", f"{op!r} takes one operand")
    operand = rest[0]
    if op in ("in", "not in"):
        if not isinstance(operand, list | tuple | set | frozenset):
            raise QueryError(f"{column}: {condition!r}", f"{op!r} takes a list of values")
        found = field.isin([_scalar(column, v) for v in operand])
        return found if op == "in" else ~found
    if op == "starts_with":
        if not isinstance(operand, str):
            raise QueryError(f"{column}: {condition!r}", "starts_with takes a str")
        return pc.starts_with(field, operand)
    compare = {
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }.get(op)
    if compare is None:
        raise QueryError(
            f"{column}: {condition!r}",
            f"unknown operator {op!r}: one of {[*OPERATORS, 'starts_with']}",
        )
    return compare(field, _scalar(column, operand))


def _scalar(column: str, value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise QueryError(f"{column}: {value!r}", "compare with a str, a number, a bool or None")


_MISSING_FIELD = re.compile(r"No match for FieldRef\.Name\((.*?)\) in")


def _apply(pa: Any, table: Any, expression: Any) -> Any:
    """Filter `table`; a field no node has is a null column (so ``is_null`` holds for all)."""
    columns = table.column_names
    for _ in range(len(columns) + 64):
        try:
            return table.filter(expression).select(columns)
        except (pa.ArrowException, TypeError) as exc:
            missing = _MISSING_FIELD.search(str(exc))
            if missing is None or missing.group(1) in table.column_names:
                raise QueryError(str(expression)[:200], str(exc).splitlines()[0]) from None
            table = table.append_column(missing.group(1), pa.nulls(table.num_rows))
    raise QueryError(str(expression)[:200], "too many unknown columns")
