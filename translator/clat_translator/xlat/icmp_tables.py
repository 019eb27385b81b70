"""ICMP type/code and Parameter Problem pointer mappings of RFC 7915, as data.

A (type, code) absent from an error table is silently dropped, as the RFC says for it.
"""

# ICMP kinds that need more than a type/code swap.
PLAIN = 0
MTU = 1  # Fragmentation Needed <-> Packet Too Big: MTU arithmetic
POINTER = 2  # Parameter Problem: pointer mapped through the figure below
NEXT_HEADER = 3  # RFC 7915 §4.2: Protocol Unreachable -> Parameter Problem, pointer = 6

# RFC 7915 §4.2: ICMPv4 informational -> ICMPv6 (others: "silently drop").
ICMP4_TO_6_INFO: dict[int, int] = {8: 128, 0: 129}  # Echo Request / Echo Reply

# RFC 7915 §4.2: ICMPv4 errors (type, code) -> (ICMPv6 type, code, kind).
ICMP4_TO_6_ERROR: dict[tuple[int, int], tuple[int, int, int]] = {
    (3, 0): (1, 0, PLAIN),  # net unreachable -> no route to destination
    (3, 1): (1, 0, PLAIN),  # host unreachable -> no route
    (3, 2): (4, 1, NEXT_HEADER),  # protocol unreachable -> unrecognized Next Header, ptr 6
    (3, 3): (1, 4, PLAIN),  # port unreachable -> port unreachable
    (3, 4): (2, 0, MTU),  # fragmentation needed -> Packet Too Big
    (3, 5): (1, 0, PLAIN),  # source route failed -> no route
    (3, 6): (1, 0, PLAIN),  # codes 6, 7, 8, 11, 12 -> no route
    (3, 7): (1, 0, PLAIN),
    (3, 8): (1, 0, PLAIN),
    (3, 9): (1, 1, PLAIN),  # net administratively prohibited -> communication prohibited
    (3, 10): (1, 1, PLAIN),  # host administratively prohibited -> communication prohibited
    (3, 11): (1, 0, PLAIN),
    (3, 12): (1, 0, PLAIN),
    (3, 13): (1, 1, PLAIN),  # communication administratively prohibited
    # (3, 14) host precedence violation: silently drop
    (3, 15): (1, 1, PLAIN),  # precedence cutoff in effect -> communication prohibited
    (11, 0): (3, 0, PLAIN),  # time exceeded: type 3, code unchanged
    (11, 1): (3, 1, PLAIN),
    (12, 0): (4, 0, POINTER),  # parameter problem, pointer indicates the error
    # (12, 1) missing a required option: silently drop
    (12, 2): (4, 0, POINTER),  # bad length
}

# RFC 7915 §4.2 Figure 3: IPv4 header octet -> IPv6 header octet (absent: n/a, drop).
POINTER_4TO6: dict[int, int] = {
    0: 0,  # version/IHL -> version/traffic class
    1: 1,  # type of service -> traffic class/flow label
    2: 4,  # total length -> payload length
    3: 4,
    8: 7,  # time to live -> hop limit
    9: 6,  # protocol -> next header
    **dict.fromkeys(range(12, 16), 8),  # source address
    **dict.fromkeys(range(16, 20), 24),  # destination address
}

# RFC 7915 §5.2: ICMPv6 informational -> ICMPv4 (MLD, ND and the rest: "silently drop").
ICMP6_TO_4_INFO: dict[int, int] = {128: 8, 129: 0}

# RFC 7915 §5.2: ICMPv6 errors (type, code) -> (ICMPv4 type, code, kind).
ICMP6_TO_4_ERROR: dict[tuple[int, int], tuple[int, int, int]] = {
    (1, 0): (3, 1, PLAIN),  # no route to destination -> host unreachable
    (1, 1): (3, 10, PLAIN),  # communication prohibited -> host administratively prohibited
    (1, 2): (3, 1, PLAIN),  # beyond scope of source address -> host unreachable
    (1, 3): (3, 1, PLAIN),  # address unreachable -> host unreachable
    (1, 4): (3, 3, PLAIN),  # port unreachable -> port unreachable
    (2, 0): (3, 4, MTU),  # Packet Too Big -> fragmentation needed
    (3, 0): (11, 0, PLAIN),  # time exceeded, code unchanged
    (3, 1): (11, 1, PLAIN),
    (4, 0): (12, 0, POINTER),  # erroneous header field -> parameter problem, pointer mapped
    (4, 1): (3, 2, PLAIN),  # unrecognized Next Header -> protocol unreachable
    # (4, 2) unrecognized IPv6 option: silently drop
}

# RFC 7915 §5.2 Figure 6: IPv6 header octet -> IPv4 header octet (absent: n/a, drop).
POINTER_6TO4: dict[int, int] = {
    0: 0,  # version/traffic class -> version/IHL, type of service
    1: 1,  # traffic class/flow label -> type of service
    4: 2,  # payload length -> total length
    5: 2,
    6: 9,  # next header -> protocol
    7: 8,  # hop limit -> time to live
    **dict.fromkeys(range(8, 24), 12),  # source address
    **dict.fromkeys(range(24, 40), 16),  # destination address
}

# RFC 4884 §4.1/§4.5: errors that carry a length attribute (offset in the ICMP header).
ICMP4_LENGTH_TYPES = frozenset({3, 11, 12})  # length at octet 5, in 32-bit words
ICMP6_LENGTH_TYPES = frozenset({1, 3})  # length at octet 4, in 64-bit words

ICMP4_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})  # never answer these with an error
ICMP4_INFO_TYPES = frozenset({0, 8, 9, 10, 13, 14, 15, 16, 17, 18})
