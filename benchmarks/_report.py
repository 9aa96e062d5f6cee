"""Turn the benchmark's rows into docs: markdown tables, the targets, and two PNG plots."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from benchmarks._sections import MODEL_OPS, OPS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

Rows = list[dict[str, Any]]
OP_NAMES = dict(OPS) | dict(MODEL_OPS)
BACKEND_NAMES = {
    "local": "local disk",
    "s3": "S3 (moto server)",
    "webhdfs": "WebHDFS (test server)",
    "seaweedfs": "S3 (SeaweedFS)",
    "azure": "Azure Blob (Azurite)",
}


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _pick(rows: Rows, **match: Any) -> dict[str, Any] | None:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return found[0] if found else None


# -- sections -----------------------------------------------------------------------------
def _per_backend(rows: Rows, header: list[str], body: Callable[[Rows], list[list[Any]]]) -> str:
    """One table per backend, in the order the backends ran; `body` gets that backend's rows."""
    tables = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == backend]
        tables.append(f"#### {BACKEND_NAMES[backend]}\n\n{_table(header, body(mine))}")
    return "\n\n".join(tables)


def _stopped(row: dict[str, Any], count: str) -> Any:
    return row[count] if row["complete"] else f"{row[count]} (stopped)"


def ops_tables(rows: Rows) -> str:
    def body(mine: Rows) -> list[list[Any]]:
        out = []
        for op, label in OPS:
            ours = _pick(mine, impl="metatree", op=op) or {}
            ref = _pick(mine, impl="metatreedb", op=op) or {}
            floor = _pick(mine, impl="floor", op=op) or {}
            out.append(
                [
                    label,
                    ours.get("requests"),
                    floor.get("requests"),
                    ref.get("requests"),
                    _ratio(ref.get("requests"), ours.get("requests")),
                    ours.get("median_ms"),
                    ours.get("p90_ms"),
                    floor.get("median_ms"),
                    ref.get("median_ms"),
                    ref.get("p90_ms"),
                    _ratio(ref.get("median_ms"), ours.get("median_ms")),
                ]
            )
        return out

    header = [
        "operation",
        "requests: metatree",
        "floor",
        "metatreedb",
        "metatreedb ÷ ours",
        "ms median: metatree",
        "p90",
        "floor",
        "metatreedb",
        "p90",
        "metatreedb ÷ ours",
    ]
    return _per_backend(rows, header, body)


def scale_tables(rows: Rows) -> str:
    header = [
        "implementation",
        "children",
        "puts per write",
        "build s (step)",
        "build s (total)",
        "put ms",
        "find ms",
        "update parent ms",
    ]
    return _per_backend(
        rows,
        header,
        lambda mine: [
            [
                r["impl"],
                _stopped(r, "size"),
                f"{r['batch']:,} per batch".replace(",", " ") if r["batch"] > 1 else "1",
                r["build_s"],
                r["build_total_s"],
                r.get("put_ms"),
                r.get("find_ms"),
                r.get("update_ms"),
            ]
            for r in mine
        ],
    )


def concurrency_tables(rows: Rows) -> str:
    header = ["implementation", "writers", "ok updates", "ok updates/s", "lost", "failed"]
    return _per_backend(
        rows,
        header,
        lambda mine: [
            [r["impl"], r["writers"], r["ok"], r["ok_per_s"], r["lost"], r["errors"]] for r in mine
        ],
    )


def _transfer_tables(rows: Rows, columns: list[tuple[str, str]]) -> str:
    """Transfers per backend: `columns` (key, header) around MiB/s, its share of the floor."""

    def body(mine: Rows) -> list[list[Any]]:
        out = []
        for r in mine:
            floor = _pick(mine, impl="floor", kind=r["kind"])
            share = _ratio(r["mib_per_s"], floor["mib_per_s"] if floor else None)
            out.append(
                [r[key] for key, _ in columns]
                + [r["mib_per_s"], None if share is None else f"{share:.0%}", r["rss_growth_mib"]]
            )
        return out

    header = [title for _, title in columns] + ["MiB/s", "of floor", "peak RSS growth MiB"]
    return _per_backend(rows, header, body)


def large_tables(rows: Rows) -> str:
    return _transfer_tables(
        rows,
        [("impl", "implementation"), ("kind", "op"), ("mib", "MiB"), ("seconds", "seconds")],
    )


def archive_tables(rows: Rows) -> str:
    return _transfer_tables(
        rows,
        [
            ("impl", "implementation"),
            ("kind", "op"),
            ("files", "files"),
            ("mib", "MiB"),
            ("stored_mib", "stored MiB"),
            ("seconds", "seconds"),
        ],
    )


def bulk_tables(rows: Rows) -> str:
    header = ["mode", "puts", "seconds", "puts/s", "requests"]
    return _per_backend(
        rows,
        header,
        lambda mine: [
            [r["mode"], _stopped(r, "puts"), r["seconds"], r["puts_per_s"], r["requests"]]
            for r in mine
        ],
    )


def models_tables(rows: Rows) -> str:
    ops = [r for r in rows if r["kind"] == "op"]
    storms = [r for r in rows if r["kind"] == "storm"]
    text = _per_backend(
        ops,
        ["operation", "requests", "median ms", "p90 ms"],
        lambda mine: [
            [OP_NAMES[r["op"]], r["requests"], r["median_ms"], r["p90_ms"]] for r in mine
        ],
    )
    if storms:
        header = ["backend", "writers", "ok switches", "ok switches/s", "lost", "failed"]
        keys = ("writers", "ok", "ok_per_s", "lost", "errors")
        body = [[BACKEND_NAMES[r["backend"]], *(r[k] for k in keys)] for r in storms]
        text += "\n\n#### Writers switching one alias\n\n" + _table(header, body)
    return text


# -- targets ------------------------------------------------------------------------------
Target = tuple[str, str, bool]
"""(what, the measured figure, met)."""


def _vs_others(ops: Rows) -> Iterator[Target]:
    excess, req_ratios, lat_ratios = [], [], []
    for r in (r for r in ops if r["impl"] == "metatree"):
        where = (r["backend"], OP_NAMES[r["op"]])
        floor = _pick(ops, backend=r["backend"], impl="floor", op=r["op"])
        ref = _pick(ops, backend=r["backend"], impl="metatreedb", op=r["op"])
        if floor and r["requests"] is not None:
            excess.append((r["requests"] - floor["requests"], *where))
        if ref and r["requests"]:
            req_ratios.append((ref["requests"] / r["requests"], *where))
        if ref:
            lat_ratios.append((ref["median_ms"] / r["median_ms"], *where))
    if excess:
        above = [e for e in excess if e[0] > 0]
        below = sum(1 for e in excess if e[0] < 0)
        detail = ", ".join(f"{op} on {b} +{n}" for n, b, op in above) or "none"
        figure = (
            f"{len(excess) - len(above)} of {len(excess)} at or below the floor "
            f"({below} below); above: {detail}"
        )
        yield "at the request floor on every operation", figure, not above
    for label, ratios, goal in (
        ("at least 10x fewer requests than metatreedb", req_ratios, 10.0),
        ("at least 5x lower latency than metatreedb", lat_ratios, 5.0),
    ):
        if ratios:
            worst = min(ratios)
            misses = sum(1 for r in ratios if r[0] < goal)
            figure = (
                f"worst {worst[0]:.1f}x ({worst[2]}, {worst[1]}); "
                f"{len(ratios) - misses} of {len(ratios)} meet it"
            )
            yield label, figure, misses == 0


def _build(results: dict[str, Rows]) -> Iterator[Target]:
    for r in results.get("build", []):
        label = f"{r['children']:,} children in under 15 s on local disk"
        yield label, f"{r['seconds']:.1f} s in one transaction", r["seconds"] < 15
    for r in results.get("scale", []):
        if r["backend"] == "local" and r["impl"] == "metatree" and r["target"] == 10_000:
            total = r["build_total_s"]
            yield "(the same, one put at a time)", f"{total:.1f} s", total < 15


def _concurrency(conc: Rows) -> Iterator[Target]:
    if not conc:
        return
    top = max(r["writers"] for r in conc)
    for r in conc:
        if r["impl"] == "metatree" and r["backend"] == "local" and r["writers"] == top:
            label = f"at least 300 ok updates/s with {top} writers on local disk, 0 lost"
            figure = f"{r['ok_per_s']:.0f}/s, {r['lost']} lost"
            yield label, figure, r["ok_per_s"] >= 300 and r["lost"] == 0
    lost = sum(r["lost"] for r in conc if r["impl"] == "metatree")
    yield "metatree loses no update (every backend and writer count)", f"{lost} lost", not lost


def _large(large: Rows) -> Iterator[Target]:
    for r in (r for r in large if r["impl"] == "metatree"):
        floor = _pick(large, backend=r["backend"], impl="floor", kind=r["kind"])
        if floor:
            share = r["mib_per_s"] / floor["mib_per_s"]
            label = (
                f"{r['kind']} {r['mib']:,.0f} MiB on {BACKEND_NAMES[r['backend']]}: "
                "at least 90 % of raw fsspec, under 64 MiB RSS growth"
            )
            figure = f"{share:.0%}, {r['rss_growth_mib']:.0f} MiB"
            yield label, figure, share >= 0.9 and r["rss_growth_mib"] < 64


def _archive(rows: Rows) -> Iterator[Target]:
    for r in (r for r in rows if r["impl"] == "metatree"):
        label = (
            f"archive {r['kind']} of {r['mib']:,.0f} MiB in {r['files']:,} files on "
            f"{BACKEND_NAMES[r['backend']]}: streamed, under 64 MiB RSS growth"
        )
        figure = f"{r['rss_growth_mib']:.0f} MiB ({r['mib_per_s']:.0f} MiB/s)"
        yield label, figure, r["rss_growth_mib"] < 64


def targets(results: dict[str, Rows]) -> str:
    """The issue's targets, each with the measured figure and met / missed."""
    found = [
        *_vs_others(results.get("ops", [])),
        *_build(results),
        *_concurrency(results.get("concurrency", [])),
        *_large(results.get("large", [])),
        *_archive(results.get("archive", [])),
    ]
    rows = [[label, figure, "met" if ok else "**missed**"] for label, figure, ok in found]
    return _table(["target", "measured", ""], rows)


# -- plots --------------------------------------------------------------------------------
def plots(results: dict[str, Rows], out_dir: str) -> list[str]:
    """Latency against children, and throughput against writers; return the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    scale = [r for r in results.get("scale", []) if r.get("put_ms") is not None]
    if scale:
        fig, axes = plt.subplots(1, 3, figsize=(14, 5.4), sharex=True)
        for ax, metric, title in zip(
            axes,
            ("put_ms", "find_ms", "update_ms"),
            ("put a new child", "find a child", "update the parent"),
            strict=True,
        ):
            for key in dict.fromkeys((r["backend"], r["impl"]) for r in scale):
                line = [r for r in scale if (r["backend"], r["impl"]) == key]
                ax.plot(
                    [r["size"] for r in line],
                    [r[metric] for r in line],
                    marker="o",
                    label=f"{key[1]} · {BACKEND_NAMES[key[0]]}",
                )
            _large_nodes_lines(ax, results.get("large_nodes", []), metric)
            ax.set(
                xscale="log",
                yscale="log",
                title=title,
                xlabel="children of the parent",
                ylabel="median latency (ms)",
            )
            ax.grid(True, which="both", alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
        fig.tight_layout(rect=(0, 0.2, 1, 1))
        path = os.path.join(out_dir, "benchmarks-scale.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    conc = results.get("concurrency", [])
    if conc:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for key in dict.fromkeys((r["backend"], r["impl"]) for r in conc):
            line = [r for r in conc if (r["backend"], r["impl"]) == key]
            ax.plot(
                [r["writers"] for r in line],
                [r["ok_per_s"] for r in line],
                marker="o",
                linestyle="-" if key[1] == "metatree" else "--",
                label=f"{key[1]} · {BACKEND_NAMES[key[0]]}",
            )
        ax.set(
            xlabel="writer processes",
            ylabel="ok updates per second (log)",
            yscale="log",
            title="updates of one node: throughput (metatreedb loses most of its 'ok's)",
        )
        ax.set_xticks(sorted({r["writers"] for r in conc}))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, "benchmarks-writers.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


LARGE_METRIC = {"put_ms": "put_ms", "find_ms": "find_ms", "update_ms": "parent_ms"}
"""The scale plot's metrics in the rows of ``python -m benchmarks.large_nodes``."""


def _large_nodes_lines(ax: Any, rows: Rows, metric: str) -> None:
    """Add issue 16's large-node runs (metatree alone, to a million children) to a scale panel.

    They come from ``python -m benchmarks.large_nodes`` (built in transactions of 10 000, each
    size measured on a freshly opened tree), merged into benchmarks.json under
    ``large_nodes`` with a ``backend`` per row.
    """
    for backend in dict.fromkeys(r["backend"] for r in rows):
        line = [r for r in rows if r["backend"] == backend and r.get(LARGE_METRIC[metric])]
        ax.plot(
            [r["children"] for r in line],
            [r[LARGE_METRIC[metric]] for r in line],
            marker="s",
            linestyle=":",
            label=f"metatree · {backend} (large_nodes, transactions of 10 000)",
        )


SECTIONS = {
    "ops": (
        "Operations side by side",
        ops_tables,
        (
            "Requests are counted at the server for one run of the operation after a warm-up; "
            "latency is over the repeated runs. Local disk has no server, so no count. Tree: "
            "keys (a, b, c), node x/y/z with file f, `x.active = y`, `x/y/z.model_file = f`."
        ),
    ),
    "scale": (
        "Scale: one parent, many children",
        scale_tables,
        (
            "Latencies are medians at each size; put adds a new child, find resolves one child, "
            "update rewrites the parent (whose metadata.json holds the children index)."
        ),
    ),
    "concurrency": (
        "Concurrent writers on one node",
        concurrency_tables,
        (
            "Each writer updates its own keys of one node for a fixed time; lost = updates that "
            "returned but are missing afterwards. moto's conditional writes are not atomic, so "
            "S3 runs on SeaweedFS here; Azure runs on Azurite."
        ),
    ),
    "large": (
        "Large files",
        large_tables,
        (
            "One file, put then get, each in a fresh process; the floor is fsspec's "
            "`put_file`/`get_file`. Peak RSS growth is the worker's ru_maxrss after minus before."
        ),
    ),
    "archive": (
        "Archives",
        archive_tables,
        (
            "A directory of random files put as one streamed `.tar.gz` (`archive=True`), then "
            "got back with `extract_to=` into a fresh directory, each in a fresh process; MiB/s "
            "is of the directory's size. The floor is Python's `tarfile` streamed through "
            "fsspec's `open` (gzip level 6, as metatree's), with no scan, checks or sha256. "
            "metatreedb has no archives."
        ),
    ),
    "bulk": (
        "Bulk: many puts",
        bulk_tables,
        "New children of one node; requests are all the run sent.",
    ),
    "models": (
        "The model store",
        models_tables,
        (
            "metatree's `ModelStore` alone (metatreedb has none): requests of one call, counted "
            "at the server, and latencies, on a domain of a few versions. The alias storm: "
            "writers switch one alias between models of their own for a fixed time; every "
            "acked switch must be one history entry (lost: those missing). Not on moto, whose "
            "conditional writes are not atomic."
        ),
    ),
}
"""Report sections: title, table maker, and what the figures mean."""


def render(results: dict[str, Rows], meta: dict[str, Any], notes: str, images: list[str]) -> str:
    """The whole docs/benchmarks.md."""
    header = (
        f"Command: `{meta['command']}` · mode: **{meta['mode']}** · {meta['date']} · "
        f"{meta['duration_s']:.0f} s\n"
    )
    parts = [
        "# Benchmarks\n",
        "<!-- generated by `bash scripts/bench`: edit benchmarks/notes.md, not this file -->\n",
        header,
        _table(["", ""], [[k, v] for k, v in meta["environment"].items()]) + "\n",
        "## Targets\n",
        targets(results) + "\n",
        notes.strip() + "\n",
    ]
    for key, (title, table, intro) in SECTIONS.items():
        if results.get(key):
            parts += [f"## {title}\n", intro + "\n", table(results[key]) + "\n"]
    parts += [f"![{os.path.basename(i)}]({os.path.basename(i)})\n" for i in images]
    return "\n".join(parts)
