"""A netns testbed of real parts: IPv6-only pod, router, PLAT (tayga + unbound), IPv4 servers.

Shared by the sidecar's integration tests, `make demo`, the image test and the throughput bench
(docs/sidecar.md "Tests", docs/performance.md). Needs root.
"""

from testbed.topology import Addresses, Testbed

__all__ = ["Addresses", "Testbed"]
