"""Drop reasons: every packet the core refuses is counted under exactly one of these.

Short kebab-case strings; the sidecar pre-creates one Prometheus label value per reason.
"""

TRUNCATED = "truncated"  # shorter than its headers say
BAD_VERSION = "bad-version"  # version nibble neither 4 nor 6
BAD_HEADER_LENGTH = "bad-header-length"  # IPv4 IHL < 5
BAD_LENGTH = "bad-length"  # total / payload length impossible (incl. IPv6 jumbograms)
BAD_CHECKSUM = "bad-checksum"  # IPv4 header or ICMP checksum wrong
BAD_FRAGMENT = "bad-fragment"  # impossible offset, non-last fragment not a multiple of 8
BAD_EXTENSION_HEADER = "bad-extension-header"  # truncated or misplaced IPv6 extension header
BAD_INNER_PACKET = "bad-inner-packet"  # ICMP error whose embedded packet cannot be translated
TTL_EXPIRED = "ttl-expired"  # RFC 7915 §4.1/§5.1: router hop; Time Exceeded sent back
UNTRANSLATABLE_SOURCE = "untranslatable-source"  # no EAM, outside pool6, denylisted, reserved
UNTRANSLATABLE_DESTINATION = "untranslatable-destination"
SOURCE_ROUTE = "source-route"  # RFC 7915 §4.1: unexpired IPv4 source route option
SEGMENTS_LEFT = "segments-left"  # RFC 7915 §5.1: routing header with segments left != 0
FRAGMENTATION_NEEDED = "fragmentation-needed"  # RFC 7915 §4.1: DF set, too big for IPv6 side
PACKET_TOO_BIG = "packet-too-big"  # RFC 7915 §5.1: too big for the IPv4 side
UDP_CHECKSUM_ZERO = "udp-checksum-zero"  # RFC 7915 §4.5: unfragmented, amend_udp_checksum_zero off
FRAGMENTED_UDP_CHECKSUM_ZERO = "fragmented-udp-checksum-zero"  # RFC 7915 §4.5: always dropped
FRAGMENTED_ICMP = "fragmented-icmp"  # ICMP checksum spans fragments: cannot be translated
ICMP_UNTRANSLATABLE = "icmp-untranslatable"  # RFC 7915 §4.2/§5.2: type/code with no mapping
ICMP_NESTED_ERROR = "icmp-nested-error"  # RFC 7915 §4.3/§5.3: ICMP error inside an ICMP error
ICMP_WRONG_FAMILY = "icmp-wrong-family"  # ICMPv6 inside IPv4, or ICMPv4 inside IPv6
TO_TRANSLATOR = "to-translator"  # addressed to local_ipv4/local_ipv6 and not an echo request
FOREIGN_SOURCE = "foreign-source"  # clat_mode: not the CLAT's own IPv4 / not a peer of it
INTERNAL_ERROR = "internal-error"  # a bug: translate() caught an exception

DROP_REASONS: frozenset[str] = frozenset(
    {
        TRUNCATED,
        BAD_VERSION,
        BAD_HEADER_LENGTH,
        BAD_LENGTH,
        BAD_CHECKSUM,
        BAD_FRAGMENT,
        BAD_EXTENSION_HEADER,
        BAD_INNER_PACKET,
        TTL_EXPIRED,
        UNTRANSLATABLE_SOURCE,
        UNTRANSLATABLE_DESTINATION,
        SOURCE_ROUTE,
        SEGMENTS_LEFT,
        FRAGMENTATION_NEEDED,
        PACKET_TOO_BIG,
        UDP_CHECKSUM_ZERO,
        FRAGMENTED_UDP_CHECKSUM_ZERO,
        FRAGMENTED_ICMP,
        ICMP_UNTRANSLATABLE,
        ICMP_NESTED_ERROR,
        ICMP_WRONG_FAMILY,
        TO_TRANSLATOR,
        FOREIGN_SOURCE,
        INTERNAL_ERROR,
    }
)
