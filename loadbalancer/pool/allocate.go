package pool

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffnet/skiff/loadbalancer/api"
)

// Reasons for a Service's outcome, written as the condition's reason and
// the event's.
const (
	ReasonAssigned      = "AddressAssigned"
	ReasonNodeAddresses = "NodeAddresses"
	ReasonInvalid       = "InvalidRequest"
	ReasonOutsidePools  = "RequestOutsidePools"
	ReasonConflict      = "AddressConflict"
	ReasonNoPool        = "NoPool"
	ReasonExhausted     = "PoolExhausted"
	ReasonPortsTaken    = "PortsTaken"
	ReasonNoNodes       = "NoReadyNodes"
)

// Outcome is what one Service gets.
type Outcome struct {
	Addrs   []netip.Addr // empty: the Service stays pending
	Pool    string       // the pool the address came from; "" in node-address mode
	Reason  string
	Message string
}

// Assigned reports whether the Service has addresses.
func (o Outcome) Assigned() bool { return len(o.Addrs) > 0 }

// PoolState is what a pool's status shows.
type PoolState struct {
	Used int
	Free int64
	Err  error // the spec is unusable; nothing is handed out
}

// NamedPort is a port the nodes' own daemons listen on, and which one.
type NamedPort struct {
	Port
	By string
}

// Input is everything one allocation reads.
type Input struct {
	Pools    []Pool
	Services []Service
	// Reserved are the cluster's ranges no pool may overlap.
	Reserved []Reserved
	Nodes    []Node
	// NodePorts are ports every node's own daemons hold (DNS, the ingress
	// proxy, the kubelet): node-address mode does not give them away.
	NodePorts []NamedPort
}

// Result is the allocation.
type Result struct {
	Services map[types.NamespacedName]Outcome
	// Gateways are the Gateways' outcomes; one without addresses is
	// served on the nodes' own addresses.
	Gateways map[types.NamespacedName]Outcome
	Pools    map[string]PoolState
}

// Allocate decides every Service's and Gateway's addresses. With no pool
// serving Services it runs node-address mode for them (k3s ServiceLB): a
// Service gets the addresses of the Ready nodes on which its ports are
// free. Otherwise addresses come from pools; an address is held by one
// Service or Gateway, or by Services that share it through the same
// sharing key with disjoint ports. Gateways take addresses only from pools
// that serve them. Older objects win every contest, and one keeps the
// address it holds while that stays valid, so a new object never takes an
// address from a running one.
func Allocate(in Input) Result {
	svcs := append([]Service(nil), in.Services...)
	sort.SliceStable(svcs, func(i, j int) bool {
		return older(svcs[i].Created, svcs[i].Who(), svcs[j].Created, svcs[j].Who())
	})
	res := Result{Services: map[types.NamespacedName]Outcome{}, Gateways: map[types.NamespacedName]Outcome{}, Pools: map[string]PoolState{}}
	a := &allocator{pools: validate(in.Pools, in.Reserved, in.Nodes), taken: map[netip.Addr]*holder{}, res: res}
	if !servesServices(in.Pools) {
		var services, gateways []Service
		for _, s := range svcs {
			if s.Gateway {
				gateways = append(gateways, s)
			} else {
				services = append(services, s)
			}
		}
		nodeMode(services, in, res)
		svcs = gateways
	}
	a.run(svcs)
	for _, p := range a.pools {
		st := PoolState{Err: p.Err}
		if p.Err == nil {
			for addr := range a.taken {
				if p.Contains(addr) {
					st.Used++
				}
			}
			st.Free = p.Size() - int64(st.Used)
		}
		res.Pools[p.Name] = st
	}
	return res
}

// servesServices reports whether any pool, valid or not, is meant for
// Services: then addresses come from pools only, and a broken pool shows
// as pending Services rather than a silent switch to node addresses.
func servesServices(pools []Pool) bool {
	for _, p := range pools {
		if p.ForServices {
			return true
		}
	}
	return false
}

// selects reports whether p hands addresses to s.
func selects(p *Pool, s Service) bool {
	if s.Gateway {
		return p.ForGateways
	}
	return p.ForServices && p.Selector.Matches(s.Labels)
}

// set records s's outcome.
func (a *allocator) set(s Service, o Outcome) {
	if s.Gateway {
		a.res.Gateways[s.Name] = o
	} else {
		a.res.Services[s.Name] = o
	}
}

type allocator struct {
	pools  []Pool // oldest first, validated
	taken  map[netip.Addr]*holder
	cursor map[string]netip.Addr
	res    Result
}

func (a *allocator) run(svcs []Service) {
	done := map[types.NamespacedName]bool{}
	for _, s := range svcs {
		if s.RequestErr != nil {
			a.set(s, Outcome{Reason: ReasonInvalid, Message: s.RequestErr.Error()})
			done[s.Name] = true
		}
	}
	// Keep what Services hold, oldest first.
	for _, s := range svcs {
		if done[s.Name] || len(s.Current) != 1 || (s.Requested.IsValid() && s.Requested != s.Current[0]) {
			continue
		}
		p := a.poolOf(s.Current[0])
		if p == nil || !selects(p, s) {
			continue
		}
		if a.take(s, s.Current[0]) == "" {
			a.assigned(s, p, s.Current[0])
			done[s.Name] = true
		}
	}
	// Requested addresses.
	for _, s := range svcs {
		if done[s.Name] || !s.Requested.IsValid() {
			continue
		}
		done[s.Name] = true
		p, why := a.requestPool(s)
		if p == nil {
			a.set(s, Outcome{Reason: ReasonOutsidePools, Message: why})
			continue
		}
		if why := a.take(s, s.Requested); why != "" {
			a.set(s, Outcome{Reason: ReasonConflict, Message: fmt.Sprintf("requested address %s cannot be given: %s", s.Requested, why)})
			continue
		}
		a.assigned(s, p, s.Requested)
	}
	// The rest: share by key, or the lowest free address.
	for _, s := range svcs {
		if !done[s.Name] {
			a.dynamic(s)
		}
	}
}

// poolOf is the valid pool holding addr, disabled or not.
func (a *allocator) poolOf(addr netip.Addr) *Pool {
	for i := range a.pools {
		if a.pools[i].Err == nil && a.pools[i].Contains(addr) {
			return &a.pools[i]
		}
	}
	return nil
}

func (a *allocator) requestPool(s Service) (*Pool, string) {
	p := a.poolOf(s.Requested)
	switch {
	case p == nil:
		return nil, fmt.Sprintf("requested address %s is in no LoadBalancerPool: add it to a pool's spec.blocks, or request an address of a pool", s.Requested)
	case p.Disabled:
		return nil, fmt.Sprintf("requested address %s is in LoadBalancerPool %s, which is disabled (spec.disabled)", s.Requested, p.Name)
	case s.Gateway && !p.ForGateways:
		return nil, fmt.Sprintf("requested address %s is in LoadBalancerPool %s, which does not serve Gateways: add %s to its spec.serves, or request an address of a pool that serves them", s.Requested, p.Name, api.ServesGateways)
	case !s.Gateway && !p.ForServices:
		return nil, fmt.Sprintf("requested address %s is in LoadBalancerPool %s, which does not serve Services: add %s to its spec.serves, or request an address of a pool that serves them", s.Requested, p.Name, api.ServesServices)
	case !selects(p, s):
		return nil, fmt.Sprintf("requested address %s is in LoadBalancerPool %s, whose spec.serviceSelector (%s) does not select this Service", s.Requested, p.Name, p.Selector)
	}
	return p, ""
}

// take gives addr to s, alone or shared; it returns why not, or "".
func (a *allocator) take(s Service, addr netip.Addr) string {
	h := a.taken[addr]
	if h == nil {
		a.taken[addr] = newHolder(s)
		return ""
	}
	if why := h.refuses(s); why != "" {
		return why
	}
	h.add(s)
	return ""
}

func (a *allocator) assigned(s Service, p *Pool, addr netip.Addr) {
	a.set(s, Outcome{Addrs: []netip.Addr{addr}, Pool: p.Name, Reason: ReasonAssigned,
		Message: fmt.Sprintf("address %s from LoadBalancerPool %s", addr, p.Name)})
}

func (a *allocator) dynamic(s Service) {
	var selecting []string
	if s.SharingKey != "" {
		if addr, p, ok := a.shareable(s); ok {
			a.take(s, addr)
			a.assigned(s, p, addr)
			return
		}
	}
	for i := range a.pools {
		p := &a.pools[i]
		if p.Err != nil || p.Disabled || !selects(p, s) {
			continue
		}
		selecting = append(selecting, p.Name)
		if addr, ok := a.free(p); ok {
			a.take(s, addr)
			a.assigned(s, p, addr)
			return
		}
	}
	switch {
	case len(selecting) == 0 && s.Gateway:
		a.set(s, Outcome{Reason: ReasonNoPool, Message: fmt.Sprintf(
			"no enabled, valid LoadBalancerPool serves Gateways, so the Gateway is served on the nodes' addresses: create one with spec.serves [%s] (skiff server --gateway-cidr does)", api.ServesGateways)})
	case len(selecting) == 0:
		a.set(s, Outcome{Reason: ReasonNoPool, Message: fmt.Sprintf(
			"no enabled, valid LoadBalancerPool selects this Service (labels %q): create one, or fix a pool's spec.serviceSelector", s.Labels.String())})
	default:
		a.set(s, Outcome{Reason: ReasonExhausted, Message: fmt.Sprintf(
			"LoadBalancerPool %s has no free address: add a block to spec.blocks, or delete a LoadBalancer Service or Gateway", strings.Join(selecting, ", "))})
	}
}

// shareable finds the lowest address held with s's sharing key that s may
// join.
func (a *allocator) shareable(s Service) (netip.Addr, *Pool, bool) {
	var addrs []netip.Addr
	for addr, h := range a.taken {
		if h.key == s.SharingKey {
			addrs = append(addrs, addr)
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	for _, addr := range addrs {
		p := a.poolOf(addr)
		if p != nil && !p.Disabled && selects(p, s) && a.taken[addr].refuses(s) == "" {
			return addr, p, true
		}
	}
	return netip.Addr{}, nil, false
}

// free finds p's lowest free address. Allocation only adds to taken, so a
// cursor per pool never has to look back.
func (a *allocator) free(p *Pool) (netip.Addr, bool) {
	if a.cursor == nil {
		a.cursor = map[string]netip.Addr{}
	}
	from := a.cursor[p.Name]
	for _, r := range p.Ranges {
		addr := r.First
		if from.IsValid() && r.Contains(from) {
			addr = from
		} else if from.IsValid() && r.Last.Less(from) {
			continue
		}
		for ; r.Contains(addr); addr = addr.Next() {
			if a.taken[addr] == nil {
				a.cursor[p.Name] = addr
				return addr, true
			}
		}
	}
	a.cursor[p.Name] = p.Ranges[len(p.Ranges)-1].Last.Next()
	return netip.Addr{}, false
}
