//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Service load balancing for IPv4 packets entering the node: NodePorts,
 * externalIPs and LoadBalancer ingress IPs reached from outside, where no
 * socket of the node's own can be translated at connect(2).
 *
 * skiff_nodeport_ingress runs on the node's external interfaces (TCX
 * ingress). The first packet of a flow to an *external*-scope frontend
 * picks a backend and records the flow in lb4_ct; later packets follow the
 * entry:
 *
 *  - local backend (a pod behind a host veth, or the node itself): the
 *    destination is rewritten and the kernel routes the packet; the client's
 *    address is kept. The backend's replies leave through an external
 *    interface, where skiff_nodeport_egress (TCX egress) puts the frontend
 *    back as their source.
 *  - remote backend (routed through a gateway: another node): the source is
 *    rewritten too, to this node's address and a port of its own, so the
 *    replies come back here; the packet is sent straight to the next hop
 *    with bpf_redirect_neigh (the kernel would drop a forwarded packet whose
 *    source is one of its own addresses). Those replies arrive on ingress,
 *    where their entry restores frontend and client and sends them back.
 *
 * Conntrack entries carry an expiry time; the agent deletes expired ones
 * (proxy.NodePort GC) and the LRU evicts the oldest under pressure.
 * A frontend without endpoints answers a TCP SYN with a RST at once;
 * externalTrafficPolicy Local without a local endpoint drops, as kube-proxy.
 */
#include <stddef.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>

#include "lb.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define AF_INET 2
#define PACKET_HOST 0 /* linux/if_packet.h */

/* lb4_ct key direction: where the packet is looked up. */
#define CT_INGRESS 0
#define CT_EGRESS 1

/* ct4_val.flags */
#define CT_F_REPLY 0x1   /* reply of a translated flow: restore the frontend */
#define CT_F_SNAT 0x2    /* the flow is source-translated (remote backend) */
#define CT_F_CLOSING 0x4 /* a FIN or RST was seen */

#define NSEC 1000000000ULL
/* Lifetimes as Cilium's defaults: long for established TCP, short while a
 * handshake is pending or after a close, one minute for UDP. */
#define CT_LIFETIME_TCP (21600 * NSEC)
#define CT_LIFETIME_SYN (60 * NSEC)
#define CT_LIFETIME_CLOSE (10 * NSEC)
#define CT_LIFETIME_UDP (60 * NSEC)

/* SNAT ports sit above the kernel's default ephemeral range (32768-60999),
 * so they do not collide with the node's own connections to a backend. */
#define SNAT_PORT_MIN 61000
#define SNAT_PORT_COUNT 4536
#define SNAT_TRIES 8

#define MAX_CT 131072
#define MAX_IFACES 64

enum np_stat {
	NP_DNAT_LOCAL = 0, /* new flows to a local backend */
	NP_DNAT_SNAT,      /* new flows to a remote backend, source-translated */
	NP_REVNAT,         /* packets given the frontend back (replies) */
	NP_REJECT,         /* SYNs answered by a RST (no endpoints) */
	NP_DROP_NO_ENDPOINTS,
	NP_DROP_NO_LOCAL,
	NP_DROP_NO_ROUTE,
	NP_DROP_SNAT, /* no SNAT address or no free port */
	NP_STAT_MAX,
};

struct ct4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* CT_INGRESS, CT_EGRESS */
	__u16 pad;
};

struct ct4_val {
	__u64 expires; /* bpf_ktime_get_ns (CLOCK_MONOTONIC) after which GC deletes it */
	__be32 addr;   /* forward: backend (new destination); reply: frontend (new source) */
	__be32 addr2;  /* forward+SNAT: new source; reply+SNAT: client (new destination) */
	__be16 port;
	__be16 port2;
	__u32 backend_id; /* forward: checked on every packet, a removed backend is re-picked */
	__u32 ifindex;    /* SNAT: interface to send through */
	__be32 nexthop;   /* SNAT: neighbour on it */
	__u16 flags;
	__u16 pad;
	__u32 pad2;
};

/* An external interface: the address remote backends' replies come back to. */
struct lb4_iface {
	__be32 snat_addr;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct4_val);
	__uint(max_entries, MAX_CT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* ifindex */
	__type(value, struct lb4_iface);
	__uint(max_entries, MAX_IFACES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, NP_STAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_np_stats SEC(".maps");

static __always_inline void np_stat(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&lb4_np_stats, &idx);

	if (v)
		*v += 1;
}

struct pkt {
	__u32 l4off;
	__u32 csum_off; /* of the L4 checksum, from the start of the frame */
	__be32 saddr, daddr;
	__be16 sport, dport;
	__be16 tot_len;
	__u8 proto;
	__u8 tcp_flags;
	__u8 ihl;
};

#define IP_OFF ETH_HLEN
#define TCP_F_FIN 0x01
#define TCP_F_SYN 0x02
#define TCP_F_RST 0x04
#define TCP_F_ACK 0x10

/* parse reads an Ethernet/IPv4 TCP or UDP packet. Fragments are left alone:
 * only the first carries the ports (not translated yet, see docs). */
static __always_inline int parse(struct __sk_buff *ctx, struct pkt *p)
{
	struct iphdr ip;
	__be16 ports[2];

	if (ctx->protocol != bpf_htons(ETH_P_IP))
		return -1;
	if (bpf_skb_load_bytes(ctx, IP_OFF, &ip, sizeof(ip)))
		return -1;
	if (ip.version != 4 || ip.ihl < 5 || (ip.frag_off & bpf_htons(0x3fff)))
		return -1;
	p->proto = ip.protocol;
	p->ihl = ip.ihl;
	p->l4off = IP_OFF + ip.ihl * 4;
	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	p->tot_len = ip.tot_len;
	switch (ip.protocol) {
	case IPPROTO_TCP:
		p->csum_off = p->l4off + offsetof(struct tcphdr, check);
		if (bpf_skb_load_bytes(ctx, p->l4off + 13, &p->tcp_flags, 1))
			return -1;
		break;
	case IPPROTO_UDP:
		p->csum_off = p->l4off + offsetof(struct udphdr, check);
		break;
	default:
		return -1;
	}
	if (bpf_skb_load_bytes(ctx, p->l4off, ports, sizeof(ports)))
		return -1;
	p->sport = ports[0];
	p->dport = ports[1];
	return 0;
}

static __always_inline int l4_flags(const struct pkt *p, int size)
{
	/* A UDP checksum of 0 means "none" and must stay so. */
	return size | (p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
}

static __always_inline int set_addr(struct __sk_buff *ctx, const struct pkt *p, __u32 field, __be32 from, __be32 to)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(ctx, p->csum_off, from, to, l4_flags(p, 4) | BPF_F_PSEUDO_HDR))
		return -1;
	if (bpf_l3_csum_replace(ctx, IP_OFF + offsetof(struct iphdr, check), from, to, 4))
		return -1;
	return bpf_skb_store_bytes(ctx, IP_OFF + field, &to, 4, 0);
}

static __always_inline int set_port(struct __sk_buff *ctx, const struct pkt *p, __u32 field, __be16 from, __be16 to)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(ctx, p->csum_off, from, to, l4_flags(p, 2)))
		return -1;
	return bpf_skb_store_bytes(ctx, p->l4off + field, &to, 2, 0);
}

/* nat4 rewrites the packet's addresses and ports, fixing both checksums. */
static __always_inline int nat4(struct __sk_buff *ctx, const struct pkt *p, __be32 saddr, __be16 sport,
				__be32 daddr, __be16 dport)
{
	if (set_addr(ctx, p, offsetof(struct iphdr, saddr), p->saddr, saddr) ||
	    set_addr(ctx, p, offsetof(struct iphdr, daddr), p->daddr, daddr) ||
	    set_port(ctx, p, 0, p->sport, sport) || set_port(ctx, p, 2, p->dport, dport))
		return -1;
	return 0;
}

static __always_inline void ct_touch(struct ct4_val *v, const struct pkt *p, __u64 now)
{
	__u64 life = CT_LIFETIME_UDP;

	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & (TCP_F_FIN | TCP_F_RST))
			v->flags |= CT_F_CLOSING;
		if (v->flags & CT_F_CLOSING)
			life = CT_LIFETIME_CLOSE;
		else if (p->tcp_flags & TCP_F_SYN)
			life = CT_LIFETIME_SYN;
		else
			life = CT_LIFETIME_TCP;
	}
	v->expires = now + life;
}

static __always_inline int redirect(const struct ct4_val *v)
{
	struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = v->nexthop };

	return bpf_redirect_neigh(v->ifindex, &nh, sizeof(nh), 0);
}

/* forward sends a packet of a known flow to its backend. */
static __always_inline int forward(struct __sk_buff *ctx, const struct pkt *p, struct ct4_val *v, __u64 now)
{
	__be32 saddr = p->saddr;
	__be16 sport = p->sport;

	ct_touch(v, p, now);
	if (v->flags & CT_F_SNAT) {
		saddr = v->addr2;
		sport = v->port2;
	}
	if (nat4(ctx, p, saddr, sport, v->addr, v->port))
		return TC_ACT_SHOT;
	if (v->flags & CT_F_SNAT)
		return redirect(v);
	return TC_ACT_OK;
}

/* reply_snat gives a remote backend's reply its frontend and client back
 * and sends it to the client. */
static __always_inline int reply_snat(struct __sk_buff *ctx, const struct pkt *p, struct ct4_val *v, __u64 now)
{
	ct_touch(v, p, now);
	if (nat4(ctx, p, v->addr, v->port, v->addr2, v->port2))
		return TC_ACT_SHOT;
	np_stat(NP_REVNAT);
	return redirect(v);
}

/* ct_usable says whether a forward entry still applies: its backend still
 * exists (a removed backend is re-picked, which is what kube-proxy's
 * conntrack flush on endpoint removal achieves), and a SYN after a close
 * starts a new connection on a reused tuple. */
static __always_inline int ct_usable(const struct ct4_val *v, const struct pkt *p)
{
	__u32 id = v->backend_id;
	struct lb4_backend *be = bpf_map_lookup_elem(&lb4_backends, &id);

	if (!be || be->addr != v->addr || be->port != v->port)
		return 0;
	if ((v->flags & CT_F_CLOSING) && (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN)
		return 0;
	return 1;
}

/* send_rst answers a SYN with a RST|ACK, turning the packet around in
 * place. Only the header fields outside the pseudo header change, and
 * swapping addresses and ports keeps every one's-complement sum, so the
 * checksums stay right whether or not the stack still has to complete
 * them (veth peers send CHECKSUM_PARTIAL packets). */
static __always_inline int send_rst(struct __sk_buff *ctx, const struct pkt *p)
{
	struct tcphdr th;
	__u8 macs[12], swapped[12];
	__be32 addrs[2];
	__be16 ports[2];
	struct {
		__be32 seq;
		__be32 ack_seq;
		__be16 word; /* doff and flags */
		__be16 window;
	} old, new;

	if (p->proto != IPPROTO_TCP || (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK | TCP_F_RST)) != TCP_F_SYN)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(ctx, p->l4off, &th, sizeof(th)))
		return TC_ACT_SHOT;
	/* A SYN carrying data (TCP Fast Open) would need the packet cut. */
	if (bpf_ntohs(p->tot_len) != p->ihl * 4 + th.doff * 4)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(ctx, p->l4off + 4, &old, sizeof(old)))
		return TC_ACT_SHOT;
	new.seq = 0;
	new.ack_seq = bpf_htonl(bpf_ntohl(old.seq) + 1);
	new.word = bpf_htons((bpf_ntohs(old.word) & 0xf000) | TCP_F_RST | TCP_F_ACK);
	new.window = 0;
	if (bpf_l4_csum_replace(ctx, p->csum_off, old.seq, new.seq, 4) ||
	    bpf_l4_csum_replace(ctx, p->csum_off, old.ack_seq, new.ack_seq, 4) ||
	    bpf_l4_csum_replace(ctx, p->csum_off, old.word, new.word, 2) ||
	    bpf_l4_csum_replace(ctx, p->csum_off, old.window, new.window, 2))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(ctx, p->l4off + 4, &new, sizeof(new), 0))
		return TC_ACT_SHOT;
	ports[0] = p->dport;
	ports[1] = p->sport;
	addrs[0] = p->daddr;
	addrs[1] = p->saddr;
	if (bpf_skb_store_bytes(ctx, p->l4off, ports, sizeof(ports), 0) ||
	    bpf_skb_store_bytes(ctx, IP_OFF + offsetof(struct iphdr, saddr), addrs, sizeof(addrs), 0))
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(ctx, 0, macs, sizeof(macs)))
		return TC_ACT_SHOT;
	__builtin_memcpy(swapped, macs + 6, 6);
	__builtin_memcpy(swapped + 6, macs, 6);
	if (bpf_skb_store_bytes(ctx, 0, swapped, sizeof(swapped), 0))
		return TC_ACT_SHOT;
	np_stat(NP_REJECT);
	return bpf_redirect(ctx->ifindex, 0);
}

static __always_inline int reject(struct __sk_buff *ctx, const struct pkt *p, const struct lb4_service *svc)
{
	if (svc->flags & SVC_F_NO_LOCAL) {
		np_stat(NP_DROP_NO_LOCAL);
		return TC_ACT_SHOT;
	}
	if (p->proto == IPPROTO_TCP)
		return send_rst(ctx, p);
	np_stat(NP_DROP_NO_ENDPOINTS);
	return TC_ACT_SHOT;
}

/* snat_reserve finds a free port on addr for replies from backend be and
 * records the reply entry under it. */
static __always_inline __be16 snat_reserve(const struct lb4_backend *be, const struct pkt *p, __be32 addr,
					   struct ct4_val *rval)
{
	struct ct4_key rkey = {
		.saddr = be->addr, .daddr = addr, .sport = be->port, .proto = p->proto, .dir = CT_INGRESS,
	};
	__u32 seed = bpf_get_prandom_u32();

#pragma unroll
	for (int i = 0; i < SNAT_TRIES; i++) {
		rkey.dport = bpf_htons(SNAT_PORT_MIN + (seed + i * 997) % SNAT_PORT_COUNT);
		if (bpf_map_update_elem(&lb4_ct, &rkey, rval, BPF_NOEXIST) == 0)
			return rkey.dport;
	}
	return 0;
}

/* new_flow balances the first packet of a flow to an external frontend. */
static __always_inline int new_flow(struct __sk_buff *ctx, const struct pkt *p, const struct ct4_key *key, __u64 now)
{
	struct lb4_key fk = { .addr = p->daddr, .port = p->dport, .proto = p->proto, .scope = SCOPE_EXTERNAL };
	struct lb_affinity_key akey = { .cookie = p->saddr, .kind = AFFINITY_CLIENT_IP };
	struct bpf_fib_lookup fib = {};
	struct ct4_val val = {}, rval = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	struct lb4_iface *iface;
	__u32 backend_id, ifindex;
	int rc, local;

	be = lb4_select(&fk, &akey, NULL, &svc, &backend_id);
	if (!svc)
		return TC_ACT_UNSPEC;
	if (!be)
		return reject(ctx, p, svc);

	/* Where would the kernel send the translated packet? A node address
	 * is local; so is a directly connected route on another interface
	 * (a pod's /32 through its host veth). A gateway, or the interface the
	 * packet came in on, means another node: translate the source too. */
	fib.family = AF_INET;
	fib.l4_protocol = p->proto;
	fib.ifindex = ctx->ifindex;
	fib.ipv4_src = p->saddr;
	fib.ipv4_dst = be->addr;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_NOT_FWDED:
	case BPF_FIB_LKUP_RET_FWD_DISABLED: /* nothing but local delivery is possible */
		local = 1;
		break;
	case BPF_FIB_LKUP_RET_SUCCESS:
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		local = fib.ifindex != ctx->ifindex && fib.ipv4_dst == be->addr;
		break;
	default:
		np_stat(NP_DROP_NO_ROUTE);
		return TC_ACT_SHOT;
	}

	val.addr = be->addr;
	val.port = be->port;
	val.backend_id = backend_id;
	ct_touch(&val, p, now);
	rval.flags = CT_F_REPLY;
	rval.addr = p->daddr;
	rval.port = p->dport;
	rval.expires = val.expires;
	if (local) {
		struct ct4_key rkey = {
			.saddr = be->addr, .daddr = p->saddr, .sport = be->port, .dport = p->sport,
			.proto = p->proto, .dir = CT_EGRESS,
		};

		if (bpf_map_update_elem(&lb4_ct, &rkey, &rval, BPF_ANY))
			return TC_ACT_SHOT;
		np_stat(NP_DNAT_LOCAL);
	} else {
		ifindex = fib.ifindex;
		iface = bpf_map_lookup_elem(&lb4_ifaces, &ifindex);
		if (!iface) {
			ifindex = ctx->ifindex;
			iface = bpf_map_lookup_elem(&lb4_ifaces, &ifindex);
		}
		if (!iface || !iface->snat_addr) {
			np_stat(NP_DROP_SNAT);
			return TC_ACT_SHOT;
		}
		val.flags = CT_F_SNAT;
		val.addr2 = iface->snat_addr;
		val.ifindex = fib.ifindex;
		val.nexthop = fib.ipv4_dst;

		/* Replies go back the way the client's packet would be routed. */
		__builtin_memset(&fib, 0, sizeof(fib));
		fib.family = AF_INET;
		fib.l4_protocol = p->proto;
		fib.ifindex = ctx->ifindex;
		fib.ipv4_src = p->daddr;
		fib.ipv4_dst = p->saddr;
		rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
			np_stat(NP_DROP_NO_ROUTE);
			return TC_ACT_SHOT;
		}
		rval.flags |= CT_F_SNAT;
		rval.addr2 = p->saddr;
		rval.port2 = p->sport;
		rval.ifindex = fib.ifindex;
		rval.nexthop = fib.ipv4_dst;
		val.port2 = snat_reserve(be, p, val.addr2, &rval);
		if (!val.port2) {
			np_stat(NP_DROP_SNAT);
			return TC_ACT_SHOT;
		}
		np_stat(NP_DNAT_SNAT);
	}
	if (bpf_map_update_elem(&lb4_ct, key, &val, BPF_ANY))
		return TC_ACT_SHOT;
	return forward(ctx, p, &val, now);
}

SEC("tcx/ingress")
int skiff_nodeport_ingress(struct __sk_buff *ctx)
{
	struct pkt p = {};
	struct ct4_key key = {};
	struct ct4_val *ct;
	__u64 now;

	/* A frame for another host's MAC reaches this device when a switch
	 * floods it (an unknown destination, a promiscuous port). The kernel
	 * would drop it in ip_rcv; serving it instead would answer for an
	 * address another node announces, behind that node's back. */
	if (ctx->pkt_type != PACKET_HOST)
		return TC_ACT_UNSPEC;
	if (parse(ctx, &p))
		return TC_ACT_UNSPEC;
	key.saddr = p.saddr;
	key.daddr = p.daddr;
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = CT_INGRESS;
	now = bpf_ktime_get_ns();
	ct = bpf_map_lookup_elem(&lb4_ct, &key);
	if (ct) {
		if (ct->flags & CT_F_REPLY)
			return reply_snat(ctx, &p, ct, now);
		if (ct_usable(ct, &p))
			return forward(ctx, &p, ct, now);
	}
	return new_flow(ctx, &p, &key, now);
}

/* skiff_nodeport_egress gives replies of local backends their frontend
 * back as they leave the node. */
SEC("tcx/egress")
int skiff_nodeport_egress(struct __sk_buff *ctx)
{
	struct pkt p = {};
	struct ct4_key key = {};
	struct ct4_val *ct;

	if (parse(ctx, &p))
		return TC_ACT_UNSPEC;
	key.saddr = p.saddr;
	key.daddr = p.daddr;
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = CT_EGRESS;
	ct = bpf_map_lookup_elem(&lb4_ct, &key);
	if (!ct)
		return TC_ACT_UNSPEC;
	ct_touch(ct, &p, bpf_ktime_get_ns());
	if (nat4(ctx, &p, ct->addr, ct->port, p.daddr, p.dport))
		return TC_ACT_SHOT;
	np_stat(NP_REVNAT);
	return TC_ACT_OK;
}
