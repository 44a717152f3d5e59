/* SPDX-License-Identifier: MIT */
/*
 * holdfast farm filter: map layouts shared by the tc program (farm.bpf.c) and the loader
 * (src/native/libbpf.ts + src/farm/filter/ebpf.ts, which mirror these structs byte for byte).
 * Change a struct here and you must change the TS encoders and rebuild farm.bpf.o (scripts/build-bpf.sh).
 */
#ifndef HOLDFAST_FARM_SHARED_H
#define HOLDFAST_FARM_SHARED_H

#include <linux/types.h>

/* Buckets: the top FARM_BUCKET_BITS bits of the 32-bit jhash (= nftables `jhash ... mod 4096`). 4096 rather than
 * SafeKit's 256 keeps each node's share within a few percent of its weight (src/core/buckets.ts, BUCKET_COUNT). */
#define FARM_BUCKET_BITS 12
#define FARM_BUCKETS (1u << FARM_BUCKET_BITS)

/* How a rule identifies a client (the hash key; see src/core/buckets.ts for the exact layout). */
#define FARM_MODE_ADDR 1      /* client address: session affinity */
#define FARM_MODE_ADDR_PORT 2 /* client address and source port: best spread */

/*
 * Key of the `farm_rules` hash map. Every VIP has one default entry (proto 0, port 0) whose mode applies
 * to packets that match no port rule (and to fragments and non-TCP/UDP protocols, which always use
 * FARM_MODE_ADDR). Port rules: proto IPPROTO_TCP or IPPROTO_UDP, port = destination port.
 * A packet whose destination has no default entry is not VIP traffic and passes untouched.
 */
struct farm_rule_key {
	__u8 family;   /* 4 or 6 */
	__u8 proto;    /* 0 (VIP default), 6 (TCP), 17 (UDP) */
	__be16 port;   /* destination port, network order; 0 with proto 0 */
	__u8 addr[16]; /* the VIP in network order; IPv4 uses the first 4 bytes, the rest is zero */
};

struct farm_rule {
	__u32 mode; /* FARM_MODE_* */
};

/*
 * One ownership table: owned[b] & FARM_OWNED when this node accepts new flows of bucket b. With FARM_OWNED, the bit
 * FARM_OWNED_SOLE says that no other live node may hold TCP connections of bucket b (the loader derives it from
 * the peers' published may-hold sets, see src/core/farm.ts ContestTracker): the FARM_F_STRICT_TCP socket lookup is
 * then skipped for the bucket's mid-flow packets. A table of plain 1s (no SOLE bit) keeps every owned bucket strict.
 * The bit is written with the table, so it flips atomically with the ownership.
 */
#define FARM_OWNED 1
#define FARM_OWNED_SOLE 2
struct farm_owned {
	__u8 owned[FARM_BUCKETS];
};

/*
 * The `farm_mayhold` array (FARM_BUCKETS entries, one per bucket, so that the loader can clear one bucket without
 * racing the program's stores to the others): flag != 0 when this node may hold TCP connections of bucket b.
 * The program sets it (only when still 0) when it passes a packet with SYN set in bucket b (a connection it
 * accepts, or one it opened from the VIP whose SYN+ACK came back); the loader seeds it at start from the local
 * TCP sockets on a VIP (a daemon restarted under a serving app), and clears it periodically in foreign buckets
 * where no local socket is left (EbpfBackend.pruneMayHold). A foreign mid-flow TCP packet gets the socket
 * lookup only when its bucket's flag is set (a foreign SYN+ACK always gets it): no local connection can exist
 * in a bucket where this node never passed a SYN.
 */
struct farm_mayhold {
	__u32 flag;
};

/* Flags in farm_config.flags. */
/* In an owned bucket, drop TCP packets that do not open a connection and belong to no local socket
 * (mid-flow packets of a flow another node still serves) instead of letting the stack answer with RST. */
#define FARM_F_STRICT_TCP 1
/* The ownership table holds only while bpf_ktime_get_coarse_ns() < lease_until_ns: the holdfast process renews the
 * lease every leaseMs/4, so when it dies or freezes every bucket turns foreign within leaseMs (fail closed). */
#define FARM_F_LEASE 2
/* In an owned bucket, drop a SYN (without ACK) for which no local socket, listener included, exists
 * (bpf_skc_lookup_tcp on SYN-only packets only) instead of letting the stack answer RST: while the app is dead
 * and the lease still holds, the client retransmits its SYN and lands on the new owner. */
#define FARM_F_SYN_LISTENER 4

struct farm_config {
	__u32 seed;           /* jhash seed, same as nftables' `seed` */
	__u32 flags;          /* FARM_F_* */
	__u64 lease_until_ns; /* CLOCK_MONOTONIC ns; used with FARM_F_LEASE */
};

/* Per bucket, per CPU (farm_bstats). */
struct farm_bucket_stats {
	__u64 accepted; /* VIP packets of this bucket passed (owned, or kept for an existing local socket) */
	__u64 dropped;  /* VIP packets of this bucket dropped */
};

/* Whole-program counters, per CPU (farm_gstats, one entry). */
struct farm_global_stats {
	__u64 not_vip;        /* passed untouched: not IPv4/IPv6 or not to a VIP */
	__u64 broadcast;      /* ICMP errors and IPv6 neighbour discovery to a VIP: passed on every node */
	__u64 kept_socket;    /* foreign bucket, passed because a local socket has the flow */
	__u64 dropped_orphan; /* owned bucket, mid-flow TCP with no local socket, dropped (FARM_F_STRICT_TCP) */
	__u64 lease_expired;  /* owned bucket, but the lease had expired: decided as foreign */
	__u64 dropped_nolistener; /* owned bucket, SYN with no local listener, dropped (FARM_F_SYN_LISTENER) */
};

/*
 * Value of the `farm_nd` hash map (key: an IPv6 VIP, 16 bytes): the shared MAC that the egress program
 * writes into the link-layer address option of neighbour advertisements for the VIP and of neighbour
 * solicitations sent from the VIP (IPv6 has no arp_announce sysctl; see src/farm/vip.ts).
 */
struct farm_nd {
	__u8 mac[6];
	__u8 pad[2];
};

#endif
