package pool

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// nodeMode gives each Service the addresses of the Ready nodes on which
// all its ports are free, as k3s's ServiceLB does: a port is taken by the
// node's own daemons, by a pod's hostPort, or by an older LoadBalancer
// Service already on that node. The tc programs then capture NODE_IP:PORT
// for the Service, so a port must never be handed to two owners.
func nodeMode(svcs []Service, in Input, res Result) {
	nodes := make([]Node, 0, len(in.Nodes))
	for _, n := range in.Nodes {
		if n.Ready && n.Addr.Is4() {
			nodes = append(nodes, n)
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	// users[node][port] says who holds the port on that node.
	users := map[string]map[Port]string{}
	for _, n := range nodes {
		u := map[Port]string{}
		for _, p := range in.NodePorts {
			u[p.Port] = p.By
		}
		for _, p := range n.Ports {
			if _, ok := u[p]; !ok {
				u[p] = "a pod's hostPort"
			}
		}
		users[n.Name] = u
	}
	for _, s := range svcs {
		res.Services[s.Name] = nodeOutcome(s, nodes, users)
	}
}

func nodeOutcome(s Service, nodes []Node, users map[string]map[Port]string) Outcome {
	switch {
	case s.RequestErr != nil:
		return Outcome{Reason: ReasonInvalid, Message: s.RequestErr.Error()}
	case s.Requested.IsValid():
		return Outcome{Reason: ReasonOutsidePools, Message: fmt.Sprintf(
			"requested address %s is in no LoadBalancerPool (none serves Services, so they get their nodes' addresses): create a pool holding it, or drop the request", s.Requested)}
	case len(nodes) == 0:
		return Outcome{Reason: ReasonNoNodes, Message: "no Ready node to take an address from (no LoadBalancerPool serves Services, so they get their nodes' addresses)"}
	}
	var out Outcome
	var why []string
	for _, n := range nodes {
		if p, by, taken := portTaken(s, users[n.Name]); taken {
			why = append(why, fmt.Sprintf("%s on %s by %s", p, n.Name, by))
			continue
		}
		out.Addrs = append(out.Addrs, n.Addr)
		for _, p := range s.Ports {
			users[n.Name][p] = "Service " + s.Name.String()
		}
	}
	if len(out.Addrs) == 0 {
		return Outcome{Reason: ReasonPortsTaken, Message: fmt.Sprintf(
			"no LoadBalancerPool serves Services, so this Service takes node addresses, but its ports are taken on every node (%s): use another port, or create a LoadBalancerPool", strings.Join(why, "; "))}
	}
	out.Reason = ReasonNodeAddresses
	out.Message = fmt.Sprintf("no LoadBalancerPool serves Services: the addresses of the nodes whose ports are free (%s)", addrList(out.Addrs))
	return out
}

func portTaken(s Service, used map[Port]string) (Port, string, bool) {
	for _, p := range s.Ports {
		if by, ok := used[p]; ok {
			return p, by, true
		}
	}
	return Port{}, "", false
}

func addrList(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
