// SPDX-License-Identifier: Apache-2.0
/*
 * The CLAT's kernel data path: a tc program on clsact egress of the `clat` TUN.
 *
 * It translates the common packets in both directions (RFC 7915), byte for byte as
 * clat_translator.xlat.Translator.translate does with the sidecar's configuration, and hands
 * them back to the stack with bpf_redirect(tun, BPF_F_INGRESS), as if the TUN had received
 * them: exactly what the userspace path does by writing the packet to the TUN. Anything else
 * leaves here unchanged (TC_ACT_OK), reaches the TUN's file descriptor and is translated (or
 * dropped and counted) by the userspace path. The translated set:
 *   IPv4 -> IPv6: no options, not a fragment, source = the CLAT's IPv4 address, a destination
 *     with an RFC 6052 form, TTL > 1, TCP / UDP with a checksum / ICMP echo, and a size that
 *     needs no fragmentation (RFC 7915 §4.1).
 *   IPv6 -> IPv4: no extension headers, destination = the CLAT's IPv6 address, source in the
 *     PLAT prefix, hop limit > 1, TCP / UDP with a checksum / ICMPv6 echo (RFC 7915 §5.1).
 * The configuration (prefix, addresses, MTUs) comes from a map the loader writes; it has two
 * slots and an index, so that a change is seen whole by every packet after it.
 *
 * Build: clang -O2 -g -target bpf -c clat.bpf.c (headers from libbpf-dev, no CO-RE).
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Apache-2.0";

/* ---- the maps Python reads and writes (loader.py mirrors these layouts) ------------------ */

struct clat_config {
	__u32 enabled;          /* 0: everything goes to userspace */
	__u32 tun_ifindex;      /* where translated packets re-enter the stack */
	__u32 l3_offset;        /* 0 on the TUN; 14 under BPF_PROG_TEST_RUN (an Ethernet frame) */
	__u32 pool6_len;        /* RFC 6052 prefix length: 32, 40, 48, 56, 64 or 96 */
	__u8 pool6[16];         /* the PLAT prefix, bits past the length zero */
	__u8 clat_v6[16];       /* the CLAT's IPv6 address (the EAM entry's IPv6 side) */
	__u8 clat_v4[4];        /* the CLAT's IPv4 address (RFC 7335, 192.0.0.1) */
	__u8 local_v4[4];       /* the translator's own IPv4 address (192.0.0.2): never pool6 */
	__u32 ipv6_mtu;         /* next-hop MTU on the IPv6 side (the uplink) */
	__u32 ipv4_mtu;         /* next-hop MTU on the IPv4 side */
	__u32 lowest_ipv6_mtu;  /* DF-clear IPv4 packets bigger than this as IPv6 are fragmented */
	__u32 df_limit;         /* RFC 7915 §5.1: DF is set on IPv4 packets bigger than this */
	__u32 flags;            /* CLAT_F_*: which packets go to userspace, and how */
};

/* UDP IPv4 -> IPv6 to userspace: its coalescer sends a burst of datagrams as one USO
 * super-packet through conntrack and every hop after it, faster than one skb per datagram
 * (docs/performance.md, "Kernel path"). */
#define CLAT_F_UDP46_USERSPACE 1
/* The same for UDP IPv6 -> IPv4: the userspace path coalesces downstream datagrams too. */
#define CLAT_F_UDP64_USERSPACE 4
/* An IPv6 -> IPv4 super-packet whose full segments take DF and whose last one (1260 bytes or
 * less) would not (RFC 7915 §5.1) is translated whole, DF on every segment, instead of going
 * to userspace to be split: it goes to the CLAT's own IPv4 address, where TCP and UDP take
 * the super-packet whole and no segment of it is ever sent, so the last one's DF is never
 * seen. Left to userspace, such packets arrive behind the flow's later ones: the reordering
 * made the sender retransmit ~100x as often (docs/performance.md, "Kernel path"). */
#define CLAT_F_SUPERPACKET_DF 2

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct clat_config);
} clat_config SEC(".maps");

/* Which clat_config slot is live: the loader fills the other one, then flips this. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} clat_active SEC(".maps");

/* Counter indexes: loader.py's COUNTERS names them in this order. */
enum clat_counter {
	XLAT46_PACKETS,
	XLAT46_BYTES,
	XLAT64_PACKETS,
	XLAT64_BYTES,
	PASS_DISABLED,          /* no configuration yet */
	PASS_NOT_IP,            /* neither IPv4 nor IPv6, or the version nibble disagrees */
	PASS_LENGTH,            /* truncated, padded or impossible length */
	PASS_IPV4_HEADER,       /* IPv4 options or a wrong header checksum */
	PASS_FRAGMENT,          /* IPv4 fragment, or an IPv6 Fragment Header */
	PASS_EXTENSION_HEADER,  /* any other IPv6 extension header */
	PASS_SOURCE,            /* not from the CLAT (IPv4) / not from the PLAT prefix (IPv6) */
	PASS_DESTINATION,       /* no plain RFC 6052 form (IPv4) / not to the CLAT (IPv6) */
	PASS_HOP_LIMIT,         /* TTL or hop limit expires here: Time Exceeded */
	PASS_PROTOCOL,          /* not TCP, UDP or ICMP */
	PASS_ICMP,              /* not an echo, a wrong checksum, or a size we do not sum */
	PASS_UDP_CHECKSUM_ZERO, /* RFC 7915 §4.5: the checksum must be computed */
	PASS_SIZE,              /* needs fragmentation or an MTU error */
	PASS_GSO,               /* a super-packet that cannot be translated whole */
	PASS_CHECKSUM_EDGE,     /* a checksum where RFC 1624 could give the other zero */
	PASS_HELPER_ERROR,      /* a helper failed before the packet was changed */
	PASS_UDP_USERSPACE,     /* UDP with CLAT_F_UDP46_USERSPACE / CLAT_F_UDP64_USERSPACE set */
	DROP_HELPER_ERROR,      /* a helper failed after the packet was changed: dropped */
	CLAT_COUNTERS,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CLAT_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} clat_counters SEC(".maps");

/* ICMP checksums are verified over the whole message, in pieces of this size. */
#define SUM_CHUNK 512
#define ICMP_MAX_SUMMED (4 * SUM_CHUNK)

struct scratch {
	__u8 buf[SUM_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} clat_scratch SEC(".maps");

/* ---- small pieces ------------------------------------------------------------------------- */

#define IPPROTO_ICMPV6_ 58
#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8
#define ICMP6_ECHO_REQUEST 128
#define ICMP6_ECHO_REPLY 129
#define IP_DF 0x4000
#define IP_MF_OFFSET 0x3FFF
#define MOD16 0xFFFFULL

struct ip4 {
	__u8 vihl;
	__u8 tos;
	__be16 total;
	__be16 ident;
	__be16 frag;
	__u8 ttl;
	__u8 proto;
	__be16 check;
	__u8 addrs[8]; /* source, destination */
};

struct ip6 {
	__be32 first; /* version, traffic class, flow label */
	__be16 plen;
	__u8 nh;
	__u8 hop;
	__u8 addrs[32]; /* source, destination */
};

static __always_inline void count(enum clat_counter which, __u64 amount)
{
	__u32 key = which;
	__u64 *value = bpf_map_lookup_elem(&clat_counters, &key);

	if (value)
		*value += amount;
}

static __always_inline int pass(enum clat_counter reason)
{
	count(reason, 1);
	return TC_ACT_OK;
}

/* Byte strings of a constant length differ (BPF has no memcmp). */
static __always_inline int differ(const __u8 *a, const __u8 *b, int len)
{
	__u8 d = 0;

#pragma clang loop unroll(full)
	for (int i = 0; i < len; i++)
		d |= a[i] ^ b[i];
	return d != 0;
}

/* The one's complement sum of big-endian 16-bit words, not folded (RFC 1071). */
static __always_inline __u64 sum_be16(const __u8 *p, int len)
{
	__u64 s = 0;

#pragma clang loop unroll(full)
	for (int i = 0; i < len; i += 2)
		s += ((__u64)p[i] << 8) | p[i + 1];
	return s;
}

/* The checksum field for a sum given mod 0xFFFF, as xlat.checksum.finish: residue 0 -> 0. */
static __always_inline __u16 finish(__u64 total)
{
	__u64 r = total % MOD16;

	return r ? (__u16)(MOD16 - r) : 0;
}

static __always_inline __u64 load_be64(const __u8 *p)
{
	__u64 v;

	__builtin_memcpy(&v, p, 8);
	return bpf_be64_to_cpu(v);
}

static __always_inline void store_be64(__u8 *p, __u64 v)
{
	v = bpf_cpu_to_be64(v);
	__builtin_memcpy(p, &v, 8);
}

static __always_inline __u32 load_be32(const __u8 *p)
{
	__u32 v;

	__builtin_memcpy(&v, p, 4);
	return bpf_ntohl(v);
}

/* Jool's implicit denylist (xlat.addresses.RESERVED4) and the translator's own address: these
 * never take an RFC 6052 form. */
static __always_inline int denied4(__u32 a, const struct clat_config *cfg)
{
	__u8 top = a >> 24;

	return top == 0 || top == 127 || (a >> 16) == 0xA9FE || top >= 224 ||
	       a == load_be32(cfg->local_v4);
}

/* RFC 6052 §2.2: the IPv4-embedded IPv6 address of a4; the u-octet (bits 64-71) stays zero. */
static __always_inline void embed(__u8 out[16], __u32 a4, const struct clat_config *cfg)
{
	__u32 n = cfg->pool6_len;
	__u64 hi = load_be64(cfg->pool6), lo = load_be64(cfg->pool6 + 8);

	if (n == 96) {
		lo |= a4;
	} else if (n == 64) {
		lo |= (__u64)a4 << 24;
	} else {
		__u32 low = (n - 32) & 31; /* IPv4 bits after the u-octet: 0, 8, 16 or 24 */

		hi |= a4 >> low;
		lo |= ((__u64)a4 & ((1ULL << low) - 1)) << (56 - low);
	}
	store_be64(out, hi);
	store_be64(out + 8, lo);
}

/* RFC 6052 §2.2: the IPv4 address in a pool6 address (u-octet and suffix ignored), or -1. */
static __always_inline __s64 extract(const __u8 a6[16], const struct clat_config *cfg)
{
	__u32 n = cfg->pool6_len;
	__u64 hi = load_be64(a6), lo = load_be64(a6 + 8);
	__u64 phi = load_be64(cfg->pool6), plo = load_be64(cfg->pool6 + 8);

	if (n == 96) {
		if (hi != phi || (lo >> 32) != (plo >> 32))
			return -1;
		return lo & 0xFFFFFFFF;
	}
	if (n < 32 || n > 64 || n & 7)
		return -1;
	if ((hi >> (64 - n)) != (phi >> (64 - n)))
		return -1;
	if (n == 64)
		return (lo >> 24) & 0xFFFFFFFF;
	__u32 low = n - 32;
	__u64 high = hi & ((1ULL << (64 - n)) - 1);

	return ((high << low) | ((lo >> (56 - low)) & ((1ULL << low) - 1))) & 0xFFFFFFFF;
}

/* One's complement sum of len bytes at off (len a multiple of 4, at most ICMP_MAX_SUMMED),
 * folded to 16 bits in network order; -1 when it cannot be read. */
static __always_inline __s64 sum_packet(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__u32 key = 0;
	struct scratch *s = bpf_map_lookup_elem(&clat_scratch, &key);
	__s64 acc = 0;

	if (!s)
		return -1;
	__u32 done = 0;

	for (int i = 0; i < ICMP_MAX_SUMMED / SUM_CHUNK; i++) {
		if (len - done < SUM_CHUNK)
			break;
		if (bpf_skb_load_bytes(skb, off + done, s->buf, SUM_CHUNK) < 0)
			return -1;
		acc = bpf_csum_diff(0, 0, (__be32 *)s->buf, SUM_CHUNK, (__wsum)acc);
		if (acc < 0)
			return -1;
		done += SUM_CHUNK;
	}
	/* The rest: under SUM_CHUNK bytes, a multiple of 4 (the mask tells the verifier). */
	__u32 tail = (len - done) & (SUM_CHUNK - 4);

	if (tail) {
		if (bpf_skb_load_bytes(skb, off + done, s->buf, tail) < 0)
			return -1;
		acc = bpf_csum_diff(0, 0, (__be32 *)s->buf, tail, (__wsum)acc);
		if (acc < 0)
			return -1;
	}
	__u32 c = (__u32)acc;

	c = (c & 0xFFFF) + (c >> 16);
	c = (c & 0xFFFF) + (c >> 16);
	/* csum_diff sums the words as the CPU loads them; a byte swap gives network order. */
	return bpf_ntohs((__u16)c);
}

static __always_inline void count_translated(enum clat_counter packets, __u32 bytes,
					     __u32 header_bytes, __u32 gso_segs)
{
	/* A super-packet counts as its segments, each with its own headers on the wire. */
	__u32 segs = gso_segs > 1 ? gso_segs : 1;

	count(packets, segs);
	count(packets + 1, bytes + (__u64)(segs - 1) * header_bytes);
}

static __always_inline int set_ethertype(struct __sk_buff *skb, __u32 l3, __u16 proto)
{
	__be16 type = bpf_htons(proto);

	if (l3 < 2)
		return 0;
	return bpf_skb_store_bytes(skb, l3 - 2, &type, 2, 0);
}

/* ---- RFC 7915 §4: IPv4 -> IPv6 ------------------------------------------------------------ */

static __always_inline int xlat46(struct __sk_buff *skb, const struct clat_config *cfg, __u32 l3)
{
	struct ip4 ip;
	struct ip6 out = {};
	__u8 l4[20];
	__u32 n = skb->len - l3;

	if (skb->len < l3 || bpf_skb_load_bytes(skb, l3, &ip, sizeof(ip)) < 0)
		return pass(PASS_LENGTH);
	if (ip.vihl >> 4 != 4)
		return pass(PASS_NOT_IP);
	if (ip.vihl != 0x45)
		return pass(PASS_IPV4_HEADER);
	if (bpf_ntohs(ip.total) != n)
		return pass(PASS_LENGTH);
	/* RFC 1812 §5.2.2: a router verifies the header checksum; the core drops bad ones. */
	if (sum_be16((const __u8 *)&ip, sizeof(ip)) % MOD16)
		return pass(PASS_IPV4_HEADER);
	__u16 frag = bpf_ntohs(ip.frag);

	if (frag & IP_MF_OFFSET)
		return pass(PASS_FRAGMENT);
	/* Anti-spoofing: only the CLAT's own address is translated (the core's CLAT mode). */
	if (differ(ip.addrs, cfg->clat_v4, 4))
		return pass(PASS_SOURCE);
	__u32 dst4 = load_be32(ip.addrs + 4);

	/* To the CLAT's own address the EAM hairpins (RFC 7757 §4.2); denied ones have no form. */
	if (dst4 == load_be32(cfg->clat_v4) || denied4(dst4, cfg))
		return pass(PASS_DESTINATION);
	if (ip.ttl <= 1)
		return pass(PASS_HOP_LIMIT);

	__u8 proto = ip.proto;
	/* old: the transport checksum, read in each branch at its constant offset (a variable
	 * stack offset is refused by the verifier without CAP_PERFMON). */
	__u32 l4len, csum_at;
	__u16 old;

	if (proto == IPPROTO_TCP) {
		if (n < 40 || bpf_skb_load_bytes(skb, l3 + 20, l4, 20) < 0)
			return pass(PASS_LENGTH);
		l4len = (l4[12] >> 4) << 2;
		csum_at = 16;
		old = ((__u16)l4[16] << 8) | l4[17];
		barrier_var(old);
	} else if (proto == IPPROTO_UDP) {
		if (cfg->flags & CLAT_F_UDP46_USERSPACE)
			return pass(PASS_UDP_USERSPACE);
		if (n < 28 || bpf_skb_load_bytes(skb, l3 + 20, l4, 8) < 0)
			return pass(PASS_LENGTH);
		if (!l4[6] && !l4[7])
			return pass(PASS_UDP_CHECKSUM_ZERO);
		l4len = 8;
		csum_at = 6;
		old = ((__u16)l4[6] << 8) | l4[7];
		barrier_var(old);
	} else if (proto == IPPROTO_ICMP) {
		if (n < 28 || bpf_skb_load_bytes(skb, l3 + 20, l4, 8) < 0)
			return pass(PASS_LENGTH);
		if (l4[0] != ICMP_ECHO_REQUEST && l4[0] != ICMP_ECHO_REPLY)
			return pass(PASS_ICMP);
		l4len = 8;
		csum_at = 2;
		old = ((__u16)l4[2] << 8) | l4[3];
		barrier_var(old);
	} else {
		return pass(PASS_PROTOCOL);
	}

	/* RFC 7915 §4.1 / RFC 8021: DF set and bigger than the IPv6 next hop: Fragmentation
	 * Needed; DF clear and bigger than the lowest IPv6 MTU: fragmented. Both are userspace's.
	 * A super-packet is judged by its segments. */
	__u32 seg6 = n + 20;

	if (skb->gso_size) {
		if (proto == IPPROTO_ICMP || l4len < (proto == IPPROTO_TCP ? 20 : 8) ||
		    n <= 20 + l4len)
			return pass(PASS_GSO);
		__u32 payload = n - 20 - l4len;

		seg6 = 40 + l4len + (payload < skb->gso_size ? payload : skb->gso_size);
	}
	/* Both loaded before the choice: a select between two map-value pointers is pointer
	 * arithmetic the verifier refuses without CAP_PERFMON (the capabilities-mode sidecar). */
	__u32 mtu6 = cfg->ipv6_mtu, lowest6 = cfg->lowest_ipv6_mtu;

	barrier_var(mtu6);
	barrier_var(lowest6);
	if (seg6 > (frag & IP_DF ? mtu6 : lowest6))
		return pass(PASS_SIZE);

	/* RFC 6052 + RFC 7757: source through the EAM entry, destination into the prefix. */
	__builtin_memcpy(out.addrs, cfg->clat_v6, 16);
	embed(out.addrs + 16, dst4, cfg);
	__u64 delta = (sum_be16(out.addrs, 32) + MOD16 - sum_be16(ip.addrs, 8) % MOD16) % MOD16;
	__u8 icmp_head[4] = {}; /* zeroed: uninitialised stack is unreadable without CAP_PERFMON */

	if (proto == IPPROTO_ICMP) {
		/* RFC 7915 §4.2: type 8/0 -> 128/129; the checksum gains the pseudo-header. */
		__u32 msg = n - 20;

		if (msg & 3 || msg > ICMP_MAX_SUMMED)
			return pass(PASS_ICMP);
		__s64 s = sum_packet(skb, l3 + 20, msg);

		if (s < 0)
			return pass(PASS_HELPER_ERROR);
		if (s % MOD16)
			return pass(PASS_ICMP);
		__u8 t6 = l4[0] == ICMP_ECHO_REQUEST ? ICMP6_ECHO_REQUEST : ICMP6_ECHO_REPLY;
		__u16 c = finish(MOD16 - old + ((__u64)(t6 - l4[0]) << 8) +
				 sum_be16(out.addrs, 32) + IPPROTO_ICMPV6_ + msg);

		icmp_head[0] = t6;
		icmp_head[1] = l4[1];
		icmp_head[2] = c >> 8;
		icmp_head[3] = c & 0xFF;
	} else if (proto == IPPROTO_TCP && old == 0xFFFF && delta == 0) {
		/* The core's RFC 1624 update keeps 0xFFFF here, the kernel's gives 0x0000. */
		return pass(PASS_CHECKSUM_EDGE);
	}

	/* RFC 7915 §4.1: traffic class = TOS, flow label 0, hop limit = TTL - 1. */
	out.first = bpf_htonl(0x60000000 | ((__u32)ip.tos << 20));
	out.plen = bpf_htons(n - 20);
	out.nh = proto == IPPROTO_ICMP ? IPPROTO_ICMPV6_ : proto;
	out.hop = ip.ttl - 1;

	/* From here on the packet changes: a failure drops it. The GSO type follows the
	 * protocol; gso_size is kept (the IPv4 route's MTU leaves room for the 20 bytes). */
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0) < 0)
		return pass(PASS_HELPER_ERROR);
	if (bpf_skb_store_bytes(skb, l3, &out, sizeof(out), 0) < 0 ||
	    set_ethertype(skb, l3, ETH_P_IPV6) < 0)
		goto drop;
	if (proto == IPPROTO_ICMP) {
		if (bpf_skb_store_bytes(skb, l3 + 40, icmp_head, 4, 0) < 0)
			goto drop;
	} else {
		/* RFC 7915 §4.5: the pseudo-header's addresses changed (RFC 1624); right for
		 * full and for partial (offloaded) checksums. A UDP result 0 is sent as 0xFFFF. */
		__s64 diff = bpf_csum_diff((__be32 *)ip.addrs, 8, (__be32 *)out.addrs, 32, 0);

		if (diff < 0 ||
		    bpf_l4_csum_replace(skb, l3 + 40 + csum_at, 0, diff,
					BPF_F_PSEUDO_HDR |
						(proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0)) < 0)
			goto drop;
	}
	count_translated(XLAT46_PACKETS, n + 20, 40 + l4len, skb->gso_segs);
	return bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS);
drop:
	count(DROP_HELPER_ERROR, 1);
	return TC_ACT_SHOT;
}

/* ---- RFC 7915 §5: IPv6 -> IPv4 ------------------------------------------------------------ */

static __always_inline int xlat64(struct __sk_buff *skb, const struct clat_config *cfg, __u32 l3)
{
	struct ip6 ip;
	struct ip4 out = {};
	__u8 l4[20];
	__u32 n = skb->len - l3;

	if (skb->len < l3 || bpf_skb_load_bytes(skb, l3, &ip, sizeof(ip)) < 0)
		return pass(PASS_LENGTH);
	if (bpf_ntohl(ip.first) >> 28 != 6)
		return pass(PASS_NOT_IP);
	__u32 plen = bpf_ntohs(ip.plen);

	if (plen + 40 != n)
		return pass(PASS_LENGTH);
	__u8 proto = ip.nh;

	if (proto == 44)
		return pass(PASS_FRAGMENT);
	if (proto == 0 || proto == 43 || proto == 60 || proto == 51 || proto == 135 ||
	    proto == 139 || proto == 140)
		return pass(PASS_EXTENSION_HEADER);
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMPV6_)
		return pass(PASS_PROTOCOL);
	/* Anti-spoofing: only to the CLAT's address (its EAM entry), only from the prefix. */
	if (differ(ip.addrs + 16, cfg->clat_v6, 16))
		return pass(PASS_DESTINATION);
	if (!differ(ip.addrs, cfg->clat_v6, 16))
		return pass(PASS_SOURCE);
	__s64 src4 = extract(ip.addrs, cfg);

	if (src4 < 0 || denied4(src4, cfg) || src4 == load_be32(cfg->clat_v4))
		return pass(PASS_SOURCE);
	if (ip.hop <= 1)
		return pass(PASS_HOP_LIMIT);

	/* old: the transport checksum, read in each branch at its constant offset (a variable
	 * stack offset is refused by the verifier without CAP_PERFMON). */
	__u32 l4len, csum_at;
	__u16 old;

	if (proto == IPPROTO_TCP) {
		if (n < 60 || bpf_skb_load_bytes(skb, l3 + 40, l4, 20) < 0)
			return pass(PASS_LENGTH);
		l4len = (l4[12] >> 4) << 2;
		csum_at = 16;
		old = ((__u16)l4[16] << 8) | l4[17];
		barrier_var(old);
	} else if (proto == IPPROTO_UDP) {
		if (cfg->flags & CLAT_F_UDP64_USERSPACE)
			return pass(PASS_UDP_USERSPACE);
		if (n < 48 || bpf_skb_load_bytes(skb, l3 + 40, l4, 8) < 0)
			return pass(PASS_LENGTH);
		if (!l4[6] && !l4[7])
			return pass(PASS_UDP_CHECKSUM_ZERO);
		l4len = 8;
		csum_at = 6;
		old = ((__u16)l4[6] << 8) | l4[7];
		barrier_var(old);
	} else {
		if (n < 48 || bpf_skb_load_bytes(skb, l3 + 40, l4, 8) < 0)
			return pass(PASS_LENGTH);
		if (l4[0] != ICMP6_ECHO_REQUEST && l4[0] != ICMP6_ECHO_REPLY)
			return pass(PASS_ICMP);
		l4len = 8;
		csum_at = 2;
		old = ((__u16)l4[2] << 8) | l4[3];
		barrier_var(old);
	}

	/* RFC 7915 §5.1: DF (and ID 0, RFC 6864) above df_limit, else DF clear and a fresh ID.
	 * Bigger than the IPv4 next hop: Packet Too Big or fragments, userspace's. A super-packet
	 * is judged by its segments; the kernel numbers their IDs from the one given here. */
	__u32 total = n - 20;
	int df;

	if (skb->gso_size) {
		if (proto == IPPROTO_ICMPV6_ || l4len < (proto == IPPROTO_TCP ? 20 : 8) ||
		    plen <= l4len || total > 0xFFFF)
			return pass(PASS_GSO);
		__u32 gso = skb->gso_size;
		__u32 payload = plen - l4len;
		__u32 full = 20 + l4len + gso;
		__u32 rest = payload % gso;
		__u32 last = 20 + l4len + (rest ? rest : gso);

		if (20 + l4len + (payload < gso ? payload : gso) > cfg->ipv4_mtu)
			return pass(PASS_SIZE);
		if (full <= cfg->df_limit || (payload <= gso && total <= cfg->df_limit))
			df = 0;
		else if (payload <= gso || last > cfg->df_limit || cfg->flags & CLAT_F_SUPERPACKET_DF)
			df = 1;
		else
			return pass(PASS_GSO); /* DF on the full segments, not on the last one */
	} else {
		if (total > cfg->ipv4_mtu)
			return pass(PASS_SIZE);
		df = total > cfg->df_limit;
	}

	__u8 icmp_head[4] = {}; /* zeroed: uninitialised stack is unreadable without CAP_PERFMON */

	out.addrs[0] = src4 >> 24;
	out.addrs[1] = src4 >> 16;
	out.addrs[2] = src4 >> 8;
	out.addrs[3] = src4;
	__builtin_memcpy(out.addrs + 4, cfg->clat_v4, 4);
	__u64 pair6 = sum_be16(ip.addrs, 32);
	__u64 delta = (sum_be16(out.addrs, 8) + MOD16 - pair6 % MOD16) % MOD16;

	if (proto == IPPROTO_ICMPV6_) {
		/* RFC 7915 §5.2: type 128/129 -> 8/0; the checksum loses the pseudo-header. */
		if (plen & 3 || plen > ICMP_MAX_SUMMED)
			return pass(PASS_ICMP);
		__u64 pseudo = (pair6 + IPPROTO_ICMPV6_ + plen) % MOD16;
		__s64 s = sum_packet(skb, l3 + 40, plen);

		if (s < 0)
			return pass(PASS_HELPER_ERROR);
		if ((s + pseudo) % MOD16)
			return pass(PASS_ICMP);
		__u8 t4 = l4[0] == ICMP6_ECHO_REQUEST ? ICMP_ECHO_REQUEST : ICMP_ECHO_REPLY;
		__u16 c = finish(MOD16 - old + ((__u64)t4 << 8) + (MOD16 - ((__u64)l4[0] << 8)) +
				 (MOD16 - pseudo));

		/* A residue of 0: a sum of 0xFFFF (field 0) or an all-zero Echo Reply (field 0xFFFF,
		 * RFC 1071); telling them apart needs the whole message: userspace decides. */
		if (!c)
			return pass(PASS_CHECKSUM_EDGE);
		icmp_head[0] = t4;
		icmp_head[1] = l4[1];
		icmp_head[2] = c >> 8;
		icmp_head[3] = c & 0xFF;
	} else if (proto == IPPROTO_TCP && old == 0xFFFF && delta == 0) {
		return pass(PASS_CHECKSUM_EDGE);
	}

	/* RFC 7915 §5.1: TOS = traffic class, TTL = hop limit - 1, no options. */
	__u32 word0 = bpf_ntohl(ip.first);

	out.vihl = 0x45;
	out.tos = (word0 >> 20) & 0xFF;
	out.total = bpf_htons(total);
	out.ident = df ? 0 : bpf_htons(bpf_get_prandom_u32() & 0xFFFF);
	out.frag = df ? bpf_htons(IP_DF) : 0;
	out.ttl = ip.hop - 1;
	out.proto = proto == IPPROTO_ICMPV6_ ? IPPROTO_ICMP : proto;
	out.check = bpf_htons(finish(sum_be16((const __u8 *)&out, sizeof(out))));

	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) < 0)
		return pass(PASS_HELPER_ERROR);
	if (bpf_skb_store_bytes(skb, l3, &out, sizeof(out), 0) < 0 ||
	    set_ethertype(skb, l3, ETH_P_IP) < 0)
		goto drop;
	if (proto == IPPROTO_ICMPV6_) {
		if (bpf_skb_store_bytes(skb, l3 + 20, icmp_head, 4, 0) < 0)
			goto drop;
	} else {
		/* RFC 7915 §5.5: the pseudo-header's addresses changed (RFC 1624). */
		__s64 diff = bpf_csum_diff((__be32 *)ip.addrs, 32, (__be32 *)out.addrs, 8, 0);

		if (diff < 0 ||
		    bpf_l4_csum_replace(skb, l3 + 20 + csum_at, 0, diff,
					BPF_F_PSEUDO_HDR |
						(proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0)) < 0)
			goto drop;
	}
	count_translated(XLAT64_PACKETS, total, 20 + l4len, skb->gso_segs);
	return bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS);
drop:
	count(DROP_HELPER_ERROR, 1);
	return TC_ACT_SHOT;
}

SEC("tc")
int clat_egress(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u32 *active = bpf_map_lookup_elem(&clat_active, &key);

	if (!active)
		return pass(PASS_DISABLED);
	key = *active & 1;
	const struct clat_config *cfg = bpf_map_lookup_elem(&clat_config, &key);

	if (!cfg || !cfg->enabled)
		return pass(PASS_DISABLED);
	__u32 l3 = cfg->l3_offset;

	if (l3 > 64)
		return pass(PASS_DISABLED);
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return xlat46(skb, cfg, l3);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return xlat64(skb, cfg, l3);
	return pass(PASS_NOT_IP);
}
