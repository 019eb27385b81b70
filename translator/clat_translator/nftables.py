"""The nftables table of the CLAT: NAT66 masquerade of the CLAT IPv6 address, and our state.

It also keeps the kernel's own IPv6 multicast out of the TUN.

This shells out to `nft` with a ruleset text: pyroute2's nftables support is thin (no
masquerade, no atomic table replace, no comments), while `nft -f` applies a whole table
atomically. The table is the CLAT's own (`ip6 clat_translator`); nothing else is touched.

The table's comment records the sysctls we changed with their original values. It lives in the
namespace, so a run killed by SIGKILL (its container restarted with a fresh filesystem) leaves
enough behind for the next run to restore them.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess

TABLE_FAMILY = "ip6"
TABLE_NAME = "clat_translator"
STATE_MARK = "clat-translator state v1:"
_COMMENT = re.compile(r'^\s*comment "(?P<text>[^"]*)"', re.MULTILINE)


class NftError(RuntimeError):
    """`nft` failed or is missing; the message carries nft's own words."""


def _nft(args: list[str], stdin: str | None = None) -> str:
    binary = shutil.which("nft")
    if binary is None:
        raise NftError("the nft command is missing (install nftables)")
    proc = subprocess.run(
        [binary, *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise NftError(f"nft {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def render(clat_v6: str | None, tun: str, state: str) -> str:
    """The ruleset text: an atomic replace of our table (create, flush by delete, define)."""
    lines = [
        f"table {TABLE_FAMILY} {TABLE_NAME} {{}}",
        f"delete table {TABLE_FAMILY} {TABLE_NAME}",
        f"table {TABLE_FAMILY} {TABLE_NAME} {{",
        f'  comment "{STATE_MARK} {state}"',
    ]
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", tun):
        raise ValueError(f"bad TUN name {tun!r}")
    # The kernel's own multicast (MLD reports: forwarding joins ff02::2) would go into the TUN,
    # where the translator could only drop it and count it as a drop.
    lines += [
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        f'    oifname "{tun}" ip6 daddr ff00::/8 drop',
        "  }",
    ]
    if clat_v6 is not None:
        address = ipaddress.IPv6Address(clat_v6)  # validated: nothing else reaches the text
        # conntrack picks a source port that no other flow of the pod address uses, native
        # flows included, so translated and native flows to one destination do not clash.
        lines += [
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    ip6 saddr {address} oifname != "{tun}" masquerade',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def install(clat_v6: str | None, tun: str, state: str) -> None:
    """Create (or atomically replace) our table; `clat_v6` None = no NAT66 (--clat-v6)."""
    if '"' in state or len(state) > 200:
        raise ValueError("state text too long or quoted for an nftables comment")
    _nft(["-f", "-"], render(clat_v6, tun, state))


def read_state() -> str | None:
    """The state text of a table left by an earlier run, or None if there is no table."""
    tables = _nft(["list", "tables", TABLE_FAMILY])
    if f"table {TABLE_FAMILY} {TABLE_NAME}" not in tables.split("\n"):
        return None
    text = _nft(["list", "table", TABLE_FAMILY, TABLE_NAME])
    match = _COMMENT.search(text)
    if match is None or not match.group("text").startswith(STATE_MARK):
        return ""
    return match.group("text")[len(STATE_MARK) :].strip()


def remove() -> bool:
    """Delete our table; True if it existed."""
    if read_state() is None:
        return False
    _nft(["delete", "table", TABLE_FAMILY, TABLE_NAME])
    return True
