"""Shared test settings.

Tests marked `root` build network namespaces; they need root. CI runs as root and sets CI=1:
there a missing privilege is an error, never a silent skip.
"""

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI must run as root: the netns integration tests need it")
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
