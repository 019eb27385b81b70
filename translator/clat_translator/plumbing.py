"""What the sidecar makes in the pod's network namespace, in order, and how to take it back.

Every step that changes the namespace pushes its undo onto one list. Teardown (SIGTERM) pops
the list, newest first. A run killed by SIGKILL leaves its nftables table (whose comment records
the sysctls it changed, nftables.py) and perhaps its TUN: the next run rebuilds the same list
from what it finds (`PodPlumbing.leftovers`) and tears it down the same way.

Order of making: nftables table (the record first, before anything it records), sysctls, TUN
device, its address and routes. The address and routes leave with the device: the kernel deletes
a non-persistent TUN, with them, when its last descriptor closes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

from clat_translator import netconf, nftables
from clat_translator.tun import TunDevice


class SetupError(RuntimeError):
    """Setup failed for a reason the operator of the pod must fix; the message says which."""


def refuse_foreign_device(tun_name: str) -> None:
    """SetupError when a device named `tun_name` exists and is not a TUN (not ours to take)."""
    with netconf.netlink() as ipr:
        index = netconf.link_index(ipr, tun_name)
        kind = None if index is None else netconf.link_kind(ipr, index)
    if index is not None and kind != "tun":
        raise SetupError(
            f"a device named {tun_name!r} exists and is not a TUN (kind {kind}): "
            f"choose another name with --tun"
        )


class Undo(NamedTuple):
    """One thing made in the namespace: what it is, and how to take it back (returns what was
    done, for the log)."""

    what: str
    undo: Callable[[], str]


def table_label(table: str) -> str:
    """How the log names a table: "nftables table ip6 NAME"."""
    return f"nftables table {nftables.TABLE_FAMILY} {table}"


class PodPlumbing:
    """The undo list of one run (or of the leftovers of an earlier one), in the nftables table
    `table` (`--nft-table`): everything it finds, makes or removes is by its own names only."""

    def __init__(self, log: logging.Logger, table: str = nftables.DEFAULT_TABLE) -> None:
        self.log = log
        self.table = nftables.check_table_name(table)
        self.made: list[Undo] = []

    # ---- making ------------------------------------------------------------------------------

    def install_table(self, clat_v6: str | None, tun: str, sysctls: netconf.SysctlChanges) -> None:
        """Our nftables table, recording the originals of the planned sysctls (SIGKILL
        recovery); `clat_v6` None = no NAT66."""
        nftables.install(clat_v6, tun, sysctls.serialize(), self.table)
        self._table_made()

    def apply_sysctls(self, sysctls: netconf.SysctlChanges) -> list[str]:
        """Write the planned sysctls; return warnings for optional ones that could not be."""
        self.made.append(Undo("sysctls", lambda: self._restore(sysctls)))
        return sysctls.apply()

    def open_tun(self, name: str, vnet_hdr: bool, multi_queue: bool) -> TunDevice:
        tun = TunDevice.open(name, vnet_hdr=vnet_hdr, multi_queue=multi_queue)

        def close() -> str:
            tun.close()
            return f"removed TUN device {tun.name} with its address and routes"

        self.made.append(Undo(f"TUN device {tun.name}", close))
        return tun

    def configure_tun(
        self,
        tun: TunDevice,
        clat_v4: str,
        clat_v6: str,
        ipv4_mtu: int,
        device_mtu: int,
        split_default: bool,
    ) -> None:
        """Address, MTU and routes of the TUN (netconf.configure_tun); they leave with it."""
        with netconf.netlink() as ipr:
            netconf.configure_tun(
                ipr, tun.name, clat_v4, clat_v6, ipv4_mtu, device_mtu, split_default
            )

    # ---- taking back -------------------------------------------------------------------------

    def teardown(self) -> None:
        """Undo everything, newest first, logging each step. A step that fails is logged and
        the others still run."""
        while self.made:
            step = self.made.pop()
            try:
                self.log.info("%s", step.undo())
            except (OSError, nftables.NftError, netconf.NetconfError) as exc:
                self.log.error("cleanup of %s: %s", step.what, exc)

    @classmethod
    def leftovers(
        cls, tun_name: str, log: logging.Logger, table: str = nftables.DEFAULT_TABLE
    ) -> PodPlumbing:
        """The undo list of what an earlier run with these names left: its nftables table `table`
        with the sysctls it recorded, its TUN device `tun_name` (a device of that name that is
        not a TUN is not ours: see `refuse_foreign_device`). Another CLAT's table and TUN in the
        same namespace have other names and are never looked at."""
        found = cls(log, table)
        state = nftables.read_state(table)
        if state is not None:
            found._table_made()
            sysctls = netconf.SysctlChanges.parse(state)
            if sysctls.originals:
                found.made.append(Undo("sysctls", lambda: PodPlumbing._restore(sysctls)))
        with netconf.netlink() as ipr:
            index = netconf.link_index(ipr, tun_name)
            ours = index is not None and netconf.link_kind(ipr, index) == "tun"
        if ours:

            def delete() -> str:
                with netconf.netlink() as ipr:
                    netconf.delete_link(ipr, tun_name)
                return f"removed leftover TUN device {tun_name}"

            found.made.append(Undo(f"TUN device {tun_name}", delete))
        return found

    def _table_made(self) -> None:
        table = self.table

        def remove() -> str:
            nftables.remove(table)
            return f"removed {table_label(table)}"

        self.made.append(Undo(table_label(table), remove))

    @staticmethod
    def _restore(sysctls: netconf.SysctlChanges) -> str:
        if not sysctls.originals:
            return "sysctls: none changed"
        changes = sysctls.describe_restore()
        failed = sysctls.restore()
        return f"restored sysctls {changes}" + (f" (failed: {', '.join(failed)})" if failed else "")
