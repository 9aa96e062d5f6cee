"""``search --where``: ``KEY=[OP:]VALUE`` conditions and free expressions, never evaluated.

Two forms, told apart by one rule: a text that parses as a Python expression is an
expression (``acc > 0.9 and framework == 'torch'``); anything else is ``KEY=VALUE`` or
``KEY=OP:VALUE`` (``acc=gt:0.9``, ``url=http://x``). ``KEY=VALUE`` is never a Python
expression (``=`` alone is an assignment), so the two cannot be confused; the one text that
changes meaning is a value starting with ``=`` (``a==1`` is the expression), written
``a=eq:=1`` in the dict form. A text that is no valid expression but looks like one (its
first ``=`` follows a space or ``<>!``, or is doubled: ``fw == 'torch``) is refused with
Python's syntax error rather than read as an odd ``KEY=VALUE``.

An expression is parsed with `ast` in eval mode and only read: each node is checked against
a short list (comparisons, ``and``/``or``/``not``, keys, constants, lists of constants,
``is None``, ``starts_with(key, "p")``, ``key("name")`` for a key that is not an identifier)
and turned into `Metatree.search`'s dict filter when it is a plain AND of conditions on
distinct keys, else into a pyarrow.compute expression (pyarrow imported only then).
Everything else, and any text longer than `MAX_TEXT` or nested deeper than `MAX_DEPTH`, is a
usage error (exit 2), refused before the tree is opened.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Final

import click

from metatree.cli._context import parse_value

__all__ = ["MAX_DEPTH", "MAX_TEXT", "OPERATORS", "parse_where"]

OPERATORS: Final = {
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "in": "in",
    "not_in": "not in",
    "is_null": "is_null",
    "not_null": "not_null",
    "starts_with": "starts_with",
}
"""Operator words of ``KEY=OP:VALUE`` (shell-safe) -> the operators of `Metatree.search`."""

MAX_TEXT: Final = 10_000
"""Longest ``--where`` text: a filter, not a payload (the parser's memory stays small)."""

MAX_DEPTH: Final = 32
"""Deepest nesting of an expression: ``not not ... x`` parses, but is not a filter."""

MAX_NODES: Final = 1_000
"""Most syntax nodes in one expression (``a and a and ...``)."""

_NO_OPERAND: Final = {"is_null", "not_null"}

_COMPARE: Final[dict[type[ast.cmpop], str]] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_FLIPPED: Final = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
"""The operator with its sides swapped (``0.9 < acc`` is ``acc > 0.9``)."""


@dataclass(frozen=True)
class _Leaf:
    """One condition on one key, in the dict form's shape (see `Metatree.search`)."""

    key: str
    condition: Any


@dataclass(frozen=True)
class _Bool:
    op: str  # "and", "or", "not"
    parts: tuple[_Leaf | _Bool, ...]


_Node = _Leaf | _Bool


def _bad(text: str, reason: str) -> click.BadParameter:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return click.BadParameter(f"{reason}: {shown!r}", param_hint="--where")


def parse_where(conditions: tuple[str, ...]) -> Any:
    """Turn ``--where`` texts (all must hold) into `Metatree.search`'s filter, or None.

    A dict when every condition is a plain AND of conditions on distinct keys, else a
    pyarrow.compute expression.

    >>> parse_where(("framework=torch", "acc=gt:0.9", 'tag=in:["a"]', "note=is_null:"))
    {'framework': 'torch', 'acc': ('>', 0.9), 'tag': ('in', ['a']), 'note': ('is_null',)}
    >>> parse_where(("acc > 0.9 and framework == 'torch'",))
    {'acc': ('>', 0.9), 'framework': 'torch'}
    """
    parts: list[_Node] = []
    for text in conditions:
        if len(text) > MAX_TEXT:
            raise _bad(text, f"longer than {MAX_TEXT} characters")
        if not text.isascii():
            try:
                text.encode("utf-8")  # a byte the locale could not decode: a lone surrogate
            except UnicodeEncodeError:
                raise _bad(text, "not UTF-8 text (bytes this system cannot decode)") from None
        tree = _parse(text)
        parts.append(_keyed(text) if tree is None else _convert(text, tree, 0, [0]))
    if not parts:
        return None
    leaves = _and_leaves(parts)
    if leaves is not None and len({leaf.key for leaf in leaves}) == len(leaves):
        return {leaf.key: leaf.condition for leaf in leaves}
    return _arrow(parts[0] if len(parts) == 1 else _Bool("and", tuple(parts)))


def _parse(text: str) -> ast.expr | None:
    """Return the expression `text` is, or None when it is not one (the ``KEY=...`` form)."""
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        if "nested" in str(exc) or "too many" in str(exc):
            raise _bad(text, f"nested too deeply ({exc.msg})") from None
        key, _, rest = text.partition("=")
        if key.endswith((" ", "\t", "<", ">", "!", ":")) or rest.startswith("="):
            # ``acc == 'torch``, ``a >= 1 and``, ``x := 1``: a broken expression, not KEY=VALUE
            raise _bad(text, f"not a valid expression ({exc.msg[:100]})") from None
        return None
    except (RecursionError, MemoryError, ValueError):
        raise _bad(text, "too complex to parse") from None


def _keyed(text: str) -> _Leaf:
    """Parse ``KEY=VALUE`` (equality) or ``KEY=OP:VALUE`` (an operator of `OPERATORS`)."""
    key, sep, rest = text.partition("=")
    if not sep or not key:
        raise _bad(text, "not an expression, KEY=VALUE or KEY=OP:VALUE")
    word, colon, operand = rest.partition(":")
    if colon and word in OPERATORS:
        op = OPERATORS[word]
        if op in _NO_OPERAND:
            if operand:
                raise _bad(text, f"{word} takes no value")
            return _Leaf(key, (op,))
        return _Leaf(key, (op, parse_value(operand)))
    return _Leaf(key, parse_value(rest))


def _and_leaves(parts: list[_Node]) -> list[_Leaf] | None:
    """Return the leaves of a plain AND (flattened), or None when there is an or/not."""
    leaves: list[_Leaf] = []
    stack = list(reversed(parts))
    while stack:
        part = stack.pop()
        if isinstance(part, _Leaf):
            leaves.append(part)
        elif part.op == "and":
            stack.extend(reversed(part.parts))
        else:
            return None
    return leaves


def _convert(text: str, node: ast.expr, depth: int, count: list[int]) -> _Node:
    """Check one syntax node against the allowed list and convert it (depth-bounded)."""
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_NODES:
        raise _bad(text, f"deeper than {MAX_DEPTH} levels or over {MAX_NODES} parts")
    if isinstance(node, ast.BoolOp):
        op = "and" if isinstance(node.op, ast.And) else "or"
        return _Bool(op, tuple(_convert(text, v, depth + 1, count) for v in node.values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _Bool("not", (_convert(text, node.operand, depth + 1, count),))
    if isinstance(node, ast.Compare):
        count[0] += len(node.ops) - 1  # a chain is one part per pair
        if count[0] > MAX_NODES:
            raise _bad(text, f"deeper than {MAX_DEPTH} levels or over {MAX_NODES} parts")
        return _compare(text, node)
    if isinstance(node, ast.Call) and _is_call(node, "starts_with", 2):
        key = _key(text, node.args[0])
        prefix = _constant(text, node.args[1])
        if key is None or not isinstance(prefix, str):
            raise _bad(text, 'starts_with takes a key and a str: starts_with(name, "p")')
        return _Leaf(key, ("starts_with", prefix))
    raise _bad(text, f"{_describe(node)} is not allowed in a filter")


def _compare(text: str, node: ast.Compare) -> _Node:
    """Convert ``a < key <= b``: a leaf per pair, each a key and a value (either side)."""
    leaves: list[_Node] = []
    sides = [node.left, *node.comparators]
    for op_node, left, right in zip(node.ops, sides, sides[1:], strict=False):
        op = _COMPARE[type(op_node)]
        key, other = _key(text, left), right
        if key is None:
            key, other = _key(text, right), left
            if key is None or op in ("in", "not in", "is", "is not"):
                shown = _describe(left if _key(text, left) is None else right)
                raise _bad(text, f"a comparison is a key and a value, not {shown}")
            op = _FLIPPED[op]
        leaves.append(_Leaf(key, _condition(text, op, _operand(text, other, op))))
    return leaves[0] if len(leaves) == 1 else _Bool("and", tuple(leaves))


def _condition(text: str, op: str, value: Any) -> Any:
    """Return the dict form's condition for `op` and `value` (``== None``: is null)."""
    if op in ("is", "is not"):
        if value is not None:
            raise _bad(text, "'is' compares with None only")
        return ("is_null",) if op == "is" else ("not_null",)
    if value is None and op in ("==", "!="):
        return ("is_null",) if op == "==" else ("not_null",)
    return value if op == "==" else (op, value)


def _operand(text: str, node: ast.expr, op: str) -> Any:
    if op in ("in", "not in"):
        if not isinstance(node, ast.List | ast.Tuple) or len(node.elts) > MAX_NODES:
            raise _bad(text, f"'{op}' takes a list of values: [1, 2]")
        return [_constant(text, element, required=True) for element in node.elts]
    return _constant(text, node, required=True)


_NOT_GIVEN: Final = object()


def _constant(text: str, node: ast.expr, *, required: bool = False) -> Any:
    """Return a str, int, float, bool or None literal (``-1`` too); refuse anything else."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = node.operand.value if isinstance(node.operand, ast.Constant) else None
        if isinstance(value, bool) or not isinstance(value, int | float):  # one sign, no more
            raise _bad(text, "a sign goes before a number")
        return _in_range(text, -value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, str | int | float | bool)
    ):
        return _in_range(text, node.value)
    if required:
        raise _bad(text, f"{_describe(node)} is not a value (str, number, bool, None)")
    return _NOT_GIVEN


def _in_range(text: str, value: Any) -> Any:
    """Refuse an int outside int64: Arrow (the catalog's integers) cannot compare it."""
    if type(value) is int and not -(2**63) <= value < 2**63:
        raise _bad(text, "an integer outside 64-bit signed range cannot be compared")
    return value


def _key(text: str, node: ast.expr) -> str | None:
    """Return the metadata key `node` names (``acc``, ``key("any name")``), or None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call) and _is_call(node, "key", 1):
        name = _constant(text, node.args[0])
        if not isinstance(name, str) or not name:
            raise _bad(text, 'key() takes one non-empty str: key("my key")')
        return name
    return None


def _is_call(node: ast.Call, name: str, arity: int) -> bool:
    return (
        isinstance(node.func, ast.Name)
        and node.func.id == name
        and len(node.args) == arity
        and not node.keywords
    )


def _describe(node: ast.AST) -> str:
    kind = type(node).__name__
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return f"calling {node.func.id}() (only starts_with and key)"
    return {
        "Call": "a call (only starts_with and key)",
        "Attribute": "attribute access",
        "Subscript": "subscripting",
        "Lambda": "a lambda",
        "JoinedStr": "an f-string",
        "Name": "a bare key (compare it: key == value)",
    }.get(kind, f"{kind} syntax")


def _arrow(node: _Node) -> Any:
    """Build the pyarrow.compute expression of a condition tree (pyarrow imported here)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def build(part: _Node) -> Any:
        if isinstance(part, _Leaf):
            return _leaf_expression(pc, part)
        built = [build(p) for p in part.parts]
        if part.op == "not":
            return ~built[0]
        out = built[0]
        for other in built[1:]:
            out = (out & other) if part.op == "and" else (out | other)
        return out

    try:
        return build(node)
    except (TypeError, ValueError, OverflowError, pa.ArrowException) as exc:  # list < 1
        raise click.BadParameter(f"Arrow cannot build it: {exc}", param_hint="--where") from None


def _leaf_expression(pc: Any, leaf: _Leaf) -> Any:
    """One condition as Arrow, with the dict form's meaning (`metatree.catalog`)."""
    field = pc.field(leaf.key)
    condition = leaf.condition
    if not isinstance(condition, tuple):
        return field.is_null() if condition is None else field == condition
    op, *rest = condition
    if op in ("is_null", "not_null"):
        return field.is_null() if op == "is_null" else field.is_valid()
    (operand,) = rest
    if op in ("in", "not in"):
        if not isinstance(operand, list):
            raise click.BadParameter(f"{op!r} takes a list: {leaf.key}", param_hint="--where")
        found = field.isin(operand)
        return found if op == "in" else ~found
    if op == "starts_with":
        return pc.starts_with(field, operand)
    return {
        "!=": field != operand,
        "<": field < operand,
        "<=": field <= operand,
        ">": field > operand,
        ">=": field >= operand,
    }[op]
