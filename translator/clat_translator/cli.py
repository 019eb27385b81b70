"""The `clat-translator` command: `run` the CLAT in this network namespace, or `discover`.

Every flag also reads from the environment as CLAT_ + the flag's name in upper case with `_`
(CLAT_PLAT_PREFIX, CLAT_DNS64_SERVER, ...); a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from clat_translator import logs, nftables
from clat_translator.discovery import DiscoveryError, discover_rfc7050
from clat_translator.health import parse_listen
from clat_translator.runner import DEFAULT_CLAT_V4, RunSettings, Sidecar
from clat_translator.xlat import rfc6052

ENV_PREFIX = "CLAT_"
MIN_MTU, MAX_MTU = 68, 65515  # RFC 791 minimum; 65535 - 20 so the IPv6 side still fits
MAX_WORKERS = 64
# --datapath: kernel = the tc-eBPF fast path with userspace for the rest; userspace = the TUN
# loop for everything; auto = kernel where it loads, else userspace.
DATAPATHS = ("auto", "kernel", "userspace")


def plat_prefix(text: str) -> str:
    """The rules of rfc6052.parse_prefix, the same the operator applies at admission."""
    try:
        return str(rfc6052.parse_prefix(text))
    except rfc6052.PrefixError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def ipv4_address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def ipv6_address(text: str) -> str:
    try:
        address = ipaddress.IPv6Address(text.split("/")[0] if text.endswith("/128") else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv6 address") from None
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        raise argparse.ArgumentTypeError(f"{text}: not a unicast address")
    return str(address)


def dns_server(text: str) -> str:
    try:
        ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
    return text


def mtu(text: str) -> int:
    if not text.isdigit() or not MIN_MTU <= int(text) <= MAX_MTU:
        raise argparse.ArgumentTypeError(f"{text!r}: an IPv4 MTU from {MIN_MTU} to {MAX_MTU}")
    return int(text)


def interface(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,15}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an interface name (1-15 characters)")
    return text


def listen(text: str) -> str:
    try:
        parse_listen(text)
    except (ValueError, OSError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def workers(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{text!r}: auto, or a number from 1 to {MAX_WORKERS}")
    return int(text)


def datapath(text: str) -> str:
    value = text.strip().lower()
    if value not in DATAPATHS:
        raise argparse.ArgumentTypeError(f"{text!r}: one of {', '.join(DATAPATHS)}")
    return value


def nft_table(text: str) -> str:
    try:
        return nftables.check_table_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


class _Parser(argparse.ArgumentParser):
    """argparse whose defaults come from CLAT_* variables, checked like the flags."""

    def add_env_argument(
        self, flag: str, convert: Callable[[str], Any], help: str, **kwargs: Any
    ) -> None:
        env = _env_name(flag)
        action = kwargs.get("action")
        raw = os.environ.get(env)
        if raw is not None:
            try:
                if action == "append":
                    values = [convert(v) for v in re.split(r"[,\s]+", raw.strip()) if v]
                    kwargs["default"] = values
                else:
                    kwargs["default"] = convert(raw)
            except argparse.ArgumentTypeError as exc:
                self.error(f"{env}: {exc}")
        if action in ("store_true", argparse.BooleanOptionalAction):
            kwargs.pop("type", None)
            self.add_argument(flag, help=f"{help} [env {env}]", **kwargs)
            return
        self.add_argument(flag, type=convert, help=f"{help} [env {env}]", **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clat-translator",
        description="A CLAT (RFC 6877): IPv4 for an IPv6-only pod through the cluster's NAT64.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="translate in this network namespace until SIGTERM")
    discover = commands.add_parser("discover", help="print the PLAT prefix(es) and exit")
    for sub in (run, discover):
        sub.add_env_argument(
            "--dns64-server",
            dns_server,
            "DNS64 server for RFC 7050 discovery (repeatable; default: /etc/resolv.conf)",
            action="append",
            metavar="ADDR",
            dest="dns64_server",
        )
    run.add_env_argument(
        "--plat-prefix",
        plat_prefix,
        "the NAT64 prefix (RFC 6052); default: RFC 8781 PREF64, else RFC 7050 discovery",
        metavar="PFX",
    )
    run.add_env_argument(
        "--plat-prefix-hint",
        plat_prefix,
        "a prefix to start with while discovery runs (the operator passes the one it found); "
        "unlike --plat-prefix it is re-checked by RFC 8781 / RFC 7050 and replaced if they differ",
        metavar="PFX",
    )
    run.add_env_argument(
        "--uplink", interface, "uplink interface (default: the IPv6 default route's)"
    )
    run.add_env_argument(
        "--clat-v4",
        ipv4_address,
        "IPv4 address of the TUN (RFC 7335)",
        default=DEFAULT_CLAT_V4,
        metavar="ADDR",
    )
    run.add_env_argument(
        "--clat-v6",
        ipv6_address,
        "dedicated IPv6 address routed to the pod: used without NAT66 "
        "(default: an internal ULA masqueraded to the pod's address)",
        metavar="ADDR",
    )
    run.add_env_argument("--tun", interface, "name of the TUN device", default="clat")
    run.add_env_argument(
        "--nft-table",
        nft_table,
        "name of the CLAT's own nftables table (family ip6; 'clat' + letters, digits, '_'): "
        "two CLATs in one namespace each need their own, and their own --tun",
        default=nftables.DEFAULT_TABLE,
        metavar="NAME",
    )
    run.add_env_argument(
        "--mtu", mtu, "MTU of the IPv4 default route (default: uplink MTU - 20)", metavar="N"
    )
    run.add_env_argument(
        "--listen", listen, "HTTP address for /healthz /readyz /metrics", default="[::]:9180"
    )
    run.add_env_argument(
        "--force",
        boolean,
        "translate even when the pod already has an IPv4 default route",
        action="store_true",
    )
    run.add_env_argument(
        "--offload",
        boolean,
        "offloaded data path: virtio-net headers, TSO/USO and checksum offload on the TUN "
        "(--no-offload: one plain packet per read)",
        action=argparse.BooleanOptionalAction,
        default=True,
    )
    run.add_env_argument(
        "--workers",
        workers,
        "packet loop processes, one per TUN queue (IFF_MULTI_QUEUE); auto = one per usable CPU "
        "(default 1)",
        default=1,
        metavar="N|auto",
    )
    run.add_env_argument(
        "--datapath",
        datapath,
        "kernel: a tc-eBPF program translates the common packets, the rest goes to userspace; "
        "userspace: the TUN loop for everything; auto: kernel where it loads, else userspace",
        default="auto",
        metavar="auto|kernel|userspace",
    )
    return parser


def run_settings(args: argparse.Namespace) -> RunSettings:
    """What `run` will do, from its parsed flags (and CLAT_* variables)."""
    return RunSettings(
        plat_prefix=args.plat_prefix,
        plat_prefix_hint=args.plat_prefix_hint,
        dns64_servers=list(args.dns64_server or ()),
        uplink=args.uplink,
        clat_v4=args.clat_v4,
        clat_v6=args.clat_v6,
        tun=args.tun,
        mtu=args.mtu,
        listen=args.listen,
        force=bool(args.force),
        offload=bool(args.offload),
        workers=args.workers,
        datapath=args.datapath,
        nft_table=args.nft_table,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = logs.setup()
    if args.command == "discover":
        try:
            found = discover_rfc7050(args.dns64_server or ())
        except DiscoveryError as exc:
            print(f"clat-translator discover: {exc}", file=sys.stderr)
            return 1
        for prefix in found.prefixes:
            print(prefix)
        log.info("found via %s ttl=%ds", found.source.removeprefix("rfc7050 via "), found.ttl)
        return 0
    if os.geteuid() != 0 and not _has_net_admin():
        log.error("run needs CAP_NET_ADMIN (and /dev/net/tun): run the container privileged")
        return 1
    return Sidecar(run_settings(args)).run()


def _has_net_admin() -> bool:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 12))  # CAP_NET_ADMIN
    except OSError:
        pass
    return False


if __name__ == "__main__":
    raise SystemExit(main())
