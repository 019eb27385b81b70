"""`clat-node`: the node agent's command.

  clat-node handoff [--socket PATH] [--timeout S] [--pod-namespace NS --pod-name NAME --pod-uid UID]

`handoff` is the init container of a node-mode pod: it hands the pod's network namespace to
the agent and exits 0 once the agent says IPv4 works, 1 with one line saying why not.
Every flag also reads from the environment as CLAT_ + the flag's name in upper case with `_`
(the pod's identity comes from the downward API: CLAT_POD_NAMESPACE, CLAT_POD_NAME,
CLAT_POD_UID). The agent's own command comes with the node data path (docs/node-mode.md).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from clat_node import logs
from clat_node.protocol import DEFAULT_SOCKET

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


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clat-node",
        description="The CLAT node agent of node mode, and the hand-off its pods run.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    return _handoff(args, parser)  # the only command so far


if __name__ == "__main__":
    sys.exit(main())
