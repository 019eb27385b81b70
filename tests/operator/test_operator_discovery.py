"""RFC 7050 prefix discovery by the operator, against a real DNS exchange on 127.0.0.1.

(The address rules it applies are clat_translator.xlat.rfc6052's: tests/xlat/test_xlat_rfc6052.py.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from clat_operator import discovery


def embed(prefix: str, ipv4: str) -> str:
    """RFC 6052 §2.2 by hand: the IPv4 octets after the prefix, skipping octet 8 (bits 64-71)."""
    network = ipaddress.IPv6Network(prefix)
    raw = bytearray(network.network_address.packed)
    positions = [i for i in range(network.prefixlen // 8, 16) if i != 8][:4]
    for position, octet in zip(positions, ipaddress.IPv4Address(ipv4).packed, strict=True):
        raw[position] = octet
    return str(ipaddress.IPv6Address(bytes(raw)))


Answer = Callable[[dns.message.Message], dns.message.Message]


class Dns64Server(asyncio.DatagramProtocol):
    """A DNS server on 127.0.0.1 that answers every query with `answer(query)`."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        self.queries.append(
            f"{query.question[0].name} {dns.rdatatype.to_text(query.question[0].rdtype)}"
        )
        assert self.transport is not None
        self.transport.sendto(self.answer(query).to_wire(), addr)


@pytest.fixture
async def dns64() -> AsyncIterator[Callable[[Answer], asyncio.Future[tuple[Dns64Server, int]]]]:
    transports: list[asyncio.BaseTransport] = []

    async def start(answer: Answer) -> tuple[Dns64Server, int]:
        transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: Dns64Server(answer), local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return protocol, transport.get_extra_info("sockname")[1]

    yield start  # type: ignore[misc]
    for transport in transports:
        transport.close()


def dns64_answer(prefix: str) -> Answer:
    def answer(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        addresses = [embed(prefix, "192.0.0.170"), embed(prefix, "192.0.0.171")]
        response.answer.append(
            dns.rrset.from_text_list(
                query.question[0].name, 300, dns.rdataclass.IN, dns.rdatatype.AAAA, addresses
            )
        )
        return response

    return answer


async def test_discovery_through_a_dns64(dns64) -> None:
    server, port = await dns64(dns64_answer("2001:db8:64::/96"))
    found = await discovery.discover_plat_prefix(["127.0.0.1"], port=port, timeout=2)

    assert found == "2001:db8:64::/96"
    assert server.queries == ["ipv4only.arpa. AAAA"]


async def test_an_answer_an_annotation_could_not_give_is_refused_saying_why(
    dns64, caplog: pytest.LogCaptureFixture
) -> None:
    server, port = await dns64(dns64_answer("64:ff9b:0:0:100::/96"))  # u-octet set
    with caplog.at_level(logging.INFO, logger="clat_operator.discovery"):
        found = await discovery.discover_plat_prefix(["127.0.0.1"], port=port, timeout=2)
    assert found == ""
    assert "prefix 64:ff9b:0:0:100::/96: RFC 6052 §2.2: bits 64-71" in caplog.text


async def test_no_dns64_means_no_prefix(dns64) -> None:
    def nxdomain(query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    _, port = await dns64(nxdomain)
    assert await discovery.discover_plat_prefix(["127.0.0.1"], port=port, timeout=2) == ""


async def test_silent_resolver_times_out_to_no_prefix(dns64) -> None:
    _, port = await dns64(dns64_answer("64:ff9b::/96"))
    # Nothing listens on the next port: no answer in time.
    assert (
        await discovery.discover_plat_prefix(
            ["127.0.0.1"], port=port + 1 if port < 65535 else port - 1, timeout=0.5
        )
        == ""
    )
