"""metatreedb 0.2.3, the reference implementation, in a virtualenv of its own.

metatreedb installs a top-level package named ``metatree``, the name of ours, so it lives in
its own virtualenv and is driven in a subprocess (the differential tests and the benchmarks).
The virtualenv is built once and cached under the user cache directory; it is built in a
temporary directory and renamed into place, so an interrupted build never leaves a
half-installed cache behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = [
    "REFERENCE",
    "ReferenceUnavailable",
    "ensure_reference_venv",
    "run_tool",
    "venv_python",
]


class ReferenceUnavailable(RuntimeError):
    """The reference virtualenv cannot be built here (no index, pip failed, ...)."""


REFERENCE = "metatreedb==0.2.3"
INSTALL_TIMEOUT = 100.0
"""Seconds pip may take (a cold install takes about 10 s here); past that the tests skip."""
_STALE_BUILD = 3600.0


def cache_dir() -> Path:
    """Return the cache directory of the reference virtualenv (one per Python version)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return Path(base) / "metatree-tests" / f"metatreedb-0.2.3-{tag}"


def venv_python(venv: Path) -> Path:
    """Return the interpreter of the virtualenv `venv`."""
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


_CHECK = (
    "import importlib.metadata as m, metatree, metatree.metatree, sys; "
    "assert m.version('metatreedb') == '0.2.3', m.version('metatreedb'); "
    "assert metatree.__file__.startswith(sys.prefix), metatree.__file__"
)


def is_valid(venv: Path) -> bool:
    """Whether `venv` runs and imports metatreedb 0.2.3's ``metatree`` from its own site."""
    python = venv_python(venv)
    if not python.exists():
        return False
    with tempfile.TemporaryDirectory() as cwd:
        try:
            done = subprocess.run(
                [str(python), "-I", "-c", _CHECK],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["(no output)"])[-1]


def run_tool(command: list[str], what: str, deadline: float) -> None:
    """Run a pip or venv step; raise `ReferenceUnavailable` with the tool's last error line.

    Also how the drop-in suite downloads metatreedb's distribution (tests/dropin).
    """
    env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=max(deadline - time.monotonic(), 1.0),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ReferenceUnavailable(f"{what} {REFERENCE}: timed out") from None
    except OSError as exc:
        raise ReferenceUnavailable(f"{what} {REFERENCE}: failed to start: {exc}") from None
    if done.returncode != 0:
        error = _last_error(done.stderr + "\n" + done.stdout)
        raise ReferenceUnavailable(f"{what} {REFERENCE} exited {done.returncode}: {error}")


def _build(venv: Path) -> None:
    """Create a virtualenv at `venv` and pip-install the reference into it."""
    deadline = time.monotonic() + INSTALL_TIMEOUT
    python = str(venv_python(venv))
    if importlib.util.find_spec("pip") is not None:
        # fast path: a virtualenv without pip, filled by our own pip (pip >= 22.3)
        run_tool([sys.executable, "-m", "venv", "--without-pip", str(venv)], "venv", deadline)
        pip = [sys.executable, "-m", "pip", "--python", python]
    else:
        run_tool([sys.executable, "-m", "venv", str(venv)], "venv", deadline)
        pip = [python, "-m", "pip"]
    install = ["install", "--quiet", "--no-input", "--no-compile", REFERENCE]
    run_tool([*pip, *install], "pip install", deadline)


def _sweep_stale_builds(parent: Path) -> None:
    """Remove build directories left by killed runs (older than an hour)."""
    for old in parent.glob(".build-*"):
        try:
            if time.time() - old.stat().st_mtime > _STALE_BUILD:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            continue


def ensure_reference_venv() -> Path:
    """Return the cached reference virtualenv, building it first if needed."""
    target = cache_dir()
    if is_valid(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_builds(target.parent)
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        _build(build)
        if not is_valid(build):
            raise ReferenceUnavailable(
                f"{REFERENCE} installed, but its 'metatree' package does not import"
            )
        if target.exists() and not is_valid(target):
            shutil.rmtree(target, ignore_errors=True)
        try:
            build.rename(target)
        except OSError:
            # another session renamed its build into place first: use that one
            if not is_valid(target):
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target
