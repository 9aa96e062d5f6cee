"""``search --where``: expressions parsed to the dict or Arrow filter, hostile texts refused.

In process and without a tree: the parser is pure. The filters' effect on a real tree is
checked in test_commands.py (search on memory:// and local disk).
"""

from __future__ import annotations

import time
from typing import Any

import click
import pyarrow.compute as pc
import pytest

from metatree.cli._where import MAX_TEXT, parse_where


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("acc > 0.9 and framework == 'torch'", {"acc": (">", 0.9), "framework": "torch"}),
        ("0.9 < acc", {"acc": (">", 0.9)}),
        ("stage in ['a', 'b'] and n not in (1, 2)", {"stage": ("in", ["a", "b"]), "n": ("not in", [1, 2])}),
        ("note is None and tag is not None", {"note": ("is_null",), "tag": ("not_null",)}),
        ("x == None and y != None", {"x": ("is_null",), "y": ("not_null",)}),
        ('starts_with(name, "v1") and key("my key") == -1', {"name": ("starts_with", "v1"), "my key": -1}),
        ('key("class") == True and n >= -2.5', {"class": True, "n": (">=", -2.5)}),
    ],
)  # fmt: skip
def test_plain_and_is_the_dict_form(expression: str, expected: dict[str, Any]) -> None:
    assert parse_where((expression,)) == expected


def test_the_dict_form_keeps_working() -> None:
    assert parse_where(("u=http://x", "t=not_in:[1]", "s=starts_with:v", "a=eq:=1")) == {
        "u": "http://x",
        "t": ("not in", [1]),
        "s": ("starts_with", "v"),
        "a": ("==", "=1"),
    }
    assert parse_where(("my key=1", "n=is_null:")) == {"my key": 1, "n": ("is_null",)}
    assert parse_where(()) is None


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (("acc > 0.9 or fw == 'torch'",), (pc.field("acc") > 0.9) | (pc.field("fw") == "torch")),
        (("not (n == 1)",), ~(pc.field("n") == 1)),
        (("0.5 < acc <= 0.9",), (pc.field("acc") > 0.5) & (pc.field("acc") <= 0.9)),
        (("n is None or n in [1]", "m=gt:2"),
         (pc.field("n").is_null() | pc.field("n").isin([1])) & (pc.field("m") > 2)),
        (("a=1", "a=ne:2"), (pc.field("a") == 1) & (pc.field("a") != 2)),  # a key twice
        (("not starts_with(s, 'v') or x not in [1]",),
         ~pc.starts_with(pc.field("s"), "v") | ~pc.field("x").isin([1])),
    ],
)  # fmt: skip
def test_or_and_not_are_an_arrow_expression(where: tuple[str, ...], expected: Any) -> None:
    got = parse_where(where)
    assert isinstance(got, pc.Expression)
    assert got.equals(expected), (str(got), str(expected))


def test_the_int64_range_is_accepted_to_its_ends() -> None:
    got = parse_where((f"a >= -{2**63} and b <= {2**63 - 1}",))
    assert got == {"a": (">=", -(2**63)), "b": ("<=", 2**63 - 1)}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("__import__('os')", "calling __import__()"),
        ("__import__('os').system('x') == 0", "a call"),
        ("().__class__", "attribute access"),
        ("a.b == 1", "attribute access"),
        ("x[0] == 1", "subscripting"),
        ("(lambda: 1)() == 1", "a call"),
        ("lambda: 1", "a lambda"),
        ("f'{a}' == 'x'", "f-string"),
        ("a == b", "a bare key"),
        ("a in b", "a list of values"),
        ("a == [1]", "not a value"),
        ("a is 1", "None only"),
        ("acc", "a bare key"),
        ("a + 1 == 2", "BinOp"),
        ("(" * 1000 + "a == 1" + ")" * 1000, "nested"),
        ("not " * 1000 + "a == 1", "deeper than"),
        ("-" * 5000 + "1 == a", "too complex"),
        ("a == " + "-" * 2000 + "1", "a sign goes before a number"),
        ("a < " + " < ".join(["1"] * 1200), "over 1000 parts"),
        ("a<1 or " * 1200 + "a<1", "over 1000 parts"),
        ("a" * 10 * 1024 * 1024, f"longer than {MAX_TEXT}"),
        ("a\x00 < 1", "not an expression"),
        ("=1", "not an expression"),
        ("fw == 'torch", "not a valid expression"),  # not the KEY=VALUE {"fw ": "= 'torch"}
        ("a >= 1 and", "not a valid expression"),
        ("a == 1" + "0" * 5000, "not a valid expression"),  # Python's digit limit
        ("a == 0x" + "f" * 5000, "outside 64-bit signed range"),
        ("a == -99999999999999999999999999 or a > 1", "outside 64-bit signed range"),
        (f"a == {2**64 - 1} or a > 1", "outside 64-bit signed range"),
        (f"a == {2**63}", "outside 64-bit signed range"),
        (f"a > -{2**63 + 1}", "outside 64-bit signed range"),
        (f"a in [1, {2**63}]", "outside 64-bit signed range"),
        ("x := 1", "not a valid expression"),  # not the KEY=VALUE {"x :": " 1"}
        ("acc == '\udcff'", "not UTF-8 text"),  # a byte the locale could not decode
        ("a\udcff=1", "not UTF-8 text"),
    ],
)
def test_hostile_expressions_are_refused(text: str, says: str) -> None:
    started = time.monotonic()
    with pytest.raises(click.BadParameter) as caught:
        parse_where((text,))
    assert says in caught.value.format_message()
    assert len(caught.value.format_message()) < 300  # the text is shown cut short
    assert time.monotonic() - started < 5  # a bound against a hang, not a timing claim
