"""Progress bars in a real terminal: tmux runs the command, ``capture-pane`` reads the screen.

Skipped when tmux is absent (.ci/run installs the Debian package ``tmux``). Without a
terminal no bar is drawn: test_subprocess.py checks that stderr stays empty.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from metatree import Metatree

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def screen(name: str) -> str:
    done = subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_put_and_get_draw_a_bar_on_a_terminal(tmp_path: Path) -> None:
    root = str(tmp_path / "db")
    Metatree(root, ("model", "version"))
    (tmp_path / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    run = f"{shlex.quote(sys.executable)} -m metatree -r {shlex.quote(root)}"
    script = (
        f"cd {shlex.quote(str(tmp_path))}; export PYTHONPATH={shlex.quote(os.pathsep.join(sys.path))}; "
        f"{run} put m/v1 big.bin; {run} get m/v1/big.bin copy.bin; "
        f"{run} -q put m/v2 big.bin; echo END; sleep 60"
    )
    name = f"metatree-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", name, "-x", "150", "-y", "20", script], check=True
    )
    try:
        deadline = time.monotonic() + 60  # a bound on waiting, not a timed assertion
        while "END" not in (shown := screen(name)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False)
    lines = [line for line in shown.splitlines() if line.strip()]
    bars = [line for line in lines if "MiB" in line]
    assert bars == ["big.bin [##############################] 4.0/4.0 MiB"] * 2, lines
    assert lines[-1] == "END"
    assert lines[-2].endswith("/m/v2/big.bin")  # with -q: the URL, no bar before it
    assert "MiB" not in lines[-3]


def test_walks_draw_a_node_counter_on_a_terminal(tmp_path: Path) -> None:
    root = str(tmp_path / "db")
    tree = Metatree(root, ("model", "version"))
    for version in ("v1", "v2"):
        tree.put(f"m/{version}", b"x", name="f")
    # one interpreter runs the six commands (each in the real click group, stdout to
    # /dev/null, stderr the terminal): one start-up instead of six
    commands = [["search"], ["tree"], ["verify"], ["fsck"], ["catalog", "export", "out"]]
    commands.append(["-q", "search"])
    program = (
        "import os, sys\n"
        "from metatree.cli.main import cli\n"
        "sys.stdout = open(os.devnull, 'w')\n"
        f"for args in {commands!r}:\n"
        "    print('# ' + ('quiet' if args[0] == '-q' else args[0]), file=sys.stderr)\n"
        f"    try: cli(['-r', {root!r}, *args], prog_name='metatree')\n"
        "    except SystemExit: pass\n"
    )
    (tmp_path / "walks.py").write_text(program)
    script = (
        f"cd {shlex.quote(str(tmp_path))}; export PYTHONPATH={shlex.quote(os.pathsep.join(sys.path))}; "
        f"{shlex.quote(sys.executable)} walks.py; echo END; sleep 60"
    )
    name = f"metatree-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", name, "-x", "150", "-y", "40", script], check=True
    )
    try:
        deadline = time.monotonic() + 60  # a bound on waiting, not a timed assertion
        while "END" not in (shown := screen(name)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False)
    blocks: dict[str, list[str]] = {}  # what each command left on the screen
    for line in (line.strip() for line in shown.splitlines() if line.strip()):
        if line.startswith("# "):
            blocks[line[2:].split()[0]] = current = []
        else:
            current.append(line)
    assert list(blocks) == ["search", "tree", "verify", "fsck", "catalog", "quiet"], shown
    for command in ("search", "tree", "verify", "fsck", "catalog"):  # root, m, m/v1, m/v2
        assert "scanned 4 nodes" in blocks[command], (command, shown)
    assert blocks["quiet"] == ["END"]  # -q: no counter
