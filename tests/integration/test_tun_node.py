"""The sidecar creates /dev/net/tun when a container lacks it."""

import os
import stat
from pathlib import Path

import pytest
from clat_translator.tun import TUN_MAJOR, TUN_MINOR, ensure_tun_node

pytestmark = pytest.mark.root


def test_creates_the_tun_character_device(tmp_path: Path) -> None:
    node = tmp_path / "dev" / "net" / "tun"
    assert ensure_tun_node(node) is True
    info = node.stat()
    assert stat.S_ISCHR(info.st_mode)
    assert (os.major(info.st_rdev), os.minor(info.st_rdev)) == (TUN_MAJOR, TUN_MINOR)
    assert ensure_tun_node(node) is False  # already there: left alone
