"""pyroute2's rtnl socket (IPRoute), imported without running the package's own __init__.

pyroute2/__init__.py imports every netlink family it knows (NDB, IPDB, wireless, IPVS,
conntrack, plan9 ...): about 6 MiB of a sidecar that must stay small in every pod, for nothing
the sidecar uses. The package is registered as a module whose __init__ has not run yet (its
search path intact), so `pyroute2.iproute.linux` and what it needs import as usual. The first
attribute anyone asks of the package itself (`from pyroute2 import NetNS`) runs the real
__init__ then (PEP 562 module __getattr__): other users of pyroute2 in the same process (tests)
see the whole package. If pyroute2 is already imported this changes nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def _register_lazy_package(name: str) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def on_demand(attribute: str) -> Any:
        submodule = f"{name}.{attribute}"
        if importlib.util.find_spec(submodule) is not None:  # `from pyroute2 import config`
            return importlib.import_module(submodule)
        del package.__dict__["__getattr__"]  # anything else: the whole package, once
        loader.exec_module(package)
        return getattr(package, attribute)

    package.__dict__["__getattr__"] = on_demand
    sys.modules[name] = package


if "pyroute2" not in sys.modules:
    _register_lazy_package("pyroute2")

from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

__all__ = ["IPRoute", "NetlinkError"]
