"""Fetch metatreedb 0.2.3's ``tests/test_metatree.py`` with pip, and run it against metatree.

The file is taken from the wheel on PyPI (the sdist only if the wheel lacked it), checked
against its SHA-256 so the run is of exactly the published file, and cached beside the
reference virtualenv of the differential tests (`metatree.testing.reference.cache_dir`), so
pip runs once per machine.

It runs in a pytest subprocess, from a temporary directory holding only the file and
`tests.dropin.shim_conftest`: the file imports ``metatree`` (metatreedb's package name, which
is ours) and a private submodule that is stubbed there only, so nothing of it can leak into
our session; it needs its file order and its own default configuration (our
``filterwarnings = error``, doctests and ``tests`` package are not its); and a hang or crash
in it ends at a timeout instead of taking our session down. The subprocess imports the same
``metatree`` as this session (its directory comes first on ``PYTHONPATH``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import metatree
from metatree.testing.reference import REFERENCE, ReferenceUnavailable, cache_dir, run_tool

SUITE = "tests/test_metatree.py"
SUITE_SHA256 = "6c66d1e173fad731e8768c376455734a75bbb9b509aec704049e42aa0e61bd4b"
"""metatreedb 0.2.3's file as published (wheel and sdist); any other content is refused."""
PIP_TIMEOUT = 100.0
RUN_TIMEOUT = 120.0
SHIM = Path(__file__).with_name("shim_conftest.py")


class SuiteUnavailable(RuntimeError):
    """pip cannot download metatreedb here (no index, no pip, ...): the tests skip."""


def suite_cache() -> Path:
    """Where the extracted file is kept, beside the reference virtualenv."""
    return cache_dir().parent / "metatreedb-0.2.3-suite" / "test_metatree.py"


def _deadline() -> float:
    return time.monotonic() + PIP_TIMEOUT


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pip_download(dest: Path, binary: str) -> Path:
    """Download the distribution (``binary``: pip's ``--only-binary``/``--no-binary`` flag)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", binary]
    try:
        run_tool([*command, "--dest", str(dest), REFERENCE], "pip download", _deadline())
    except ReferenceUnavailable as exc:
        raise SuiteUnavailable(str(exc)) from None
    files = sorted(dest.iterdir())
    if len(files) != 1:
        raise SuiteUnavailable(f"pip download {REFERENCE} left {[f.name for f in files]}")
    return files[0]


def _member(archive: Path) -> bytes | None:
    """The suite's bytes from a wheel or an sdist, or None when it has no such file."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(SUITE) if SUITE in wheel.namelist() else None
    with tarfile.open(archive) as sdist:
        for member in sdist.getmembers():
            # an sdist holds <name>-<version>/tests/test_metatree.py
            if member.isfile() and member.name.split("/", 1)[-1] == SUITE:
                extracted = sdist.extractfile(member)
                return None if extracted is None else extracted.read()
    return None


def fetch_suite() -> Path:
    """Return metatreedb 0.2.3's test file, downloading it with pip on first use."""
    target = suite_cache()
    if target.is_file() and _digest(target.read_bytes()) == SUITE_SHA256:
        return target
    if importlib.util.find_spec("pip") is None:
        raise SuiteUnavailable(f"cannot download {REFERENCE}: pip is not installed here")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        data, failures = None, []
        for binary in ("--only-binary=:all:", "--no-binary=:all:"):  # the wheel, else the sdist
            dest = Path(work) / binary.strip("-=:")
            dest.mkdir()
            try:
                data = _member(_pip_download(dest, binary))
            except SuiteUnavailable as exc:
                failures.append(exc)
                continue
            if data is not None:
                break
        if data is None and failures:
            raise failures[0]
        if data is None:
            raise AssertionError(f"{REFERENCE} has no {SUITE} in its wheel or its sdist")
        if _digest(data) != SUITE_SHA256:
            raise AssertionError(f"{REFERENCE}'s {SUITE} is not the file this test pins")
        staged = Path(work) / target.name
        staged.write_bytes(data)
        os.replace(staged, target)  # whole or not at all: concurrent sessions may race
    return target


@dataclass(frozen=True)
class Outcome:
    """How one of metatreedb's tests ended: passed, failed, error or skipped, and why."""

    status: str
    detail: str = ""


@dataclass(frozen=True)
class SuiteRun:
    """A run of the suite: each test's outcome by name, and pytest's output."""

    outcomes: dict[str, Outcome]
    returncode: int
    output: str


def run_suite(suite: Path, workdir: Path) -> SuiteRun:
    """Run `suite` with pytest in a subprocess from `workdir`, against this ``metatree``."""
    shutil.copyfile(suite, workdir / "test_metatree.py")
    shutil.copyfile(SHIM, workdir / "conftest.py")
    (workdir / "pytest.ini").write_text("[pytest]\n")  # its defaults, never our config
    report = workdir / "report.xml"
    ours = str(Path(metatree.__file__).resolve().parent.parent)
    path = [ours, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
    command += ["-rA", f"--junitxml={report}", "test_metatree.py"]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    output = f"{done.stdout}\n{done.stderr}\n({time.monotonic() - started:.1f} s)"
    outcomes = _outcomes(report.read_bytes()) if report.exists() else {}
    return SuiteRun(outcomes, done.returncode, output)


def _outcomes(report: bytes) -> dict[str, Outcome]:
    """Each test case of a JUnit XML report by name."""
    outcomes: dict[str, Outcome] = {}
    for case in ET.parse(io.BytesIO(report)).getroot().iter("testcase"):
        status, detail = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                status = "failed" if tag == "failure" else tag
                detail = f"{found.get('message', '')}\n{found.text or ''}".strip()
                break
        outcomes[case.get("name", "")] = Outcome(status, detail)
    return outcomes
