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

import json
import re
from typing import TYPE_CHECKING, Any, Final

import orjson

from metatree._core.scan import Progress, Skipped, parse_pattern, scan
from metatree._metadata import CHILDREN
from metatree._names import SYSTEM_PREFIX
from metatree._node import Node
from metatree._records import records_of
from metatree.errors import QueryError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pandas
    import pyarrow as pa

    from metatree._core.db import Database
    from metatree._core.scan import OnError
    from metatree._types import NodePath

__all__ = ["SearchResult", "build_catalog", "search"]

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
    progress: Progress | None = None,
) -> pa.Table:
    """Return the catalog table of the nodes under `under` (see the module docstring)."""
    pa = _arrow()
    pattern = parse_pattern(under, db.keys)
    level = _check_depth(depth, db.keys, len(pattern), under)
    wanted = _check_columns(columns)
    policy = _check_on_error(on_error)
    width = _check_concurrency(concurrency)
    base = db.storage.url.rstrip("/")  # node URLs by concatenation: one per node, for errors

    def records(path: NodePath, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        # stored data too: malformed records skip the node and its subtree, as a bad read does
        found = records_of(metadata, f"{base}/{'/'.join(path)}")
        return [
            {"name": r.name, "size": r.size, "sha256": r.sha256, "created": r.created}
            for r in found.values()
        ]

    nodes = scan(
        db,
        pattern,
        depth=level,
        on_error=policy,
        concurrency=width,
        skipped=skipped,
        check=records,
        progress=progress,
    )
    return _table(pa, db.keys, nodes, wanted)


def search(
    db: Database,
    filter: object = None,
    under: object = "",
    depth: object = None,
    *,
    on_error: object = "raise",
    concurrency: object = None,
    progress: Progress | None = None,
) -> SearchResult:
    """Return the nodes under `under` whose catalog row passes `filter`."""
    pa = _arrow()
    prepared = _filter_of(pa, filter)  # checked before anything is read
    skipped: list[Skipped] = []
    table = build_catalog(
        db,
        under,
        depth,
        on_error=on_error,
        concurrency=concurrency,
        skipped=skipped,
        progress=progress,
    )
    if prepared is not None:
        table = _apply(pa, table, prepared)
    return SearchResult(db, table, skipped)


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
        if column == CHILDREN or column.startswith(SYSTEM_PREFIX):
            raise QueryError(f"columns={columns!r}", f"{column!r} is the tree's, never a column")
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


# -- the table ---------------------------------------------------------------------------
def _table(
    pa: Any,
    keys: tuple[str, ...],
    nodes: Iterator[tuple[NodePath, dict[str, Any], list[dict[str, Any]]]],
    wanted: list[str] | None,
) -> Any:
    """Build the table column by column: one pass over the nodes, values padded with nulls."""
    paths: list[str] = []
    depths: list[int] = []
    files: list[list[dict[str, Any]]] = []
    values: dict[str, list[Any]] = {} if wanted is None else {k: [] for k in wanted}
    for path, metadata, records in nodes:
        row = len(paths)
        paths.append("/".join(path))
        depths.append(len(path))
        files.append(records)
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
    renamed = _column_names(names, list(values))
    for key, column in values.items():
        names.append(renamed[key])
        arrays.append(_typed(pa, column))
    names.append("files")
    arrays.append(pa.array(files, _files_type(pa)))
    return pa.Table.from_arrays(arrays, names=names)


def _column_names(fixed: list[str], keys: list[str]) -> dict[str, str]:
    """Name each metadata key's column: itself, or ``metadata.<key>`` where it would clash.

    Clashes are case-insensitive (DuckDB and Spark match column names so), and the result does
    not depend on the order the keys were found in: keys that clash with nothing keep their
    names first, then each clashing one (in sorted order) takes the first free prefixed name.
    """
    taken = {name.casefold() for name in [*fixed, "files"]}
    clashing = sorted(k for k in keys if k.casefold() in taken)
    names = {k: k for k in keys if k.casefold() not in taken}
    taken |= {k.casefold() for k in names}
    for key in clashing:
        name = f"metadata.{key}"
        while name.casefold() in taken:
            name = f"metadata.{name}"
        taken.add(name.casefold())
        names[key] = name
    return names


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
    if not kinds & {dict, list} and (kinds == {int, float} or len(kinds) == 1):
        try:  # an integer beyond 64 bits fits no int64 (nor any float: beyond 1e308)
            if kinds == {int, float}:  # float64, as documented: exact up to 2**53 only
                return pa.array([None if v is None else float(v) for v in column], pa.float64())
            return pa.array(column)
        except (pa.ArrowException, OverflowError, TypeError):
            pass
    return pa.array([_text(v) for v in column], pa.string())


def _text(value: Any) -> str | None:
    """Return a value of a string column: a str as it is, anything else as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits, which metadata may hold exactly
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
        try:
            one = _condition(pc, column, condition)
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            if isinstance(exc, QueryError):
                raise
            raise QueryError(
                f"{column}: {condition!r}", f"Arrow cannot compare it: {exc}"
            ) from None
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
