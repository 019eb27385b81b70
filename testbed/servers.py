"""The IPv4-only servers of the testbed: HTTP and UDP echo, one process, run inside the server ns.

HTTP: `GET /` a short page naming the server, `GET /bytes/N` N deterministic bytes,
`POST /sha256` the SHA-256 of the body (to check uploads arrive intact).
UDP: every datagram is echoed back unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

PAGE_TEMPLATE = "hello from the IPv4-only server {address}\n"
MAX_BYTES = 64 * 1024 * 1024


def pattern_bytes(size: int) -> bytes:
    """The deterministic body of `GET /bytes/N`: clients can rebuild it to compare."""
    block = bytes(range(256)) * 256
    return (block * (size // len(block) + 1))[:size]


class _Handler(BaseHTTPRequestHandler):
    server_version = "clat-testbed/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/":
            host = cast(tuple[str, int], self.server.server_address)[0]
            self._send(PAGE_TEMPLATE.format(address=host).encode())
        elif self.path.startswith("/bytes/") and self.path[7:].isdigit():
            size = int(self.path[7:])
            if size > MAX_BYTES:
                self.send_error(413)
                return
            self._send(pattern_bytes(size), "application/octet-stream")
        else:
            self.send_error(404)

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/sha256":
            self.send_error(404)
            return
        remaining = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
        self._send(f"{digest.hexdigest()}\n".encode())

    def _send(self, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _udp_echo(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True, help="IPv4 address to serve on")
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--udp-port", type=int, default=7)
    args = parser.parse_args(argv)

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((args.address, args.udp_port))
    threading.Thread(target=_udp_echo, args=(udp,), daemon=True).start()
    ThreadingHTTPServer.daemon_threads = True
    httpd = ThreadingHTTPServer((args.address, args.http_port), _Handler)
    print(f"serving http://{args.address}:{args.http_port}/ and udp echo :{args.udp_port}")
    sys.stdout.flush()
    httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
