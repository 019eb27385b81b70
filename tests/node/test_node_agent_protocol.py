"""The agent against broken or hostile hand-offs: a raw client sends what `clat-node handoff`
never would. Every one is answered with a clear error, nothing is served, nothing is kept open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from clat_node.protocol import Answer, Hello, decode_answer, encode_hello

from tests.node.conftest import Agent

pytestmark = pytest.mark.root

HELLO = encode_hello(Hello(namespace="shop", name="web-x", uid=str(uuid.uuid4())))


def exchange(path: str, data: bytes, fds: list[int], linger: bool = False) -> Answer:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        if data or fds:
            socket.send_fds(sock, [data], fds) if fds else sock.sendall(data)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return decode_answer(reply)


@contextlib.contextmanager
def opened(*paths: str) -> Iterator[list[int]]:
    fds = [os.open(p, os.O_RDONLY) for p in paths]
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


async def refused(agent: Agent, data: bytes, *paths: str) -> str:
    with opened(*paths) as fds:
        answer = await asyncio.to_thread(exchange, agent.socket_path, data, fds)
    assert not answer.ok
    assert len(agent.registry) == 0
    assert agent.pod_server.peer_status == {}
    return answer.error


async def test_a_hello_without_a_descriptor(agent: Agent) -> None:
    error = await refused(agent, HELLO)
    assert error == (
        "the hello carries 0 descriptors: send exactly one, the network namespace (SCM_RIGHTS)"
    )


async def test_a_hello_with_two_descriptors(agent: Agent) -> None:
    error = await refused(agent, HELLO, "/proc/self/ns/net", "/proc/self/ns/net")
    assert error.startswith("the hello carries 2 descriptors")


async def test_a_descriptor_that_is_no_namespace(agent: Agent) -> None:
    assert await refused(agent, HELLO, "/etc/hostname") == "the descriptor is not a namespace"


async def test_a_namespace_of_another_kind(agent: Agent) -> None:
    error = await refused(agent, HELLO, "/proc/self/ns/uts")
    assert error == "the descriptor is a namespace, but not a network namespace"


async def test_the_nodes_own_namespace(agent: Agent) -> None:
    error = await refused(agent, HELLO, "/proc/self/ns/net")  # the agent's, in this process
    assert error == "this is the node's own network namespace, not a pod's"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"hello\n", "hello is not JSON"),
        (b"[1]\n", "hello is not a JSON object"),
        (
            json.dumps({"version": 2, "namespace": "a", "name": "b", "uid": "c"}).encode() + b"\n",
            "hello speaks protocol version 2, this agent speaks 1",
        ),
        (
            json.dumps({"version": 1, "namespace": "Shop", "name": "b", "uid": "c"}).encode()
            + b"\n",
            "pod namespace 'Shop' is not a Kubernetes namespace",
        ),
        (
            json.dumps({"version": 1, "namespace": "shop", "name": "web"}).encode() + b"\n",
            "hello has no 'uid' string",
        ),
        (b" " * 5000 + b"\n", "the hello is longer than 4096 bytes"),
    ],
)
async def test_garbled_hellos(agent: Agent, data: bytes, error: str) -> None:
    assert await refused(agent, data, "/proc/self/ns/net") == error


async def test_a_silent_peer_is_cut_off(agent: Agent) -> None:
    agent.server.hello_timeout = 0.5
    error = await refused(agent, b"")
    assert error == "no complete hello within 0.5 s"


async def test_a_peer_that_hangs_up_mid_hello(agent: Agent) -> None:
    def half_hello() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(agent.socket_path)
            sock.sendall(HELLO[:10])

    await asyncio.to_thread(half_hello)
    # Then a well-formed one is still served a refusal on its own merits: the server is alive.
    error = await refused(agent, HELLO, "/etc/hostname")
    assert error == "the descriptor is not a namespace"


async def test_a_stale_socket_is_replaced_and_a_file_is_not(agent: Agent, socket_dir: str) -> None:
    from clat_node.agent import HandoffServer, PodRegistry

    stale = f"{socket_dir}/stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(stale)  # an agent killed without cleaning up
    server = HandoffServer(stale, agent.verifier, agent.pod_server, PodRegistry())
    await server.start()
    try:
        with opened("/etc/hostname") as fds:
            answer = await asyncio.to_thread(exchange, stale, HELLO, fds)
        assert answer.error == "the descriptor is not a namespace"
    finally:
        await server.close()
    assert not os.path.exists(stale)

    regular = f"{socket_dir}/not-a-socket"
    with open(regular, "w") as f:
        f.write("keep me")
    with pytest.raises(FileExistsError, match="exists and is not a socket"):
        await HandoffServer(regular, agent.verifier, agent.pod_server, PodRegistry()).start()
    with open(regular) as f:
        assert f.read() == "keep me"
