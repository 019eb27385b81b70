"""The sidecar runs in every opted-in pod: what it imports is memory every pod pays."""

import subprocess
import sys

PROBE = """
import sys
import clat_translator.runner
print("ndb" if "pyroute2.ndb" in sys.modules else "rtnl only")
from pyroute2 import NetNS, IPRoute  # other users of pyroute2 still get the whole package
from pyroute2 import config
print(NetNS.__name__, IPRoute.__name__, config.__name__)
"""


def test_the_sidecar_loads_pyroute2s_rtnl_only_and_leaves_the_package_whole() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["rtnl only", "NetNS IPRoute pyroute2.config"]
