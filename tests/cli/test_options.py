"""``-o``: an option the filesystem would silently drop is a usage error naming close matches.

In process: the check runs before the root is opened, so the S3 case needs no server.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from metatree import Metatree
from metatree.cli._options import accepted_options
from metatree.cli.main import cli

if TYPE_CHECKING:
    from pathlib import Path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("root", "typo", "meant"),
    [
        ("s3://bucket/db", "endpoint_ur", "endpoint_url"),
        ("s3://bucket/db", "clientkwargs", "client_kwargs"),
        ("memory://db", "lock_timout", "lock_timeout"),
        ("LOCAL", "auto_mkdirs", "auto_mkdir"),
    ],
)
def test_an_unknown_option_is_refused(root: str, typo: str, meant: str, tmp_path: Path) -> None:
    if root == "LOCAL":
        root = str(tmp_path / "db")
    for command in (["ls"], ["init", "a"], ["models", "upload", "d", str(tmp_path)]):
        code, stderr = invoke("-r", root, "-o", f"{typo}=1", *command)
        assert code == 2, stderr
        assert repr(typo) in stderr
        assert meant in stderr
    assert not (tmp_path / "db").exists()  # refused before anything was made


def test_known_options_pass(tmp_path: Path) -> None:
    root = f"memory://cli-{uuid.uuid4().hex}/db"
    Metatree(root, ("a",))
    assert (
        invoke("-r", root, "-o", "lock_timeout=0.5", "-o", "use_listings_cache=false", "ls")[0] == 0
    )
    local = str(tmp_path / "db")
    assert invoke("-r", local, "-o", "auto_mkdir=true", "init", "a")[0] == 0
    s3 = accepted_options("s3://bucket/db")
    assert s3 is not None
    assert {"endpoint_url", "client_kwargs", "config_kwargs", "key", "secret", "batch_size"} <= s3


def test_what_s3fs_hands_to_its_session_passes() -> None:
    """s3fs keeps its ``**kwargs`` for aiobotocore's AioSession: ``-o profile=prod`` is real."""
    s3 = accepted_options("s3://bucket/db")
    assert s3 is not None
    assert {"profile", "session_vars"} <= s3
    assert "endpoint_ur" not in s3  # still judged: a typo is refused


def test_what_cannot_be_judged_passes() -> None:
    assert accepted_options("simplecache::s3://bucket/db") is None  # nested options per link
    assert accepted_options("nosuchprotocol://x") is None  # opening it names the protocol
    assert accepted_options("http://host/db") is None  # keeps **storage_options for requests
