"""pyroute2's rtnl socket (IPRoute), imported without the package's own __init__.

pyroute2/__init__.py imports every netlink family it knows (NDB, IPDB, wireless, IPVS,
conntrack, plan9 ...): about 6 MiB of a sidecar that must stay small in every pod, for nothing
the sidecar uses. Registering the package as an empty module (its search path intact) lets
`pyroute2.iproute.linux` and the modules it needs import as usual. The sidecar takes IPRoute
and NetlinkError from here; if pyroute2 is already fully imported (tests, a REPL) this changes
nothing.
"""

from __future__ import annotations

import importlib.util
import sys

if "pyroute2" not in sys.modules:
    _spec = importlib.util.find_spec("pyroute2")
    if _spec is not None and _spec.submodule_search_locations is not None:
        sys.modules["pyroute2"] = importlib.util.module_from_spec(_spec)

from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

__all__ = ["IPRoute", "NetlinkError"]
