//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * NetworkPolicy for IPv4 pod traffic, on each local pod's host-side veth
 * (TCX): skiff_policy_from_pod on its ingress hook sees what the pod sends
 * (the pod's egress policy), skiff_policy_to_pod on its egress hook what
 * the pod receives (its ingress policy). The socket load balancer has
 * already rewritten a Service address to a backend's in the client's
 * cgroup, so both see pod addresses: policy judges the backend pod.
 *
 * Every flow of a local pod is tracked in pol_ct under the pod's side of
 * it (local address and port, peer address and port, protocol), whoever
 * opened it. A packet of a tracked flow passes in either direction: replies
 * of allowed connections, and connections opened before a policy isolated
 * the pod (as iptables implementations' ESTABLISHED rule). The first packet
 * of a flow is judged:
 *
 *  - a pod without pol_endpoints entry, or not isolated in the direction,
 *    passes: with no NetworkPolicy nothing is ever dropped;
 *  - traffic into the pod that the node itself sends (kubelet probes,
 *    host-network pods: locally generated, ingress_ifindex 0) passes, as
 *    upstream requires;
 *  - else the pod's entries (pol_rules, an LPM trie on the peer address
 *    under the pod, direction and generation) give the port set the peer
 *    may use, which pol_ports (an LPM trie on protocol and destination
 *    port, ranges as prefixes) holds. No entry or no port: dropped.
 *
 * The generation lets userspace replace a pod's entries at once: it writes
 * the new generation's entries, flips pol_endpoints, then deletes the old.
 * Non-first IPv4 fragments carry no ports and pass: without their first
 * fragment the pod cannot reassemble them. ICMP errors pass likewise.
 */
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual MIT/GPL";

#define DIR_INGRESS 0 /* into the pod */
#define DIR_EGRESS 1  /* out of the pod */

/* pol_endpoint.flags */
#define EP_ISOLATE_INGRESS 0x1
#define EP_ISOLATE_EGRESS 0x2

/* pol_rule.flags */
#define RULE_ANY 0x1 /* every protocol and port */

/* pol_ct_val.flags */
#define CT_CLOSING 0x1
#define CT_EGRESS 0x2 /* opened by the pod */

#define NSEC 1000000000ULL
#define CT_LIFETIME_TCP (21600 * NSEC)
#define CT_LIFETIME_SYN (60 * NSEC)
#define CT_LIFETIME_CLOSE (10 * NSEC)
#define CT_LIFETIME_OTHER (60 * NSEC)

#define MAX_ENDPOINTS 16384
#define MAX_RULES 1048576
#define MAX_PORTS 262144
#define MAX_CT 131072

enum pol_stat {
	POL_ALLOW_INGRESS = 0, /* new flows into a pod, allowed */
	POL_ALLOW_EGRESS,      /* new flows out of a pod, allowed */
	POL_DROP_INGRESS,      /* packets of new flows into a pod, denied */
	POL_DROP_EGRESS,       /* packets of new flows out of a pod, denied */
	POL_ALLOW_HOST,        /* new flows from the node into an isolated pod */
	POL_STAT_MAX,
};

struct pol_endpoint {
	__u32 flags; /* EP_ISOLATE_* */
	__u8 gen;    /* generation of the pod's pol_rules entries */
	__u8 pad[3];
};

struct pol_rule_key {
	__u32 prefixlen; /* 64 + the peer prefix's length */
	__be32 pod;
	__u8 dir;
	__u8 gen;
	__u16 pad;
	__be32 peer;
};

struct pol_rule {
	__u32 set_id; /* pol_ports set; 0: nothing (an except, a hole) */
	__u32 flags;  /* RULE_* */
};

struct pol_port_key {
	__u32 prefixlen; /* 48 + the port prefix's length */
	__u32 set_id;
	__u8 proto;
	__u8 pad;
	__be16 port;
};

struct pol_ct_key {
	__be32 local; /* the local pod */
	__be32 peer;
	__be16 lport;
	__be16 pport;
	__u8 proto;
	__u8 pad[3];
};

struct pol_ct_val {
	__u64 expires; /* bpf_ktime_get_ns */
	__u32 flags;   /* CT_* */
	__u32 pad;
};

struct pol_ep_key {
	__be32 pod;
	__u32 dir;
};

struct pol_ep_counters {
	__u64 allowed; /* new flows */
	__u64 denied;  /* packets */
};

/* A denied packet, for `skiff agent flows --denied`. */
struct pol_event {
	__u64 ts;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct pol_endpoint);
	__uint(max_entries, MAX_ENDPOINTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct pol_rule_key);
	__type(value, struct pol_rule);
	__uint(max_entries, MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct pol_port_key);
	__type(value, __u32);
	__uint(max_entries, MAX_PORTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct pol_ct_key);
	__type(value, struct pol_ct_val);
	__uint(max_entries, MAX_CT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, POL_STAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct pol_ep_key);
	__type(value, struct pol_ep_counters);
	__uint(max_entries, 2 * MAX_ENDPOINTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_ep_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol_events SEC(".maps");

static __always_inline void stat(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&pol_stats, &idx);

	if (v)
		*v += 1;
}

struct pkt {
	__be32 saddr, daddr;
	__be16 sport, dport;
	__u8 proto;
	__u8 tcp_flags;
};

#define IP_OFF ETH_HLEN
#define TCP_F_FIN 0x01
#define TCP_F_SYN 0x02
#define TCP_F_RST 0x04
#define TCP_F_ACK 0x10
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

/* parse reads an IPv4 packet: 0 to judge it, 1 to let it pass unjudged
 * (not IPv4, a later fragment, an ICMP error), -1 if it is malformed. */
static __always_inline int parse(struct __sk_buff *ctx, struct pkt *p)
{
	struct iphdr ip;
	__u32 l4off;
	__be16 ports[2];
	__u8 icmp_type;

	if (ctx->protocol != bpf_htons(ETH_P_IP))
		return 1;
	if (bpf_skb_load_bytes(ctx, IP_OFF, &ip, sizeof(ip)))
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	if (ip.frag_off & bpf_htons(0x1fff))
		return 1;
	p->proto = ip.protocol;
	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	l4off = IP_OFF + ip.ihl * 4;
	switch (ip.protocol) {
	case IPPROTO_TCP:
		if (bpf_skb_load_bytes(ctx, l4off + 13, &p->tcp_flags, 1))
			return -1;
		/* fallthrough */
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (bpf_skb_load_bytes(ctx, l4off, ports, sizeof(ports)))
			return -1;
		p->sport = ports[0];
		p->dport = ports[1];
		break;
	case IPPROTO_ICMP:
		if (bpf_skb_load_bytes(ctx, l4off, &icmp_type, 1))
			return -1;
		if (icmp_type != ICMP_ECHO && icmp_type != ICMP_ECHOREPLY)
			return 1;
		break;
	}
	return 0;
}

static __always_inline int ct_usable(struct pol_ct_val *v, const struct pkt *p, __u64 now)
{
	if (v->expires < now)
		return 0;
	/* A SYN on a closed flow's tuple opens a new connection. */
	if ((v->flags & CT_CLOSING) && (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN)
		return 0;
	return 1;
}

static __always_inline void ct_touch(struct pol_ct_val *v, const struct pkt *p, __u64 now)
{
	__u64 life = CT_LIFETIME_OTHER, expires;

	if (p->proto == IPPROTO_TCP) {
		if ((p->tcp_flags & (TCP_F_FIN | TCP_F_RST)) && !(v->flags & CT_CLOSING))
			v->flags |= CT_CLOSING;
		if (v->flags & CT_CLOSING)
			life = CT_LIFETIME_CLOSE;
		else if (p->tcp_flags & TCP_F_SYN)
			life = CT_LIFETIME_SYN;
		else
			life = CT_LIFETIME_TCP;
	}
	expires = now + life;
	/* Writing on every packet would bounce the entry's cache line
	 * between CPUs; a second of slack is plenty. */
	if (expires > v->expires + NSEC || (v->flags & CT_CLOSING))
		v->expires = expires;
}

/* allowed says whether the pod's entries let peer use proto/port. */
static __always_inline int allowed(const struct pol_endpoint *ep, __be32 pod, __u8 dir, __be32 peer,
				   const struct pkt *p)
{
	struct pol_rule_key rk = { .prefixlen = 96, .pod = pod, .dir = dir, .gen = ep->gen, .peer = peer };
	struct pol_port_key pk = { .prefixlen = 64, .proto = p->proto, .port = p->dport };
	struct pol_rule *r;

	r = bpf_map_lookup_elem(&pol_rules, &rk);
	if (!r)
		return 0;
	if (r->flags & RULE_ANY)
		return 1;
	if (!r->set_id)
		return 0;
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP)
		return 0;
	pk.set_id = r->set_id;
	return bpf_map_lookup_elem(&pol_ports, &pk) != NULL;
}

static __always_inline void ep_count(__be32 pod, __u8 dir, int ok)
{
	struct pol_ep_key k = { .pod = pod, .dir = dir };
	struct pol_ep_counters *s = bpf_map_lookup_elem(&pol_ep_stats, &k);

	if (!s)
		return;
	if (ok)
		s->allowed++;
	else
		s->denied++;
}

static __always_inline void report(const struct pkt *p, __u8 dir)
{
	struct pol_event ev = {
		.ts = bpf_ktime_get_ns(), .saddr = p->saddr, .daddr = p->daddr, .sport = p->sport,
		.dport = p->dport, .proto = p->proto, .dir = dir,
	};

	bpf_ringbuf_output(&pol_events, &ev, sizeof(ev), 0);
}

static __always_inline int judge(struct __sk_buff *ctx, __u8 dir)
{
	struct pkt p = {};
	struct pol_ct_key key = {};
	struct pol_ct_val val = {}, *ct;
	struct pol_endpoint *ep;
	__be32 pod;
	__u32 isolate;
	__u64 now;
	int rc;

	rc = parse(ctx, &p);
	if (rc)
		return TC_ACT_UNSPEC;
	if (dir == DIR_EGRESS) {
		pod = p.saddr;
		key.peer = p.daddr;
		key.lport = p.sport;
		key.pport = p.dport;
		isolate = EP_ISOLATE_EGRESS;
	} else {
		pod = p.daddr;
		key.peer = p.saddr;
		key.lport = p.dport;
		key.pport = p.sport;
		isolate = EP_ISOLATE_INGRESS;
	}
	key.local = pod;
	key.proto = p.proto;
	now = bpf_ktime_get_ns();
	ct = bpf_map_lookup_elem(&pol_ct, &key);
	if (ct && ct_usable(ct, &p, now)) {
		ct_touch(ct, &p, now);
		return TC_ACT_UNSPEC;
	}
	ep = bpf_map_lookup_elem(&pol_endpoints, &pod);
	if (ep && (ep->flags & isolate)) {
		if (dir == DIR_INGRESS && ctx->ingress_ifindex == 0) {
			stat(POL_ALLOW_HOST);
		} else if (!allowed(ep, pod, dir, key.peer, &p)) {
			stat(dir == DIR_EGRESS ? POL_DROP_EGRESS : POL_DROP_INGRESS);
			ep_count(pod, dir, 0);
			report(&p, dir);
			return TC_ACT_SHOT;
		}
		ep_count(pod, dir, 1);
	}
	stat(dir == DIR_EGRESS ? POL_ALLOW_EGRESS : POL_ALLOW_INGRESS);
	val.flags = dir == DIR_EGRESS ? CT_EGRESS : 0;
	ct_touch(&val, &p, now);
	/* A full table evicts its least recently used flow; a failed
	 * write only means the next packet is judged again. */
	bpf_map_update_elem(&pol_ct, &key, &val, BPF_ANY);
	return TC_ACT_UNSPEC;
}

/* What the pod sends: TCX ingress of its host-side veth. */
SEC("tcx/ingress")
int skiff_policy_from_pod(struct __sk_buff *ctx)
{
	return judge(ctx, DIR_EGRESS);
}

/* What the pod receives: TCX egress of its host-side veth. */
SEC("tcx/egress")
int skiff_policy_to_pod(struct __sk_buff *ctx)
{
	return judge(ctx, DIR_INGRESS);
}
