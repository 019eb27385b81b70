"""The pod's side of the hand-off: pass our network namespace to the agent, wait for IPv4.

Runs in the init container, non-root, with no capabilities and a read-only root: opening our
own `/proc/self/ns/net` and connecting to a unix socket need neither. Only the standard library
is imported here, so the init container starts fast and small.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from clat_node import logs
from clat_node.protocol import (
    MAX_MESSAGE,
    Hello,
    ProtocolError,
    decode_answer,
    encode_hello,
)

OWN_NETNS = "/proc/self/ns/net"
RETRY_CONNECT_S = 0.2

# The agent is not listening (yet): a DaemonSet pod may start after the pods of its node.
_AGENT_NOT_UP = {errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN}


class HandoffFailed(Exception):
    """The hand-off did not end with IPv4 working; the text is the one line to print."""


def _connect(path: str, deadline: float) -> socket.socket:
    log = logs.get()
    waiting_logged = False
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in _AGENT_NOT_UP:
                raise HandoffFailed(
                    f"cannot connect to the agent at {path}: {exc.strerror}"
                ) from None
            if time.monotonic() + RETRY_CONNECT_S > deadline:
                raise HandoffFailed(
                    f"no agent listening at {path} ({exc.strerror}): is clat-node running on "
                    "this node, and is its socket directory mounted here?"
                ) from None
            if not waiting_logged:
                log.info("waiting for the agent at %s (%s)", path, exc.strerror)
                waiting_logged = True
            time.sleep(RETRY_CONNECT_S)


def _read_line(sock: socket.socket, deadline: float, timeout: float) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HandoffFailed(f"no answer from the agent within {timeout:g} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(MAX_MESSAGE + 1 - len(data))
        except TimeoutError:
            raise HandoffFailed(f"no answer from the agent within {timeout:g} s") from None
        except OSError as exc:
            raise HandoffFailed(f"lost the agent while waiting: {exc.strerror}") from None
        if not chunk:
            raise HandoffFailed("the agent closed the connection without an answer")
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise HandoffFailed("the agent's answer is longer than the protocol allows")
    return data


def handoff(socket_path: str, hello: Hello, timeout: float, netns_path: str = OWN_NETNS) -> None:
    """Hand `netns_path` to the agent for pod `hello`; return once the agent says IPv4 works."""
    log = logs.get()
    deadline = time.monotonic() + timeout
    try:
        netns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise HandoffFailed(f"cannot open {netns_path}: {exc.strerror}") from None
    try:
        with _connect(socket_path, deadline) as sock:
            log.info("connected to the agent at %s", socket_path)
            try:
                socket.send_fds(sock, [encode_hello(hello)], [netns_fd])
            except OSError as exc:
                raise HandoffFailed(f"cannot send to the agent: {exc.strerror}") from None
            log.info(
                "handed over the network namespace of pod %s (inode %d)",
                hello.pod,
                os.fstat(netns_fd).st_ino,
            )
            try:
                answer = decode_answer(_read_line(sock, deadline, timeout))
            except ProtocolError as exc:
                raise HandoffFailed(f"the agent's answer is garbled: {exc}") from None
    finally:
        os.close(netns_fd)
    if not answer.ok:
        raise HandoffFailed(f"the agent refused pod {hello.pod}: {answer.error}")
    log.info("IPv4 works: the agent serves pod %s", hello.pod)
