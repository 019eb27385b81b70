"""The sidecar's prefix discovery: RFC 7050 against a real DNS exchange on 127.0.0.1, and RFC 8781
PREF64 parsing. (The RFC 6052 / RFC 7050 address rules themselves: tests/xlat/test_xlat_rfc6052.py.)
"""

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from clat_translator.discovery import DiscoveryError, discover_rfc7050, parse_pref64
from clat_translator.xlat import rfc6052
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPREF64, ICMPv6NDOptPrefixInfo


def _embed(prefix: str, ipv4: str) -> str:
    """Independent of the code under test: the IPv4 octets after the prefix, octet 8 skipped."""
    network = ipaddress.IPv6Network(prefix)
    raw = bytearray(network.network_address.packed)
    positions = [i for i in range(network.prefixlen // 8, 16) if i != 8][:4]
    for position, octet in zip(positions, ipaddress.IPv4Address(ipv4).packed, strict=True):
        raw[position] = octet
    return str(ipaddress.IPv6Address(bytes(raw)))


@pytest.fixture
def dns64() -> Iterator[Callable[[str], int]]:
    """A DNS64 on 127.0.0.1 (a thread) answering AAAA ipv4only.arpa for a given prefix."""
    sockets: list[socket.socket] = []

    def start(prefix: str) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        sockets.append(sock)

        def serve() -> None:
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            addresses = [_embed(prefix, str(a)) for a in rfc6052.WELL_KNOWN_IPV4]
            response.answer.append(
                dns.rrset.from_text_list(
                    query.question[0].name, 300, dns.rdataclass.IN, dns.rdatatype.AAAA, addresses
                )
            )
            sock.sendto(response.to_wire(), peer)

        threading.Thread(target=serve, daemon=True).start()
        return int(sock.getsockname()[1])

    yield start
    for sock in sockets:
        sock.close()


def test_rfc7050_discovery_through_a_dns64(dns64: Callable[[str], int]) -> None:
    port = dns64("2001:db8:64::/96")
    found = discover_rfc7050(["127.0.0.1"], timeout=2, port=port)
    assert found.prefixes == (ipaddress.IPv6Network("2001:db8:64::/96"),)
    assert (found.ttl, found.source) == (300, "rfc7050 via 127.0.0.1")


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("2001:db8:0:0:ff00::/96", "bits 64-71 (the u-octet) of the prefix must be zero"),
        ("fe80::/96", "link-local"),
    ],
)
def test_rfc7050_refuses_a_dns64_answer_that_plat_prefix_would_refuse(
    dns64: Callable[[str], int], prefix: str, why: str
) -> None:
    # Before: discovery took this prefix and `run` exited 1 once XlatConfig refused it.
    port = dns64(prefix)
    with pytest.raises(DiscoveryError) as error:
        discover_rfc7050(["127.0.0.1"], timeout=2, port=port)
    message = str(error.value)
    assert message.startswith("no DNS64 prefix from 127.0.0.1: AAAA ipv4only.arpa refused: ")
    assert why in message
    assert f"prefix {prefix}" in message


def test_pref64_options_are_held_to_the_same_rules() -> None:
    ra = ICMPv6ND_RA() / ICMPv6NDOptPREF64(scaledlifetime=75, plc=0, prefix="2001:db8:0:0:ff00::")
    assert parse_pref64(bytes(ra)) == []  # u-octet set: the option is ignored


@pytest.mark.parametrize(
    ("plc", "prefix"),
    [(0, "2001:db8:64::/96"), (1, "2001:db8:6464::/64"), (5, "2001:db8::/32")],
)
def test_parse_pref64_reads_prefix_length_code_and_scaled_lifetime(plc: int, prefix: str) -> None:
    ra = (
        ICMPv6ND_RA()
        / ICMPv6NDOptPrefixInfo()
        / ICMPv6NDOptPREF64(
            scaledlifetime=75, plc=plc, prefix=str(ipaddress.IPv6Network(prefix).network_address)
        )
    )
    assert parse_pref64(bytes(ra)) == [(ipaddress.IPv6Network(prefix), 600)]


def test_parse_pref64_ignores_malformed_and_other_messages() -> None:
    ra = bytes(ICMPv6ND_RA() / ICMPv6NDOptPREF64(scaledlifetime=1, prefix="2001:db8:64::"))
    assert parse_pref64(ra[:-4]) == []  # option truncated
    zero_length = ra[:16] + bytes([38, 0]) + ra[18:]
    assert parse_pref64(zero_length) == []
    assert parse_pref64(bytes([133]) + ra[1:]) == []  # a Router Solicitation
    bad_plc = ra[:18] + bytes([ra[18], (ra[19] & 0xF8) | 7]) + ra[20:]
    assert parse_pref64(bad_plc) == []
    assert parse_pref64(b"") == []
