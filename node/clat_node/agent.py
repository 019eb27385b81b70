"""The agent's side of the hand-off: receive a pod's namespace, check it, serve it, answer.

  HandoffServer   listens on the unix socket; per connection: peer credentials, the hello and
                  its one descriptor, what the namespace is, PodVerifier, PodServer, the answer
  PodServer       what serving a pod means (the later data path: TUN, routes, NAT66, kernel
                  path); returns the teardown that undoes it
  PodRegistry     the served pods by uid: the namespace descriptor stays open while served,
                  release closes it and runs the teardown

Blocking work (netlink inside a namespace) runs in the server's threads; the hellos and the API
server's answers (kubernetes_asyncio) are awaited on the event loop. One slow or silent pod never
holds up another.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

from clat_node import logs, netns
from clat_node.netns import NamespaceIdentity, NotANetworkNamespace
from clat_node.protocol import (
    MAX_MESSAGE,
    Answer,
    Hello,
    ProtocolError,
    decode_hello,
    encode_answer,
)
from clat_node.verify import HandoffRefused, PodVerifier, VerifiedPod

# Room for a few descriptors, so a sender of more than one is seen and refused, not truncated.
MAX_FDS = 4

Teardown = Callable[[], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class PeerCredentials:
    """SO_PEERCRED of the connecting process, as the agent's pid and user namespaces see it."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


@dataclass(frozen=True)
class AcceptedPod:
    """A verified pod and its network namespace, held by `netns_fd` while it is served."""

    pod: VerifiedPod
    netns_fd: int
    identity: NamespaceIdentity
    peer: PeerCredentials

    @property
    def uid(self) -> str:
        return self.pod.uid


class PodServer(Protocol):
    async def serve(self, pod: AcceptedPod) -> Teardown:
        """Make IPv4 work in the pod's namespace; return what undoes it. Raise to refuse.

        On failure it leaves nothing behind in the namespace; the agent then answers the error.
        """
        ...


class PodRegistry:
    """The pods the agent serves, by uid. Owns their namespace descriptors."""

    def __init__(self) -> None:
        self._pods: dict[str, tuple[AcceptedPod, Teardown]] = {}

    def __len__(self) -> int:
        return len(self._pods)

    def __contains__(self, uid: object) -> bool:
        return uid in self._pods

    def get(self, uid: str) -> AcceptedPod | None:
        entry = self._pods.get(uid)
        return entry[0] if entry else None

    def uids(self) -> set[str]:
        return set(self._pods)

    def add(self, accepted: AcceptedPod, teardown: Teardown) -> None:
        if accepted.uid in self._pods:
            raise ValueError(f"pod {accepted.pod.pod} is served already")
        self._pods[accepted.uid] = (accepted, teardown)

    async def release(self, uid: str, why: str) -> bool:
        """Undo what serving the pod made and let go of its namespace. False if not served."""
        entry = self._pods.pop(uid, None)
        if entry is None:
            return False
        accepted, teardown = entry
        log = logs.get()
        try:
            await teardown()
        except Exception as exc:  # the namespace is let go of all the same
            log.error("pod %s: teardown failed: %s", accepted.pod.pod, exc)
        finally:
            os.close(accepted.netns_fd)
        log.info(
            "released pod %s (netns inode %d): %s", accepted.pod.pod, accepted.identity.inode, why
        )
        return True

    async def reconcile(self, live_uids: Iterable[str]) -> list[str]:
        """Release every served pod whose uid is not in `live_uids` (the API's pods of the node)."""
        gone = sorted(self.uids() - set(live_uids))
        for uid in gone:
            await self.release(uid, "the pod is gone")
        return gone

    async def release_all(self, why: str) -> None:
        for uid in sorted(self.uids()):
            await self.release(uid, why)


def peer_credentials(conn: socket.socket) -> PeerCredentials:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _recv_with_fds(conn: socket.socket, size: int) -> tuple[bytes, list[int], int]:
    """recvmsg(2) with MSG_CMSG_CLOEXEC: the received descriptors are close-on-exec from the
    start (socket.recv_fds ignores its flags argument, seen in CPython 3.11)."""
    fd_array = array.array("i")
    data, ancillary, flags, _ = conn.recvmsg(
        size, socket.CMSG_SPACE(MAX_FDS * fd_array.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fd_array.frombytes(payload[: len(payload) - len(payload) % fd_array.itemsize])
    return data, list(fd_array), flags


async def _readable(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


async def receive_hello(conn: socket.socket, timeout: float) -> tuple[Hello, int]:
    """The hello line and its one descriptor (close-on-exec), or ProtocolError.

    Read on the event loop, not in a thread: a peer that connects and says nothing costs a
    socket until the timeout, and holds up no one.
    """
    conn.setblocking(False)
    data = b""
    fds: list[int] = []
    try:
        async with asyncio.timeout(timeout):
            while not data.endswith(b"\n"):
                try:
                    chunk, got, flags = _recv_with_fds(conn, MAX_MESSAGE + 1 - len(data))
                except BlockingIOError:
                    await _readable(conn)
                    continue
                except OSError as exc:
                    raise ProtocolError(f"reading the hello failed: {exc.strerror}") from None
                fds.extend(got)
                if flags & socket.MSG_CTRUNC:
                    raise ProtocolError("the hello carries too many descriptors: send exactly one")
                if not chunk:
                    raise ProtocolError("the connection closed before a complete hello")
                data += chunk
                if len(data) > MAX_MESSAGE:
                    raise ProtocolError(f"the hello is longer than {MAX_MESSAGE} bytes")
        if len(fds) != 1:
            raise ProtocolError(
                f"the hello carries {len(fds)} descriptors: send exactly one, the network "
                "namespace (SCM_RIGHTS)"
            )
        hello = decode_hello(data)
    except TimeoutError:
        _close_all(fds)
        raise ProtocolError(f"no complete hello within {timeout:g} s") from None
    except BaseException:
        _close_all(fds)
        raise
    return hello, fds[0]


class HandoffServer:
    """The unix socket server of the hand-off. `await start()`, later `await close()`."""

    def __init__(
        self,
        socket_path: str,
        verifier: PodVerifier,
        server: PodServer,
        registry: PodRegistry,
        hello_timeout: float = 5.0,
        socket_mode: int = 0o666,
        max_blocking: int = 16,
    ) -> None:
        self.socket_path = socket_path
        self.verifier = verifier
        self.server = server
        self.registry = registry
        self.hello_timeout = hello_timeout
        # Who may connect is decided by who may mount the socket's directory (docs/node-mode.md):
        # the init containers run as any non-root uid, so the socket itself is open to all.
        self.socket_mode = socket_mode
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._connections: set[socket.socket] = set()
        self._pod_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._own_namespaces = netns.own_namespace_keys()
        # Its own threads for the blocking steps (netlink in a namespace): a burst of pods does
        # not starve the default pool.
        self._threads = ThreadPoolExecutor(max_workers=max_blocking, thread_name_prefix="handoff")

    async def _blocking(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, work, *args)

    async def start(self) -> None:
        self._remove_stale_socket()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(self.socket_path)
            os.chmod(self.socket_path, self.socket_mode)
            listener.listen(64)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._accepting = asyncio.create_task(self._accept_loop(), name="handoff-accept")
        logs.get().info("hand-off socket listening at %s", self.socket_path)

    def _remove_stale_socket(self) -> None:
        """A socket left by an earlier agent (SIGKILL, upgrade) is replaced; nothing else is."""
        try:
            st = os.lstat(self.socket_path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{self.socket_path} exists and is not a socket: leaving it")
        os.unlink(self.socket_path)

    async def close(self) -> None:
        """Stop listening, abort hand-offs in progress. Served pods stay in the registry."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        for conn in list(self._connections):  # ends hand-offs still reading their hello
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._threads.shutdown(wait=True)

    async def _accept_loop(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            task = asyncio.create_task(self._handle(conn), name="handoff")
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _handle(self, conn: socket.socket) -> None:
        log = logs.get()
        self._connections.add(conn)
        try:
            peer = peer_credentials(conn)
            log.info("hand-off connection from %s", peer)
            answer = await self._answer(conn, peer)
            try:
                await self._blocking(self._send_answer, conn, answer)
            except OSError as exc:
                # A served pod stays served: its init container, restarted, hands over the same
                # namespace again and gets its answer at once.
                log.warning("could not answer %s: %s", peer, exc.strerror)
        except Exception as exc:  # one connection's bug must not stop the server
            log.error("hand-off from a peer failed: %s", exc)
        finally:
            self._connections.discard(conn)
            conn.close()

    def _send_answer(self, conn: socket.socket, answer: Answer) -> None:
        conn.settimeout(self.hello_timeout)
        conn.sendall(encode_answer(answer))

    async def _answer(self, conn: socket.socket, peer: PeerCredentials) -> Answer:
        log = logs.get()
        try:
            hello, netns_fd = await receive_hello(conn, self.hello_timeout)
        except ProtocolError as exc:
            log.warning("refused hand-off from %s: %s", peer, exc)
            return Answer(ok=False, error=str(exc))
        try:
            return await self._serve(hello, netns_fd, peer)
        except HandoffRefused as exc:
            log.warning("refused hand-off of pod %s from %s: %s", hello.pod, peer, exc)
            return Answer(ok=False, error=str(exc))
        except Exception as exc:  # a bug in a verifier or server: the pod still gets an answer
            log.error("hand-off of pod %s from %s failed: %r", hello.pod, peer, exc)
            return Answer(ok=False, error=f"the agent failed: {exc}")

    async def _serve(self, hello: Hello, netns_fd: int, peer: PeerCredentials) -> Answer:
        """Owns `netns_fd`: keeps it in the registry when served, closes it otherwise."""
        log = logs.get()
        kept = False
        try:
            try:
                key = netns.namespace_key(netns_fd)
            except NotANetworkNamespace as exc:
                raise HandoffRefused(str(exc)) from None
            if key in self._own_namespaces:
                raise HandoffRefused("this is the node's own network namespace, not a pod's")
            async with self._pod_lock(hello.uid):
                served = self.registry.get(hello.uid)
                if served is not None and (served.identity.device, served.identity.inode) == key:
                    log.info("pod %s is served already (netns inode %d)", hello.pod, key[1])
                    return Answer(ok=True)
                try:
                    identity = await self._blocking(netns.identify, netns_fd)
                except OSError as exc:
                    raise HandoffRefused(f"cannot look into the namespace: {exc}") from None
                pod = await self.verifier.verify(hello, identity)
                if served is not None:
                    # Same pod, new namespace: its sandbox was re-created; the old one is dead.
                    await self.registry.release(hello.uid, "the pod handed over a new namespace")
                accepted = AcceptedPod(pod=pod, netns_fd=netns_fd, identity=identity, peer=peer)
                try:
                    teardown = await self.server.serve(accepted)
                except Exception as exc:
                    raise HandoffRefused(f"serving the pod failed: {exc}") from None
                self.registry.add(accepted, teardown)
                kept = True
            log.info(
                "serving pod %s (netns inode %d, %s, from %s)",
                pod.pod,
                identity.inode,
                pod.ipv6,
                peer,
            )
            return Answer(ok=True)
        finally:
            if not kept:
                os.close(netns_fd)

    @contextlib.asynccontextmanager
    async def _pod_lock(self, uid: str) -> AsyncIterator[None]:
        """One hand-off at a time per pod (a restarted init container may race its first try)."""
        lock, users = self._pod_locks.get(uid, (asyncio.Lock(), 0))
        self._pod_locks[uid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._pod_locks[uid]
            if users == 1:
                del self._pod_locks[uid]
            else:
                self._pod_locks[uid] = (lock, users - 1)
