"""`clat-node`: the node agent's command.

  clat-node agent   [--socket PATH] --node-name NODE [--listen ADDR:PORT] [--plat-prefix PFX]
                    [--dns64-server ADDR]... [--datapath auto|kernel|userspace] [--state-dir DIR]
                    [--reconcile-interval S] [--release-on-exit]
  clat-node handoff [--socket PATH] [--timeout S] [--pod-namespace NS --pod-name NAME --pod-uid UID]

`handoff` is the init container of a node-mode pod: it hands the pod's network namespace to
the agent and exits 0 once the agent says IPv4 works, 1 with one line saying why not.
Every flag also reads from the environment as CLAT_ + the flag's name in upper case with `_`
(the pod's identity comes from the downward API: CLAT_POD_NAMESPACE, CLAT_POD_NAME,
CLAT_POD_UID; the agent's node name from `spec.nodeName`: CLAT_NODE_NAME). See docs/node-mode.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence

from clat_node import logs
from clat_node.protocol import DEFAULT_SOCKET

DATAPATHS = ("auto", "kernel", "userspace")  # as clat_node.pod_clat, without importing it
DEFAULT_STATE_DIR = "/run/clat-node"

ENV_PREFIX = "CLAT_"
DEFAULT_TIMEOUT_S = 120.0


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds above 0")
    return value


def _prefix(text: str) -> str:
    from clat_translator.xlat.config import parse_pool6

    try:
        parse_pool6(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def _datapath(text: str) -> str:
    if text not in DATAPATHS:
        raise argparse.ArgumentTypeError(f"{text!r}: one of {', '.join(DATAPATHS)}")
    return text


def _from_env(
    parser: argparse.ArgumentParser, flag: str, convert: Callable[[str], object], default: object
) -> object:
    env = _env_name(flag)
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        return convert(raw)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{env}: {exc}")


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clat-node",
        description="The CLAT node agent of node mode, and the hand-off its pods run.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    agent = commands.add_parser(
        "agent",
        help="serve the opted-in pods of this node (one per node, from the DaemonSet)",
        description="The node agent: takes the pods' namespaces on the hand-off socket, makes "
        "their CLAT inside them, and serves their slow path and /metrics.",
    )
    for flag, convert, default, help in (
        ("--socket", str, DEFAULT_SOCKET, "the hand-off socket to listen on"),
        ("--node-name", str, None, "this node's name (downward API spec.nodeName)"),
        ("--listen", str, "[::]:9181", "address and port of /healthz, /readyz and /metrics"),
        ("--plat-prefix", _prefix, None, "the PLAT prefix; default: RFC 7050 discovery"),
        ("--datapath", _datapath, "auto", "auto, kernel or userspace"),
        ("--state-dir", str, DEFAULT_STATE_DIR, "where served namespaces are kept (hostPath)"),
        ("--reconcile-interval", _timeout, 30.0, "seconds between checks for pods gone"),
    ):
        agent.add_argument(
            flag,
            type=convert,
            default=_from_env(parser, flag, convert, default),
            help=f"{help} [env {_env_name(flag)}]",
        )
    servers_env = os.environ.get(_env_name("--dns64-server"), "")
    agent.add_argument(
        "--dns64-server",
        action="append",
        default=None,
        help=f"resolver for the discovery (repeatable) [env {_env_name('--dns64-server')}, "
        "comma-separated]; default: /etc/resolv.conf",
    )
    agent.set_defaults(dns64_env=[s for s in servers_env.split(",") if s.strip()])
    release = os.environ.get(_env_name("--release-on-exit"), "").lower() in ("1", "true", "yes")
    agent.add_argument(
        "--release-on-exit",
        action="store_true",
        default=release,
        help="take every pod's CLAT down on SIGTERM (uninstall) instead of leaving them working "
        f"for the next agent [env {_env_name('--release-on-exit')}=true]",
    )
    handoff = commands.add_parser(
        "handoff",
        help="hand this pod's network namespace to the node agent; exit 0 once IPv4 works",
        description="Run as the pod's init container: unprivileged, non-root, read-only root.",
    )
    for flag, convert, default, help in (
        ("--socket", str, DEFAULT_SOCKET, "the agent's hand-off socket"),
        ("--timeout", _timeout, DEFAULT_TIMEOUT_S, "give up after S seconds"),
        ("--pod-namespace", str, None, "this pod's namespace (downward API metadata.namespace)"),
        ("--pod-name", str, None, "this pod's name (downward API metadata.name)"),
        ("--pod-uid", str, None, "this pod's uid (downward API metadata.uid)"),
    ):
        env = _env_name(flag)
        raw = os.environ.get(env)
        if raw is not None:
            try:
                default = convert(raw)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"{env}: {exc}")
        handoff.add_argument(flag, type=convert, default=default, help=f"{help} [env {env}]")
    return parser


def _handoff(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from clat_node.handoff import HandoffFailed, handoff
    from clat_node.protocol import Hello, ProtocolError

    missing = [
        f"--{name} (env {_env_name(name)})"
        for name in ("pod-namespace", "pod-name", "pod-uid")
        if not getattr(args, name.replace("-", "_"))
    ]
    if missing:
        parser.error("handoff needs " + ", ".join(missing) + ": set them from the downward API")
    log = logs.get()
    try:
        hello = Hello(namespace=args.pod_namespace, name=args.pod_name, uid=args.pod_uid)
    except ProtocolError as exc:
        log.error("clat-node handoff: %s", exc)
        return 1
    try:
        handoff(args.socket, hello, args.timeout)
    except HandoffFailed as exc:
        log.error("clat-node handoff: %s", exc)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup()
    if args.command == "agent":
        return _agent(args, parser)
    return _handoff(args, parser)


def _agent(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from clat_translator.discovery import DiscoveryError, discover_rfc7050

    from clat_node.pod_clat import NodeSettings
    from clat_node.run import AgentSettings, run_agent

    if not args.node_name:
        parser.error("agent needs --node-name (env CLAT_NODE_NAME): set it from spec.nodeName")
    log = logs.get()
    prefix = args.plat_prefix
    if prefix is None:
        # One prefix per node: the pods of a node share the cluster's NAT64 and DNS64.
        try:
            found = discover_rfc7050(args.dns64_server or args.dns64_env)
        except DiscoveryError as exc:
            log.error("clat-node agent: no PLAT prefix: %s (give --plat-prefix)", exc)
            return 1
        prefix = str(found.prefixes[0])
        log.info("PLAT prefix %s (%s)", prefix, found.source)
    try:
        node = NodeSettings(plat_prefix=prefix, datapath=args.datapath, state_dir=args.state_dir)
    except ValueError as exc:
        log.error("clat-node agent: %s", exc)
        return 1
    settings = AgentSettings(
        node=node,
        node_name=args.node_name,
        socket=args.socket,
        listen=args.listen,
        reconcile_interval=args.reconcile_interval,
        release_on_exit=args.release_on_exit,
    )
    try:
        return run_agent(settings)
    except OSError as exc:  # the socket or state directory cannot be made: one line
        log.error("clat-node agent: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
