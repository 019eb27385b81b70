"""The nftables table of the CLAT: NAT66 masquerade of the CLAT IPv6 address, and our state.

It also keeps the kernel's own IPv6 multicast out of the TUN.

This shells out to `nft` with a ruleset text: pyroute2's nftables support is thin (no
masquerade, no atomic table replace, no comments), while `nft -f` applies a whole table
atomically. The table is the CLAT's own (`ip6 clat_translator` by default, `--nft-table`);
nothing else is touched. Two CLATs can share a namespace (the node's host CLAT beside another)
when each has its own table and TUN name: every function here acts on the one table it is given.

The table's comment records the sysctls we changed with their original values. It lives in the
namespace, so a run killed by SIGKILL (its container restarted with a fresh filesystem) leaves
enough behind for the next run to restore them. nft keeps 128 characters of a comment: a longer
record continues in the comments of empty regular chains `state1`, `state2`, ... (no hook: they
see no packet).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess

TABLE_FAMILY = "ip6"
DEFAULT_TABLE = "clat_translator"
STATE_MARK = "clat-translator state v1:"
COMMENT_MAX = 128  # nft refuses longer table comments ("comment too long")
STATE_MAX = COMMENT_MAX - len(STATE_MARK) - 1
TABLE_NAME_MAX = 64
# nft takes a table name as a bare identifier, and refuses one that is a keyword of its language
# ("ip", "filter" is fine, "counter" is not) with no way to quote it. Names must begin with
# "clat": no keyword does, and a CLAT can never be pointed at a table that is not a CLAT's
# (its atomic replace deletes the table it is given: `--nft-table filter` would take the host's).
_TABLE_NAME_RULE = re.compile(rf"clat[A-Za-z0-9_]{{0,{TABLE_NAME_MAX - 4}}}")
_COMMENT = re.compile(r'^\s*comment "(?P<text>[^"]*)"', re.MULTILINE)
_STATE_CHAIN = re.compile(r'^\s*chain state(?P<n>\d+) \{\s*comment "(?P<text>[^"]*)"', re.MULTILINE)


class NftError(RuntimeError):
    """`nft` failed or is missing; the message carries nft's own words."""


def check_table_name(name: str) -> str:
    """`name` if it can be our table's name; ValueError saying the rule otherwise."""
    if not _TABLE_NAME_RULE.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a CLAT table name: 'clat' followed by up to "
            f"{TABLE_NAME_MAX - 4} letters, digits or '_' (e.g. clat_host)"
        )
    return name


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


def render(clat_v6: str | None, tun: str, state: str, table: str = DEFAULT_TABLE) -> str:
    """The ruleset text: an atomic replace of `table` (create, flush by delete, define)."""
    check_table_name(table)
    lines = [
        f"table {TABLE_FAMILY} {table} {{}}",
        f"delete table {TABLE_FAMILY} {table}",
        f"table {TABLE_FAMILY} {table} {{",
    ]
    for n, chunk in enumerate(_state_chunks(state)):
        comment = f'comment "{STATE_MARK} {chunk}"'
        lines += [f"  {comment}"] if n == 0 else [f"  chain state{n} {{", f"    {comment}", "  }"]
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


def _state_chunks(state: str) -> list[str]:
    """The record's items ("key=value"), in order, packed into comments that nft accepts."""
    if '"' in state:
        raise ValueError(f"a quote in the state record: {state}")
    chunks = [""]
    for item in state.split():
        if len(item) > STATE_MAX:
            raise ValueError(f"a state item longer than an nftables comment allows: {item}")
        if chunks[-1] and len(chunks[-1]) + 1 + len(item) > STATE_MAX:
            chunks.append(item)
        else:
            chunks[-1] = f"{chunks[-1]} {item}".strip()
    return chunks


def install(clat_v6: str | None, tun: str, state: str, table: str = DEFAULT_TABLE) -> None:
    """Create (or atomically replace) `table`; `clat_v6` None = no NAT66 (--clat-v6)."""
    _nft(["-f", "-"], render(clat_v6, tun, state, table))


def read_state(table: str = DEFAULT_TABLE) -> str | None:
    """The state text of `table` left by an earlier run, or None if there is no such table."""
    check_table_name(table)
    tables = _nft(["list", "tables", TABLE_FAMILY])
    if f"table {TABLE_FAMILY} {table}" not in tables.split("\n"):
        return None
    return parse_state(_nft(["list", "table", TABLE_FAMILY, table]))


def parse_state(listing: str) -> str:
    """The state record in `nft list table` output; "" if it carries none."""
    match = _COMMENT.search(listing)
    if match is None or not match.group("text").startswith(STATE_MARK):
        return ""
    parts = [(0, match.group("text"))]
    parts += [(int(m.group("n")), m.group("text")) for m in _STATE_CHAIN.finditer(listing)]
    texts = [text[len(STATE_MARK) :].strip() for _, text in sorted(parts)]
    return " ".join(text for text in texts if text)


def remove(table: str = DEFAULT_TABLE) -> bool:
    """Delete `table`; True if it existed."""
    if read_state(table) is None:
        return False
    _nft(["delete", "table", TABLE_FAMILY, table])
    return True
