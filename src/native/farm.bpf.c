// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * holdfast farm filter: tc (clsact) ingress program.
 *
 * Every node of a farm receives every packet sent to the VIP. This program keeps only the packets of the
 * buckets this node owns. Decision, in order (mirrored by src/farm/filter/decision.ts, the reference):
 *   1. not IPv4/IPv6, or destination not a VIP (no default rule)       -> pass (TC_ACT_OK), untouched
 *   2. ICMP errors (v4 types 3,4,11,12; v6 types 1-4) and IPv6 neighbour
 *      discovery (133-137), unfragmented                                -> pass on every node
 *   3. bucket = jhash(key, len, seed) >> 20, the top 12 bits (= nftables `jhash ... mod 4096 seed S`), with the key
 *      - fragments (v4 MF or offset; v6 fragment header) and non-TCP/UDP: client address
 *      - TCP/UDP: the mode of the (proto, dport) rule, else the VIP's default mode
 *   4. owned bucket (and, with FARM_F_LEASE, the lease not expired: otherwise the bucket counts as
 *      foreign, see farm_config.lease_until_ns): pass, except
 *      - (FARM_F_STRICT_TCP) TCP that does not open a connection (not SYN-only) and has no local socket -> drop
 *        (another node's flow: no RST from us). The lookup is made only when the bucket is contested: its
 *        farm_owned entry lacks FARM_OWNED_SOLE (the loader sets SOLE where no other live node publishes that it
 *        may hold connections of the bucket); in a SOLE bucket mid-flow TCP passes at once
 *      - (FARM_F_SYN_LISTENER) a SYN-only packet for which no local socket exists, listener included -> drop
 *        (the app is dead: no RST, the client retransmits and lands on the next owner)
 *   5. foreign bucket: pass when TCP, not SYN-only, and a local socket has the flow
 *      (bpf_skc_lookup_tcp: established connections survive a bucket move), else drop. The lookup is
 *      made only when the bucket's farm_mayhold flag is set (or for a SYN+ACK): otherwise drop at once
 *   6. a passed TCP packet with SYN set (a connection accepted, or one opened from the VIP) sets its
 *      bucket's farm_mayhold flag (written only when still 0; the loader clears flags of foreign buckets
 *      with no local socket left)
 * Passed VIP packets get pkt_type = PACKET_HOST: they arrive on a shared (flooded or multicast) MAC and
 * the stack would otherwise discard them as OTHERHOST/MULTICAST.
 *
 * Fragments decision: all fragments of a datagram (first included) hash on the client address only,
 * whatever the rule, because only the first fragment carries ports. So a fragmented datagram lands whole on
 * one node; with an address+port rule a flow whose datagrams are sometimes fragmented may be split.
 * IPv6 extension headers other than the fragment header are not walked: such packets hash on the address.
 *
 * Ownership is double-buffered: farm_owned holds two tables and farm_active (one u32) says which one is
 * live. The loader writes the inactive table, then flips the index: one aligned 32-bit store, so a packet
 * sees either the whole old table or the whole new one (FARM_OWNED_SOLE bits included: a bucket becomes
 * uncontested, or contested again, with the same flip).
 *
 * Costs (BPF_PROG_TEST_RUN on this machine): ~80 ns per packet for the decision, +~20 ns for each
 * bpf_skc_lookup_tcp. Mid-flow packets of an uncontested owned bucket and of a foreign bucket whose may-hold
 * flag is clear make no lookup; a SYN to an owned bucket makes one (FARM_F_SYN_LISTENER).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <linux/if_packet.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "farm_shared.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct farm_rule_key);
	__type(value, struct farm_rule);
} farm_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct farm_owned);
} farm_owned SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} farm_active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct farm_config);
} farm_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FARM_BUCKETS);
	__type(key, __u32);
	__type(value, struct farm_mayhold);
} farm_mayhold SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FARM_BUCKETS);
	__type(key, __u32);
	__type(value, struct farm_bucket_stats);
} farm_bstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct farm_global_stats);
} farm_gstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct in6_addr);
	__type(value, struct farm_nd);
} farm_nd SEC(".maps");

#define ETH_HLEN_ 14
#define IPV6_FRAG_HDR 44
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

static __always_inline __u32 rol32(__u32 w, __u32 s)
{
	return (w << s) | (w >> (32 - s));
}

/*
 * The kernel's jhash() (include/linux/jhash.h) for keys of 4, 8, 16 or 20 bytes given as 32-bit words in
 * memory order (so read exactly as the kernel's __get_unaligned_cpu32 reads them).
 */
static __always_inline __u32 farm_jhash(const __u32 *k, __u32 length, __u32 seed)
{
	__u32 a, b, c;

	a = b = c = 0xdeadbeef + length + seed;
	if (length > 12) {
		a += k[0];
		b += k[1];
		c += k[2];
		a -= c; a ^= rol32(c, 4);  c += b;
		b -= a; b ^= rol32(a, 6);  a += c;
		c -= b; c ^= rol32(b, 8);  b += a;
		a -= c; a ^= rol32(c, 16); c += b;
		b -= a; b ^= rol32(a, 19); a += c;
		c -= b; c ^= rol32(b, 4);  b += a;
		k += 3;
		length -= 12;
	}
	if (length == 8)
		b += k[1];
	a += k[0];
	c ^= b; c -= rol32(b, 14);
	a ^= c; a -= rol32(c, 11);
	b ^= a; b -= rol32(a, 25);
	c ^= b; c -= rol32(b, 16);
	a ^= c; a -= rol32(c, 4);
	b ^= a; b -= rol32(a, 14);
	c ^= b; c -= rol32(b, 24);
	return c;
}

static __always_inline void count_global(int field)
{
	__u32 zero = 0;
	struct farm_global_stats *g = bpf_map_lookup_elem(&farm_gstats, &zero);

	if (!g)
		return;
	switch (field) {
	case 0: g->not_vip++; break;
	case 1: g->broadcast++; break;
	case 2: g->kept_socket++; break;
	case 3: g->dropped_orphan++; break;
	case 4: g->lease_expired++; break;
	case 5: g->dropped_nolistener++; break;
	}
}

static __always_inline int pass_host(struct __sk_buff *skb)
{
	if (skb->pkt_type != PACKET_HOST)
		bpf_skb_change_type(skb, PACKET_HOST);
	return TC_ACT_OK;
}

/* Does a local socket have this TCP flow (listeners == 0), or would one take it (listeners == 1: a listener
 * counts)? */
static __always_inline int has_socket(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tlen, int listeners)
{
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, t, tlen, BPF_F_CURRENT_NETNS, 0);
	int found = 0;

	if (sk) {
		found = listeners || sk->state != BPF_TCP_LISTEN;
		bpf_sk_release(sk);
	}
	return found;
}

SEC("tc")
int farm_ingress(struct __sk_buff *skb)
{
	struct farm_rule_key rk = {};
	struct bpf_sock_tuple tuple = {};
	__u32 key[5] = {};
	__u32 klen, tlen = 0, zero = 0, l4off, mode;
	__u16 ports[2] = {};
	__u8 l4proto, tcp_flags = 0;
	int frag, is_v6;
	__be16 h_proto;

	if (bpf_skb_load_bytes(skb, 12, &h_proto, sizeof(h_proto)) < 0)
		goto not_vip;

	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN_, &ip, sizeof(ip)) < 0 || ip.ihl < 5)
			goto not_vip;
		is_v6 = 0;
		rk.family = 4;
		__builtin_memcpy(rk.addr, &ip.daddr, 4);
		key[0] = ip.saddr;
		klen = 4;
		l4proto = ip.protocol;
		frag = (ip.frag_off & bpf_htons(0x3fff)) != 0;
		l4off = ETH_HLEN_ + ip.ihl * 4;
		tuple.ipv4.saddr = ip.saddr;
		tuple.ipv4.daddr = ip.daddr;
		tlen = sizeof(tuple.ipv4);
	} else if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN_, &ip6, sizeof(ip6)) < 0)
			goto not_vip;
		is_v6 = 1;
		rk.family = 6;
		__builtin_memcpy(rk.addr, &ip6.daddr, 16);
		__builtin_memcpy(key, &ip6.saddr, 16);
		klen = 16;
		l4proto = ip6.nexthdr;
		frag = l4proto == IPV6_FRAG_HDR;
		l4off = ETH_HLEN_ + sizeof(ip6);
		__builtin_memcpy(tuple.ipv6.saddr, &ip6.saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, &ip6.daddr, 16);
		tlen = sizeof(tuple.ipv6);
	} else {
		goto not_vip;
	}

	/* The VIP's default rule: its absence means "not a VIP". */
	struct farm_rule *def = bpf_map_lookup_elem(&farm_rules, &rk);
	if (!def)
		goto not_vip;
	mode = FARM_MODE_ADDR;

	if (!frag) {
		if ((!is_v6 && l4proto == IPPROTO_ICMP) || (is_v6 && l4proto == IPPROTO_ICMPV6)) {
			__u8 type;

			if (bpf_skb_load_bytes(skb, l4off, &type, 1) == 0) {
				int broadcast = is_v6 ? ((type >= 1 && type <= 4) || (type >= 133 && type <= 137))
						      : (type == 3 || type == 4 || type == 11 || type == 12);
				if (broadcast) {
					count_global(1);
					return pass_host(skb);
				}
			}
		} else if (l4proto == IPPROTO_TCP || l4proto == IPPROTO_UDP) {
			if (bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)) == 0) {
				struct farm_rule *r;

				rk.proto = l4proto;
				rk.port = ports[1];
				r = bpf_map_lookup_elem(&farm_rules, &rk);
				mode = r ? r->mode : def->mode;
				if (l4proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, l4off + 13, &tcp_flags, 1) < 0)
					tcp_flags = 0;
			}
		}
	}

	if (mode == FARM_MODE_ADDR_PORT) {
		key[klen / 4] = ports[0];
		klen += 4;
	}

	struct farm_config *cfg = bpf_map_lookup_elem(&farm_config, &zero);
	__u32 seed = cfg ? cfg->seed : 0;
	__u32 flags = cfg ? cfg->flags : 0;
	__u32 bucket = farm_jhash(key, klen, seed) >> (32 - FARM_BUCKET_BITS);

	__u32 *active = bpf_map_lookup_elem(&farm_active, &zero);
	__u32 table = active ? (*active & 1) : 0;
	struct farm_owned *own = bpf_map_lookup_elem(&farm_owned, &table);
	__u8 ownv = own ? own->owned[bucket & (FARM_BUCKETS - 1)] : 0;
	int owned = (ownv & FARM_OWNED) != 0;
	struct farm_mayhold *mh = bpf_map_lookup_elem(&farm_mayhold, &bucket);
	__u32 *may = mh ? &mh->flag : 0;

	/* Fail closed when the holdfast process stopped renewing its lease (dead or frozen). The coarse clock
	 * (CLOCK_MONOTONIC at the last tick) costs ~2 ns where bpf_ktime_get_ns costs ~28 ns. */
	if (owned && (flags & FARM_F_LEASE) && cfg && bpf_ktime_get_coarse_ns() >= cfg->lease_until_ns) {
		count_global(4);
		owned = 0;
	}

	/* TCP that does not open a connection: it may belong to a flow a node already has a socket for. */
	int tcp = !frag && l4proto == IPPROTO_TCP;
	int synonly = tcp && (tcp_flags & TCP_FLAG_SYN) && !(tcp_flags & TCP_FLAG_ACK);
	int midflow = tcp && !synonly;
	int verdict;

	if (tcp) {
		if (is_v6) {
			tuple.ipv6.sport = ports[0];
			tuple.ipv6.dport = ports[1];
		} else {
			tuple.ipv4.sport = ports[0];
			tuple.ipv4.dport = ports[1];
		}
	}

	if (owned) {
		verdict = TC_ACT_OK;
		/* Contested bucket (another live node may hold flows here): its mid-flow packets need the lookup. */
		if (midflow && (flags & FARM_F_STRICT_TCP) && !(ownv & FARM_OWNED_SOLE) && !has_socket(skb, &tuple, tlen, 0)) {
			count_global(3);
			verdict = TC_ACT_SHOT;
		}
		/* A SYN nobody here would accept: drop rather than RST (one lookup per new connection). */
		if (synonly && (flags & FARM_F_SYN_LISTENER) && !has_socket(skb, &tuple, tlen, 1)) {
			count_global(5);
			verdict = TC_ACT_SHOT;
		}
	} else {
		verdict = TC_ACT_SHOT;
		/* Without the flag no local connection can exist in this bucket: no lookup. A SYN+ACK (reply to a
		 * connection this node opened from the VIP) is rare and always looked up. */
		if (midflow && ((may && *may) || (tcp_flags & TCP_FLAG_SYN)) && has_socket(skb, &tuple, tlen, 0)) {
			count_global(2);
			verdict = TC_ACT_OK;
		}
	}
	/* A connection may now live here: flag the bucket (one store per connection, none per packet). */
	if (verdict == TC_ACT_OK && !frag && l4proto == IPPROTO_TCP && (tcp_flags & TCP_FLAG_SYN) && may && !*may)
		*may = 1;

	struct farm_bucket_stats *bs = bpf_map_lookup_elem(&farm_bstats, &bucket);
	if (bs) {
		if (verdict == TC_ACT_OK)
			bs->accepted++;
		else
			bs->dropped++;
	}
	if (verdict == TC_ACT_OK)
		return pass_host(skb);
	return TC_ACT_SHOT;

not_vip:
	count_global(0);
	return TC_ACT_OK;
}

/*
 * tc egress: neighbour discovery for IPv6 VIPs. A neighbour advertisement whose target is a VIP, or a
 * neighbour solicitation sent from a VIP, gets the VIP's shared MAC in its link-layer address option (the
 * first option, where Linux puts its only one), with the ICMPv6 checksum fixed incrementally. Everything
 * else passes untouched.
 */
#define ND_OPT_OFF (ETH_HLEN_ + 40 + 8 + 16) /* after the IPv6 header, the ICMPv6 header and the target */

SEC("tc")
int farm_egress(struct __sk_buff *skb)
{
	struct ipv6hdr ip6;
	__be16 h_proto;
	__u8 type;
	struct farm_nd *nd;
	__be32 old[2], new[2];

	if (bpf_skb_load_bytes(skb, 12, &h_proto, sizeof(h_proto)) < 0 || h_proto != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN_, &ip6, sizeof(ip6)) < 0 || ip6.nexthdr != IPPROTO_ICMPV6)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN_ + 40, &type, 1) < 0)
		return TC_ACT_OK;
	if (type == 136) { /* neighbour advertisement: is the target a VIP? */
		struct in6_addr target;

		if (bpf_skb_load_bytes(skb, ETH_HLEN_ + 40 + 8, &target, sizeof(target)) < 0)
			return TC_ACT_OK;
		nd = bpf_map_lookup_elem(&farm_nd, &target);
	} else if (type == 135) { /* neighbour solicitation: sent from a VIP? */
		nd = bpf_map_lookup_elem(&farm_nd, &ip6.saddr);
	} else {
		return TC_ACT_OK;
	}
	if (!nd)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ND_OPT_OFF, old, sizeof(old)) < 0)
		return TC_ACT_OK;
	/* option type 2 (target link-layer address) in an NA, 1 (source) in an NS; length 1 (8 bytes) */
	__u8 *o = (__u8 *)old;
	if (o[0] != (type == 136 ? 2 : 1) || o[1] != 1)
		return TC_ACT_OK;
	__u8 *n = (__u8 *)new;
	n[0] = o[0];
	n[1] = o[1];
	__builtin_memcpy(n + 2, nd->mac, 6);
	__s64 diff = bpf_csum_diff(old, sizeof(old), new, sizeof(new), 0);
	if (diff < 0)
		return TC_ACT_OK;
	if (bpf_skb_store_bytes(skb, ND_OPT_OFF, new, sizeof(new), 0) < 0)
		return TC_ACT_OK;
	bpf_l4_csum_replace(skb, ETH_HLEN_ + 40 + 2, 0, (__u32)diff, 0);
	return TC_ACT_OK;
}
