/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Maps and lookups shared by Skiff's service load balancer programs.
 *
 * A Service frontend (address, port, protocol, scope) maps to an lb4_service
 * holding an id and a backend count; the backends of frontend id sit in
 * lb4_slots under (id, 1..count), each naming an lb4_backend by id. Backend
 * ids are shared between frontends, so a Pod serving a ClusterIP and three
 * NodePort addresses is stored once. Userspace (proxy/lbmap) writes new slots
 * before it raises a count and lowers a count before it deletes slots, so a
 * reader never sees a slot it cannot resolve.
 *
 * Every map is pinned by name in the node's pin directory: the agent can
 * restart, and even replace the programs, while connections keep being
 * balanced with the maps the kernel already holds.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ECONNREFUSED 111
#define EHOSTUNREACH 113

/* Scope of a frontend: socket hooks see traffic from this node's own
 * processes and pods (internal); tc sees traffic entering the node
 * (external). They differ for externalTrafficPolicy Local. */
#define SCOPE_EXTERNAL 0
#define SCOPE_INTERNAL 1

/* lb4_service.flags */
#define SVC_F_AFFINITY 0x1 /* sessionAffinity ClientIP */
#define SVC_F_NO_LOCAL 0x2 /* count 0 because no local endpoint: unreachable, not refused */

/* lb_affinity_key.kind */
#define AFFINITY_CLIENT 0 /* cookie is the client's netns cookie */
#define AFFINITY_SOCKET 1 /* cookie is a UDP socket's cookie */
#define AFFINITY_CLIENT_IP 2 /* cookie is the IPv4 source address of a packet entering the node (tc) */

/* lb_stats indexes */
enum lb_stat {
	STAT_XLATE_CONNECT = 0,
	STAT_XLATE_SENDMSG,
	STAT_REJECT_NO_ENDPOINTS,
	STAT_REJECT_NO_LOCAL,
	STAT_REVNAT,
	STAT_MAX,
};

#define MAX_SERVICES 65536
#define MAX_SLOTS 524288
#define MAX_BACKENDS 131072
#define MAX_SOCK_REVNAT 262144
#define MAX_AFFINITY 131072

struct lb4_key {
	__be32 addr;
	__be16 port;
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP */
	__u8 scope;
};

struct lb4_service {
	__u32 id;
	__u16 count; /* backends in slots 1..count; 0 rejects */
	__u16 flags;
	__u32 affinity_timeout; /* seconds */
};

struct lb_slot_key {
	__u32 id;
	__u32 slot;
};

struct lb4_backend {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 flags;
};

/* Frontend id -> the frontend's address, for reverse translation. */
struct lb4_frontend {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* A socket's translated peer, so getpeername and recvmsg show the VIP. */
struct lb4_sock_key {
	__u64 cookie;
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct lb4_sock_val {
	__be32 addr;
	__be16 port;
	__u16 pad;
	__u32 id;
};

struct lb_affinity_key {
	__u64 cookie;
	__u32 id;
	__u32 kind;
};

struct lb_affinity_val {
	__u64 last_used; /* bpf_ktime_get_ns */
	__u32 backend_id;
	__u32 slot;
};

/* Sizes are upper bounds; BPF_F_NO_PREALLOC keeps memory in line with what
 * the cluster actually holds. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_slot_key);
	__type(value, __u32);
	__uint(max_entries, MAX_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_frontend);
	__uint(max_entries, MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_sock_key);
	__type(value, struct lb4_sock_val);
	__uint(max_entries, MAX_SOCK_REVNAT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_sock_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity_val);
	__uint(max_entries, MAX_AFFINITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&lb_stats, &idx);

	if (v)
		*v += 1;
}

static __always_inline __u32 slot_backend(__u32 id, __u32 slot)
{
	struct lb_slot_key key = { .id = id, .slot = slot };
	__u32 *backend_id = bpf_map_lookup_elem(&lb4_slots, &key);

	return backend_id ? *backend_id : 0;
}

/* affinity_pick returns the backend a client (or UDP socket) used before, if
 * it is recent enough and still in the same slot of this frontend; removing
 * a backend moves another into its slot, so the check also notices that. */
static __always_inline __u32 affinity_pick(struct lb_affinity_key *key, const struct lb4_service *svc,
					   __u64 now, __u32 *slot)
{
	struct lb_affinity_val *v = bpf_map_lookup_elem(&lb_affinity, key);

	if (!v)
		return 0;
	if (key->kind != AFFINITY_SOCKET && now - v->last_used > (__u64)svc->affinity_timeout * 1000000000ULL)
		return 0;
	if (v->slot == 0 || v->slot > svc->count || slot_backend(svc->id, v->slot) != v->backend_id)
		return 0;
	*slot = v->slot;
	return v->backend_id;
}

/* lb4_pick chooses a backend for a new connection (or datagram) of
 * frontend svc, honouring affinity, and returns its id or 0. */
static __always_inline __u32 lb4_pick(const struct lb4_service *svc, struct lb_affinity_key *akey, __u64 now)
{
	__u32 slot = 0, backend_id = 0;

	if (akey)
		backend_id = affinity_pick(akey, svc, now, &slot);
	if (!backend_id) {
		slot = (bpf_get_prandom_u32() % svc->count) + 1;
		backend_id = slot_backend(svc->id, slot);
	}
	if (backend_id && akey) {
		struct lb_affinity_val v = { .last_used = now, .backend_id = backend_id, .slot = slot };

		bpf_map_update_elem(&lb_affinity, akey, &v, BPF_ANY);
	}
	return backend_id;
}

/* lb4_select looks up frontend key and picks the backend of a new connection
 * (or datagram). It returns the backend's entry and its id in *idp, or NULL
 * when there is none to give; *svcp is the frontend, NULL when key is not
 * one. client is the affinity key for sessionAffinity ClientIP, other the
 * one to use without it (NULL: none); their id is set here.
 *
 * Userspace changes a frontend by several writes (new slots, the count,
 * deletions) and a program reads it by several lookups, so one read can
 * straddle one change: the count read before it was lowered and the slot
 * looked up after it was deleted, or a slot read before it was refilled and
 * its old backend looked up after it was deleted. That is a frontend in the
 * middle of an update, not one without endpoints: refusing the connection
 * would be a spurious ECONNREFUSED in a rolling update. The frontend is read
 * again and the pick made once more, which sees the finished change. */
static __always_inline struct lb4_backend *lb4_select(const struct lb4_key *key, struct lb_affinity_key *client,
						      struct lb_affinity_key *other, struct lb4_service **svcp,
						      __u32 *idp)
{
	struct lb4_backend *be = NULL;
	__u32 id = 0;

	for (int try = 0; try < 2 && !be; try++) {
		struct lb4_service *svc = bpf_map_lookup_elem(&lb4_services, key);
		struct lb_affinity_key *akey = other;
		__u64 now = 0;

		*svcp = svc;
		if (!svc || svc->count == 0)
			return NULL;
		if (svc->flags & SVC_F_AFFINITY) {
			akey = client;
			now = bpf_ktime_get_ns();
		}
		/* Per frontend: one client (or socket) talking to two Services
		 * keeps its backend in each. */
		if (akey)
			akey->id = svc->id;
		id = lb4_pick(svc, akey, now);
		if (id)
			be = bpf_map_lookup_elem(&lb4_backends, &id);
	}
	*idp = id;
	return be;
}
