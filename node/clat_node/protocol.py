"""The hand-off protocol between a pod's init container and the node agent. Pure: no I/O.

One connection per hand-off on a unix stream socket:
  1. the pod sends ONE message, the hello, and with it (SCM_RIGHTS, the same sendmsg) exactly
     one file descriptor: its own network namespace (`/proc/self/ns/net`);
  2. the agent checks and serves the pod, then sends ONE message, the answer, and closes.
A message is one JSON object in UTF-8 ending in a newline, at most MAX_MESSAGE bytes.

  hello   {"version": 1, "namespace": "shop", "name": "web-0", "uid": "6f1c...-..."}
  answer  {"ok": true}                      IPv4 works in the pod
          {"ok": false, "error": "..."}      refused or failed; the error says why
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

PROTOCOL_VERSION = 1
MAX_MESSAGE = 4096

# The downward API gives the init container these (fieldRef metadata.namespace / .name / .uid).
ENV_POD_NAMESPACE = "CLAT_POD_NAMESPACE"
ENV_POD_NAME = "CLAT_POD_NAME"
ENV_POD_UID = "CLAT_POD_UID"

DEFAULT_SOCKET = "/run/clat-node/handoff.sock"

# Kubernetes object names: a namespace is a DNS-1123 label, a pod name a DNS-1123 subdomain.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# The API server gives every object a UUID; accept any case, nothing else.
_UID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says what is wrong with it."""


@dataclass(frozen=True)
class Hello:
    namespace: str
    name: str
    uid: str

    def __post_init__(self) -> None:
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise ProtocolError(f"pod namespace {self.namespace!r} is not a Kubernetes namespace")
        if len(self.name) > 253 or not _DNS_SUBDOMAIN.fullmatch(self.name):
            raise ProtocolError(f"pod name {self.name!r} is not a Kubernetes pod name")
        if not _UID.fullmatch(self.uid):
            raise ProtocolError(f"pod uid {self.uid!r} is not a Kubernetes uid")

    @property
    def pod(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Answer:
    ok: bool
    error: str = ""


def _encode(obj: dict[str, object]) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes, the limit is {MAX_MESSAGE}")
    return data


def _decode(data: bytes, what: str) -> dict[str, object]:
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"{what} longer than {MAX_MESSAGE} bytes")
    if not data.endswith(b"\n"):
        raise ProtocolError(f"{what} is not one complete line")
    try:
        obj = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError(f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return obj


def encode_hello(hello: Hello) -> bytes:
    return _encode(
        {
            "version": PROTOCOL_VERSION,
            "namespace": hello.namespace,
            "name": hello.name,
            "uid": hello.uid,
        }
    )


def decode_hello(data: bytes) -> Hello:
    obj = _decode(data, "hello")
    version = obj.get("version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"hello speaks protocol version {version!r}, this agent speaks {PROTOCOL_VERSION}"
        )
    fields = {}
    for key in ("namespace", "name", "uid"):
        value = obj.get(key)
        if not isinstance(value, str):
            raise ProtocolError(f"hello has no {key!r} string")
        fields[key] = value
    return Hello(**fields)


def encode_answer(answer: Answer) -> bytes:
    if answer.ok:
        return _encode({"ok": True})
    # An error is one line of text for a log; keep it short enough for the message limit.
    error = " ".join(answer.error.split())[:1024] or "unknown error"
    return _encode({"ok": False, "error": error})


def decode_answer(data: bytes) -> Answer:
    obj = _decode(data, "answer")
    ok = obj.get("ok")
    if ok is True:
        return Answer(ok=True)
    if ok is False:
        error = obj.get("error")
        return Answer(ok=False, error=error if isinstance(error, str) and error else "no reason")
    raise ProtocolError("answer has no boolean 'ok'")
