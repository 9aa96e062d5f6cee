"""Smoke test of the benchmark suite: ``python -m benchmarks --quick`` runs and reports.

Nothing here is about time (these machines are shared and noisy): the run must finish, write
every section with its plot, lose no update, and count what the request tests assert (counts
are exact where times are not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_benchmark_runs_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=540,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = (tmp_path / "benchmarks.md").read_text()
    for title in ("## Targets", "## Operations side by side", "## Scale", "## Concurrent",
                  "## Large files", "## Bulk"):  # fmt: skip
        assert title in report
    assert (tmp_path / "benchmarks-scale.png").stat().st_size > 10_000
    assert (tmp_path / "benchmarks-writers.png").stat().st_size > 10_000
    results = json.loads((tmp_path / "benchmarks.json").read_text())["results"]

    def ops(backend: str, impl: str) -> dict[str, int | None]:
        return {
            r["op"]: r["requests"]
            for r in results["ops"]
            if r["backend"] == backend and r["impl"] == impl
        }

    # the same sequences tests/test_requests.py asserts one by one
    s3 = ops("s3", "metatree")
    assert (s3["open"], s3["find3"], s3["get_small"], s3["update"], s3["put_leaf"]) == (
        1, 3, 5, 4, 9,
    )  # fmt: skip
    assert ops("local", "metatree")["find3"] is None  # no server, no count
    impls = {r["impl"] for r in results["ops"]}
    assert impls >= {"metatree", "floor"}
    if "metatreedb unavailable" not in done.stdout:  # no PyPI: its columns stay empty
        assert "metatreedb" in impls
    ours = [r for r in results["concurrency"] if r["impl"] == "metatree"]
    assert ours
    assert all(r["lost"] == 0 and r["ok"] > 0 for r in ours)
    # streamed, not read whole: the 32 MiB file must not show in the worker's peak RSS
    large = [r for r in results["large"] if r["impl"] == "metatree"]
    assert len(large) == 4  # put and get, local and S3
    assert all(r["mib"] == 32 and r["rss_growth_mib"] < 24 for r in large)
    built = results["build"][0]
    assert built["children"] == 100
    # --report-only renders the same report from the saved rows
    (tmp_path / "benchmarks.md").unlink()
    again = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--report-only", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "benchmarks.md").read_text() == report


@pytest.mark.timeout(120)
def test_large_nodes_runs_and_plots(tmp_path: Path) -> None:
    """Issue 16's large-node benchmark on a tiny node: every size measured, the scale plot drawn.

    Past the threshold (3 here) the node is format v2, so both index formats are timed.
    """
    out = tmp_path / "large.json"
    done = _large_nodes("--sizes", "2", "9", "--batch", "4", "--repeats", "2",
                        "--json", str(out), "--tmp", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["children"] for r in rows] == [2, 9]
    for r in rows:
        assert all(r[f"{op}_ms"] > 0 for op in ("put", "find", "update", "parent"))
    assert "| metatree | 9 |" in done.stdout
    synthetic = _large_nodes("--synthetic", "40", "--repeats", "2", "--tmp", str(tmp_path))
    assert synthetic.returncode == 0, synthetic.stdout + synthetic.stderr
    assert "| metatree | 40 |" in synthetic.stdout  # children of the hand-written log found
    from benchmarks import _report

    scale = [{"backend": "local", "impl": "metatree", "size": 10, "put_ms": 1.0, "find_ms": 1.0,
              "update_ms": 1.0}]  # fmt: skip
    large = [{**r, "backend": "local disk"} for r in rows]
    images = _report.plots({"scale": scale, "large_nodes": large}, str(tmp_path))
    assert (tmp_path / "benchmarks-scale.png").stat().st_size > 10_000
    assert len(images) == 1


def _large_nodes(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m benchmarks.large_nodes local ARGS`` at an index threshold of 3."""
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.large_nodes", "local", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        env=dict(os.environ, METATREE_INDEX_THRESHOLD="3"),
        check=False,
    )


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.timeout(600)
def test_latency_runs_and_counts_waves(tmp_path: Path) -> None:
    """Issue 17's latency benchmark on moto: timed both ways, its waves counted at the server.

    The counts are the ones tests/test_requests.py asserts: a find and a small get in two waves.
    """
    out = tmp_path / "latency.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.latency", "--backends", "s3", "--repeats", "1",
         "--delay", "0.005", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {(r["op"], r["waves_on"]): r for r in json.loads(out.read_text())}
    assert all(r["seconds"] > 0 for r in rows.values())
    assert (rows[("find", True)]["requests"], rows[("find", True)]["waves"]) == (3, 2)
    assert (rows[("find", False)]["requests"], rows[("find", False)]["waves"]) == (3, 3)
    assert (rows[("get", True)]["requests"], rows[("get", True)]["waves"]) == (5, 2)
    assert (rows[("get", False)]["requests"], rows[("get", False)]["waves"]) == (5, 5)
    assert (rows[("put new leaf", True)]["requests"], rows[("put new leaf", True)]["waves"]) == (
        9,
        6,
    )
    assert "#### s3 (the server holds each request 5 ms)" in done.stdout
