//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Socket-level service load balancing for IPv4 Services, attached to a node's
 * cgroup, from IPv4 sockets and from IPv6 sockets dialling v4-mapped addresses.
 *
 * connect(2) and sendmsg(2) to a Service frontend are rewritten to a backend
 * before the kernel routes the packet, so the translation happens once per
 * connection (per datagram for unconnected UDP) and the packets themselves
 * carry the backend's address: no per-packet NAT and no conntrack entry.
 * getpeername(2) and recvmsg(2) rewrite the backend back to the frontend, so
 * applications see the address they dialled.
 *
 * The programs act only on sockets of processes inside the cgroup they are
 * attached to (the node's /skiff-<node> subtree), which is how several
 * simulated nodes share one kernel, each with its own maps.
 */
#include "lb.h"

char __license[] SEC("license") = "Dual MIT/GPL";

static __always_inline int reject(const struct lb4_service *svc)
{
	if (svc->flags & SVC_F_NO_LOCAL) {
		stat_inc(STAT_REJECT_NO_LOCAL);
		bpf_set_retval(-EHOSTUNREACH);
	} else {
		stat_inc(STAT_REJECT_NO_ENDPOINTS);
		bpf_set_retval(-ECONNREFUSED);
	}
	return 0;
}

/* lb4_xlate translates an IPv4 frontend (addr, port) to a backend in place. It
 * returns 1 to let the call go on (translated or not) and 0 to fail it with
 * the error reject set. ctx is the hook's context of either family: only
 * the helpers use it. */
static __always_inline int lb4_xlate(struct bpf_sock_addr *ctx, __u32 proto, __be32 *addr, __be16 *port, int sendmsg)
{
	struct lb4_key key = {
		.addr = *addr,
		.port = *port,
		.proto = (__u8)proto,
		.scope = SCOPE_INTERNAL,
	};
	struct lb_affinity_key client = {}, sock = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	__u32 backend_id;
	__u64 cookie;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	/* Most connects are to no Service: leave them before the cookies. */
	if (!bpf_map_lookup_elem(&lb4_services, &key))
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	/* A pod is its network namespace: the netns cookie stands for the
	 * client address kube-proxy keys sessionAffinity ClientIP on. */
	client.cookie = bpf_get_netns_cookie(ctx);
	client.kind = AFFINITY_CLIENT;
	/* Datagrams of one unconnected UDP socket stick to one backend, as
	 * conntrack keeps a UDP flow on one endpoint under kube-proxy. */
	sock.cookie = cookie;
	sock.kind = AFFINITY_SOCKET;
	be = lb4_select(&key, &client, sendmsg ? &sock : NULL, &svc, &backend_id);
	if (!svc)
		return 1;
	if (!be)
		return reject(svc);

	struct lb4_sock_key rkey = { .cookie = cookie, .addr = be->addr, .port = be->port };
	struct lb4_sock_val rval = { .addr = key.addr, .port = key.port, .id = svc->id };

	bpf_map_update_elem(&lb4_sock_revnat, &rkey, &rval, BPF_ANY);
	*addr = be->addr;
	*port = be->port;
	stat_inc(sendmsg ? STAT_XLATE_SENDMSG : STAT_XLATE_CONNECT);
	return 1;
}

/* lb4_sock_revnat_lookup shows the frontend in place of the backend, as
 * long as the frontend still exists with the same id. */
static __always_inline void lb4_sock_revnat_lookup(struct bpf_sock_addr *ctx, __be32 *addr, __be16 *port)
{
	struct lb4_sock_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = *addr,
		.port = *port,
	};
	struct lb4_sock_val *val = bpf_map_lookup_elem(&lb4_sock_revnat, &key);
	struct lb4_frontend *fe;

	if (!val)
		return;
	fe = bpf_map_lookup_elem(&lb4_revnat, &val->id);
	if (!fe || fe->addr != val->addr || fe->port != val->port) {
		bpf_map_delete_elem(&lb4_sock_revnat, &key);
		return;
	}
	*addr = val->addr;
	*port = val->port;
	stat_inc(STAT_REVNAT);
}

static __always_inline int sock4_xlate(struct bpf_sock_addr *ctx, int sendmsg)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;

	if (!lb4_xlate(ctx, ctx->protocol, &addr, &port, sendmsg))
		return 0;
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)port;
	return 1;
}

static __always_inline int sock4_revnat(struct bpf_sock_addr *ctx)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;

	lb4_sock_revnat_lookup(ctx, &addr, &port);
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)port;
	return 1;
}

/* IPv4 Services reached through IPv6 sockets: a dual-stack socket (Java's
 * default, for one) connects to ::ffff:a.b.c.d, which runs the *6 hooks,
 * not the *4 ones. Only v4-mapped addresses are translated: Skiff's
 * Services are IPv4. */
static __always_inline int v4mapped(struct bpf_sock_addr *ctx, __be32 *addr)
{
	if (ctx->user_ip6[0] != 0 || ctx->user_ip6[1] != 0 || ctx->user_ip6[2] != bpf_htonl(0xffff))
		return 0;
	*addr = ctx->user_ip6[3];
	return 1;
}

static __always_inline int sock6_xlate(struct bpf_sock_addr *ctx, int sendmsg)
{
	__be32 addr;
	__be16 port = (__be16)ctx->user_port;

	if (!v4mapped(ctx, &addr))
		return 1;
	if (!lb4_xlate(ctx, ctx->protocol, &addr, &port, sendmsg))
		return 0;
	ctx->user_ip6[3] = addr;
	ctx->user_port = (__u32)port;
	return 1;
}

static __always_inline int sock6_revnat(struct bpf_sock_addr *ctx)
{
	__be32 addr;
	__be16 port = (__be16)ctx->user_port;

	if (!v4mapped(ctx, &addr))
		return 1;
	lb4_sock_revnat_lookup(ctx, &addr, &port);
	ctx->user_ip6[3] = addr;
	ctx->user_port = (__u32)port;
	return 1;
}

SEC("cgroup/connect4")
int skiff_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate(ctx, 0);
}

SEC("cgroup/sendmsg4")
int skiff_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate(ctx, 1);
}

SEC("cgroup/recvmsg4")
int skiff_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_revnat(ctx);
}

SEC("cgroup/getpeername4")
int skiff_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_revnat(ctx);
}

SEC("cgroup/connect6")
int skiff_connect6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate(ctx, 0);
}

SEC("cgroup/sendmsg6")
int skiff_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate(ctx, 1);
}

SEC("cgroup/recvmsg6")
int skiff_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_revnat(ctx);
}

SEC("cgroup/getpeername6")
int skiff_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock6_revnat(ctx);
}
