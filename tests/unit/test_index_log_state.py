"""The in-memory state of a v2 log (`index.Log`): pieces applied, counted (never timed)."""

from __future__ import annotations

import random

from metatree._core import index
from metatree._core.plan import _nfc


def _model(state: list[str], base: set[str], add: list[str], remove: list[str]) -> list[str]:
    """What a log holds after a piece, by the format's rule: removals first, then additions."""
    out = [n for n in state if n not in remove]
    for name in add:
        if name not in out:
            out.append(name)
    return out


def test_pieces_applied_as_the_format_says() -> None:
    """Appending pieces (the fast path) and pieces that remove give the model's names."""
    rng = random.Random(16)
    pool = [f"n{i}" for i in range(40)]
    snapshot = pool[:10]
    state = index.Log("0" * 32, 0, index._Base(0, tuple(snapshot), frozenset(snapshot)))
    names = list(snapshot)
    for seq in range(1, 300):
        add = rng.sample(pool, rng.randint(0, 4))
        remove = rng.sample(pool, rng.randint(0, 2)) if rng.random() < 0.3 else []
        state = state.apply(seq, add, remove)
        names = _model(names, set(snapshot), add, remove)
        assert list(state) == names
        assert len(state) == len(names)
        assert all((n in state) == (n in names) for n in pool)
        for name in rng.sample(pool, 3):  # the tables, carried over or rebuilt, agree
            want = name.upper()
            assert state.lookalike(want, str.upper) == next(
                (n for n in state.added if n.upper() == want), None
            )


def test_an_appending_piece_does_not_fold_the_tail_again() -> None:
    """A put into a node whose pieces hold many names folds its own name, not all of them."""
    tail = [f"v{i}" for i in range(5000)]
    state = index.Log("0" * 32, 1, index._EMPTY_BASE).apply(1, tail, ())
    folds: list[str] = []

    def counting(name: str) -> str:
        folds.append(name)
        return _nfc(name)

    assert state.lookalike("v7", counting) == "v7"
    assert len(folds) == 5000
    for seq in range(2, 12):
        state = state.apply(seq, [f"w{seq}"], ())
        assert state.lookalike(f"w{seq}", counting) == f"w{seq}"
    assert len(folds) == 5000 + 10


def test_a_state_derived_while_a_table_is_built_never_copies_it_half_built() -> None:
    """A table is published whole: one derived meanwhile (a thread, here a re-entrant fold)
    builds its own, and finds every name."""
    tail = [f"v{i}" for i in range(100)]
    state = index.Log("0" * 32, 1, index._EMPTY_BASE).apply(1, tail, ())
    derived: list[index.Log] = []

    def fold(name: str) -> str:
        if name == "v50" and not derived:  # half way through the first table
            derived.append(state.apply(2, ["w"], ()))
        return name.upper()

    assert state.lookalike("V99", fold) == "v99"
    assert derived[0].lookalike("V99", fold) == "v99"
    assert derived[0].lookalike("W", fold) == "w"
