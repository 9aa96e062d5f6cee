"""A long differential fuzz campaign: ``scripts/fuzz [--programs N] [--seeds 1,2,3]``.

Each seed is one hypothesis run of N programs (generation only, nothing stops at a
divergence), all on one metatreedb worker. Prints one line per seed and a JSON summary:
programs run, programs compared to the end, where intended differences stopped the others,
divergences, seconds. For each seed that diverged, the same seed is run again with
shrinking, and hypothesis's smallest failing program is printed: that is the program to add
to ``test_fuzz.COUNTEREXAMPLES`` once fixed or documented. Exits 1 on any divergence.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings

from metatree.testing.reference import ensure_reference_venv, venv_python
from tests.differential.fuzz import Program, RefWorker, compare_program, programs, run_program


def _settings(examples: int, phases: list[Phase]) -> settings:
    return settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )


def run_seed(worker: RefWorker, number: int, examples: int, stats: Counter[str]) -> list[Any]:
    """Run `examples` programs from seed `number`; return the divergent ones."""
    found: list[Any] = []

    def one(program: Program) -> None:
        verdicts = compare_program(run_program(program, worker))
        stats["programs"] += 1
        stats["ops"] += len(program["ops"])
        if verdicts.problems:
            stats["divergences"] += 1
            found.append({"program": program, "problems": verdicts.problems})
        elif verdicts.stopped is not None:
            stats[f"stopped by {verdicts.stopped[1]}"] += 1
            stats["ops compared"] += verdicts.stopped[0] + 1
        else:
            stats["compared to the end"] += 1
            stats["ops compared"] += len(program["ops"])
        for name in verdicts.applied:
            stats[f"applied {name}"] += 1

    seed(number)(_settings(examples, [Phase.generate])(given(programs())(one)))()
    return found


def shrink(worker: RefWorker, number: int, examples: int) -> str:
    """Run seed `number` again, failing at the first divergence; return the shrunk report."""

    def strict(program: Program) -> None:
        verdicts = compare_program(run_program(program, worker))
        assert not verdicts.problems, "\n".join(verdicts.problems)

    test = seed(number)(
        _settings(examples, [Phase.generate, Phase.shrink])(given(programs())(strict))
    )
    try:
        test()
    except AssertionError as exc:
        return "\n".join([str(exc), *getattr(exc, "__notes__", [])])
    return "(did not diverge again)"


def main(argv: list[str] | None = None) -> int:
    """Run the campaign; print per-seed lines and the summary; 1 if anything diverged."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=1000, help="programs per seed")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated seeds")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    worker = RefWorker(venv_python(ensure_reference_venv()))
    stats: Counter[str] = Counter()
    diverged: dict[int, list[Any]] = {}
    began = time.monotonic()
    try:
        for number in seeds:
            start = time.monotonic()
            found = run_seed(worker, number, args.programs, stats)
            if found:
                diverged[number] = found
            took = time.monotonic() - start
            print(f"seed {number}: {args.programs} programs, {len(found)} divergent, {took:.0f} s")
            sys.stdout.flush()
        for number, found in diverged.items():
            print(f"\n== seed {number}: first divergence\n{found[0]['problems'][0]}")
            print(f"== seed {number}, shrunk:\n{shrink(worker, number, args.programs)}")
    finally:
        worker.close()
    summary = {"seeds": seeds, "seconds": round(time.monotonic() - began), **stats}
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 1 if diverged else 0


if __name__ == "__main__":
    sys.exit(main())
