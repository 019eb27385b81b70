"""`clat-node handoff` as a process (its flags, environment and errors) and the wire format."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clat_node.protocol import (
    Answer,
    Hello,
    ProtocolError,
    decode_answer,
    decode_hello,
    encode_answer,
    encode_hello,
)

from tests.node.conftest import CLAT_NODE

UID = str(uuid.uuid4())
POD_ENV = {"CLAT_POD_NAMESPACE": "shop", "CLAT_POD_NAME": "web-0", "CLAT_POD_UID": UID}


def clat_node(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLAT_NODE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
    )


def last_message(stderr: str) -> str:
    return stderr.strip().splitlines()[-1].split(" ", 2)[2]


def test_the_pod_identity_is_required() -> None:
    result = clat_node("handoff", "--socket", "/nonexistent")
    assert result.returncode == 2
    assert (
        "handoff needs --pod-namespace (env CLAT_POD_NAMESPACE), --pod-name (env CLAT_POD_NAME), "
        "--pod-uid (env CLAT_POD_UID): set them from the downward API"
    ) in result.stderr


def test_a_bad_identity_is_one_line() -> None:
    result = clat_node("handoff", env={**POD_ENV, "CLAT_POD_UID": "nope"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert (
        last_message(result.stderr) == "clat-node handoff: pod uid 'nope' is not a Kubernetes uid"
    )


def test_flags_read_the_environment() -> None:
    result = clat_node("handoff", env={**POD_ENV, "CLAT_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "CLAT_TIMEOUT: 'soon' is not a number of seconds" in result.stderr
    result = clat_node("handoff", "--timeout", "0", env=POD_ENV)
    assert result.returncode == 2
    assert "'0': a number of seconds above 0" in result.stderr


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    """A unix socket peer that records each hello and replies with the next canned reply."""
    path = str(tmp_path / "agent.sock")
    replies: list[bytes] = []
    hellos: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data, fds, _, _ = socket.recv_fds(conn, 4096, 4)
                for fd in fds:
                    os.close(fd)
                hellos.append(data)
                conn.sendall(replies.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, replies, hellos
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b'{"ok": true}\n', "IPv4 works: the agent serves pod shop/web-0"),
        (
            b'{"ok": false, "error": "pod shop/web-0 has not opted in"}\n',
            "clat-node handoff: the agent refused pod shop/web-0: pod shop/web-0 has not opted in",
        ),
        (b"nonsense\n", "clat-node handoff: the agent's answer is garbled: answer is not JSON"),
        (b'{"ok": tr', "clat-node handoff: the agent closed the connection without an answer"),
    ],
)
def test_the_answer_decides_the_exit_code(
    peer: tuple[str, list[bytes], list[bytes]], reply: bytes, message: str
) -> None:
    path, replies, hellos = peer
    replies.append(reply)
    result = clat_node("handoff", "--socket", path, "--timeout", "5", env=POD_ENV)
    assert result.returncode == (0 if reply.startswith(b'{"ok": true}') else 1), result.stderr
    assert last_message(result.stderr) == message
    assert json.loads(hellos[0]) == {"version": 1, "namespace": "shop", "name": "web-0", "uid": UID}


def test_wire_format_round_trips_and_refuses_garbage() -> None:
    hello = Hello(namespace="shop", name="web-0.x", uid=UID)
    assert decode_hello(encode_hello(hello)) == hello
    assert encode_answer(Answer(ok=True)) == b'{"ok":true}\n'
    assert decode_answer(encode_answer(Answer(ok=False, error="a\nb  c"))) == Answer(False, "a b c")
    assert decode_answer(b'{"ok": false}\n') == Answer(False, "no reason")
    assert len(encode_answer(Answer(ok=False, error="x" * 10000))) < 4096
    for bad in (b'{"ok": true}', b'{"ok": 1}\n', b"\xff\n"):
        with pytest.raises(ProtocolError):
            decode_answer(bad)
    for namespace, name, uid in (("a" * 64, "b", UID), ("a", "B", UID), ("a", "b", UID + "0")):
        with pytest.raises(ProtocolError):
            Hello(namespace=namespace, name=name, uid=uid)


@pytest.mark.parametrize(("command", "count"), [("handoff", 5), ("agent", 9)])
def test_docs_name_every_flag_its_variable_and_default(command: str, count: int) -> None:
    import argparse

    from clat_node.cli import build_parser

    doc = (Path(__file__).resolve().parents[2] / "docs" / "node-mode.md").read_text()
    # The command's own section: from its heading to the next one.
    section = doc.split(f"### `clat-node {command}`", 1)[1].split("\n#", 1)[0]
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = [a for a in commands.choices[command]._actions if a.option_strings and a.dest != "help"]
    assert len(flags) == count
    for action in flags:
        flag = action.option_strings[0]
        env = "CLAT_" + flag.lstrip("-").upper().replace("-", "_")
        # No default: "required", or "unset" where the command then finds the value itself.
        defaults = (
            {"required", "unset"}
            if action.default is None
            else {f"{action.default:g}"}
            if isinstance(action.default, float)
            else {str(action.default)}
        )
        row = next(
            (line for line in section.splitlines() if re.match(rf"\| `{flag}[ `]", line)), None
        )
        assert row, f"docs/node-mode.md has no row for {command} {flag}"
        assert f"`{env}`" in row, row
        assert any(f"| {default} |" in row.replace("`", "") for default in defaults), row


def test_the_agent_needs_a_node_name_and_a_known_datapath() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    missing = subprocess.run(
        [CLAT_NODE, "agent"], env=env, capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 2
    assert "agent needs --node-name (env CLAT_NODE_NAME)" in missing.stderr
    bad = subprocess.run(
        [CLAT_NODE, "agent", "--node-name", "n", "--datapath", "fast"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "'fast': one of auto, kernel, userspace" in bad.stderr
