"""Benchmarks: metatree side by side with metatreedb 0.2.3 and the raw-fsspec floor.

    python -m benchmarks            # the published figures: docs/benchmarks.md and its PNGs
    python -m benchmarks --quick    # a smoke run (under a minute), written to a temp dir
    python -m benchmarks --sections large --metatree ../old --out /tmp/old   # a "before" run

Run from the repository root (``bash scripts/bench`` sets up the virtualenv first). metatreedb
0.2.3 is installed from PyPI into a cached virtualenv of its own; without it, its columns stay
empty and the report says why. Nothing here asserts anything about time: the figures are
written down, and docs/benchmarks.md says which targets they meet.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _report
from benchmarks._harness import Pythons, backend
from benchmarks._sections import (
    PLAN,
    Context,
    Settings,
    run_archive,
    run_build,
    run_bulk,
    run_concurrency,
    run_large,
    run_models,
    run_ops,
    run_scale,
    timed,
)

ROOT = Path(__file__).resolve().parent.parent
Results = dict[str, list[dict[str, Any]]]
RUNNERS = {
    "ops": run_ops,
    "scale": run_scale,
    "concurrency": run_concurrency,
    "large": run_large,
    "archive": run_archive,
    "bulk": run_bulk,
    "build": run_build,
    "models": run_models,
}


def _versions(pythons: Pythons) -> dict[str, str]:
    env = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}",
        "python": platform.python_version(),
    }
    env["metatree source"] = _source_of(pythons.source)
    for dist in ("metatree", "fsspec", "s3fs", "moto", "orjson"):
        try:
            env[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            env[dist] = "not installed"
    if pythons.reference:
        code = "import importlib.metadata as m; print(m.version('metatreedb'), m.version('fsspec'))"
        out = subprocess.run(
            [pythons.reference, "-I", "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        env["metatreedb"] = f"{out[0]} (its own virtualenv, fsspec {out[1]})"
    else:
        env["metatreedb"] = f"unavailable: {pythons.why_no_reference}"
    return env


def _source_of(folder: str) -> str:
    """The measured checkout and its commit (a dirty tree says so): runs stay comparable."""
    git = ["git", "-C", folder]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "metatree"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return folder
    return f"{os.path.basename(folder)} at {commit}" + (" (modified)" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--out", help="output directory (default: docs/, or a temp dir if quick)")
    parser.add_argument("--backends", nargs="+", choices=list(PLAN), default=list(PLAN))
    parser.add_argument("--sections", nargs="+", choices=list(RUNNERS), default=list(RUNNERS))
    parser.add_argument(
        "--metatree",
        default=str(ROOT),
        metavar="DIR",
        help="measure the metatree package of this checkout (default: this one), e.g. an old "
        "commit's worktree for a before/after run",
    )
    parser.add_argument(
        "--scale-max",
        type=int,
        metavar="N",
        help="grow the scale section to at most N children (the full run goes to 1 000 000, "
        "which takes metatree about an hour of building on a small machine)",
    )
    parser.add_argument(
        "--without-metatreedb",
        action="store_true",
        help="leave metatreedb out (its columns stay empty): faster before/after runs",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite benchmarks.md and the plots from benchmarks.json "
        "(after editing benchmarks/notes.md)",
    )
    args = parser.parse_args(argv)
    out_dir = args.out or (
        tempfile.mkdtemp(prefix="metatree-bench-") if args.quick else str(ROOT / "docs")
    )
    os.makedirs(out_dir, exist_ok=True)
    data = os.path.join(out_dir, "benchmarks.json")
    if args.report_only:
        with open(data) as stream:
            saved = json.load(stream)
        meta, results = saved["meta"], saved["results"]
    else:
        settings = Settings.quick() if args.quick else Settings.full()
        if args.scale_max:
            sizes = tuple(n for n in settings.scale_sizes if n <= args.scale_max)
            settings = dataclasses.replace(settings, scale_sizes=sizes)
        meta, results = measure(args, settings)
        with open(data, "w") as stream:
            json.dump({"meta": meta, "results": results}, stream, indent=1)
    images = _report.plots(results, out_dir)
    notes = ROOT / "benchmarks" / "notes.md"
    text = _report.render(results, meta, notes.read_text() if notes.exists() else "", images)
    with open(os.path.join(out_dir, "benchmarks.md"), "w") as stream:
        stream.write(text)
    print(f"written: {out_dir}/benchmarks.md ({meta['duration_s']:.0f} s of measuring)")
    return 0


def measure(args: argparse.Namespace, settings: Settings) -> tuple[dict[str, Any], Results]:
    """Run every planned section on every backend; return the run's facts and the rows."""
    began = time.perf_counter()
    source = os.path.abspath(args.metatree)
    if not os.path.isfile(os.path.join(source, "metatree", "__init__.py")):
        raise SystemExit(f"--metatree {source}: no metatree package there")
    pythons = Pythons.find(source, reference=not args.without_metatreedb)
    if pythons.reference is None:
        print(f"metatreedb unavailable, its columns stay empty: {pythons.why_no_reference}")
    results: Results = {key: [] for key in RUNNERS}
    backends = [b for b in args.backends if not (b == "seaweedfs" and not _has_seaweedfs())]
    log_path = os.path.join(tempfile.gettempdir(), "metatree-bench-workers.log")
    print(f"workers' stderr: {log_path}")
    with (
        tempfile.TemporaryDirectory(prefix="metatree-bench-") as tmp,
        open(log_path, "w") as log,
    ):
        ctx = Context(pythons, log, tmp, settings)
        for name in backends:
            wanted = [s for s in settings.plan.get(name, ()) if s in args.sections]
            if not wanted:
                continue
            print(f"{name}:", flush=True)
            with backend(name, tmp) as where:
                for section in wanted:
                    with timed(section):
                        results[section] += RUNNERS[section](ctx, where, settings)
    meta = {
        "command": "bash scripts/bench"
        + (" --quick" if args.quick else "")
        + (f" --scale-max {args.scale_max}" if args.scale_max else ""),
        "mode": "quick (smoke test: sizes too small to mean anything)" if args.quick else "full",
        "date": datetime.date.today().isoformat(),
        "duration_s": time.perf_counter() - began,
        "environment": _versions(pythons),
    }
    return meta, results


def _has_seaweedfs() -> bool:
    from metatree.testing.servers import SeaweedS3Server

    return SeaweedS3Server.binary() is not None or shutil.which("weed") is not None


if __name__ == "__main__":
    sys.exit(main())
