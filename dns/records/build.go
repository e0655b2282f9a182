package records

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Build computes the Table for a set of Services and EndpointSlices. Slices
// are matched to their Service by the kubernetes.io/service-name label; slices
// of unknown Services are ignored. Objects that cannot be expressed in DNS
// (an ExternalName that is not a domain name, an unparsable IP) are skipped:
// one bad object must not take the cluster's DNS down.
func Build(o Options, services []*corev1.Service, eps []*discoveryv1.EndpointSlice) (*Table, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	t := newTable(o)
	bySvc := make(map[string][]*discoveryv1.EndpointSlice, len(services))
	for _, s := range eps {
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		key := s.Namespace + "/" + name
		bySvc[key] = append(bySvc[key], s)
	}
	for _, svc := range services {
		t.addService(svc, bySvc[svc.Namespace+"/"+svc.Name])
	}
	return t, nil
}

// ServiceName is the lowercased FQDN of a Service: name.ns.svc.zone.
func (t *Table) serviceName(svc *corev1.Service) string {
	return strings.ToLower(svc.Name + "." + svc.Namespace + ".svc." + t.Zone)
}

func (t *Table) addService(svc *corev1.Service, eps []*discoveryv1.EndpointSlice) {
	if svc.Name == "" || svc.Namespace == "" {
		return
	}
	base := t.serviceName(svc)
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		t.addExternalName(base, svc.Spec.ExternalName)
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		t.addHeadless(base, svc, eps)
	default:
		t.addClusterIP(base, svc)
	}
}

func (t *Table) addExternalName(base, target string) {
	host := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(target)), ".")
	if len(validation.IsDNS1123Subdomain(host)) != 0 {
		return
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return // an IP is not a valid ExternalName; a CNAME to it would mislead
	}
	target = host + "."
	t.add(&dns.CNAME{Hdr: t.hdr(base, dns.TypeCNAME), Target: target})
	t.names[base].Alias = true
}

func (t *Table) addClusterIP(base string, svc *corev1.Service) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	n := 0
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		t.addAddr(base, ip)
		t.addPTR(ip, base)
		n++
	}
	if n == 0 {
		return // no address allocated yet: the name does not exist yet
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == "" {
			continue
		}
		t.add(&dns.SRV{
			Hdr:      t.hdr(srvName(p.Name, p.Protocol, base), dns.TypeSRV),
			Priority: 0, Weight: 100, Port: uint16(p.Port), Target: base,
		})
	}
}

// endpoint is one ready address of a headless Service with its hostname.
type endpoint struct {
	ip       netip.Addr
	hostname string
}

func (t *Table) addHeadless(base string, svc *corev1.Service, eps []*discoveryv1.EndpointSlice) {
	ready := readyEndpoints(svc, eps)
	if len(ready) == 0 {
		return // spec 2.4.1: no ready endpoints is NXDOMAIN
	}
	for _, e := range ready {
		host := e.hostname + "." + base
		t.addAddr(base, e.ip)
		t.addAddr(host, e.ip)
		t.addPTR(e.ip, host)
	}
	type port struct {
		name  string
		proto corev1.Protocol
		num   int32
	}
	var ports []port
	for _, s := range eps {
		for _, p := range s.Ports {
			if p.Name == nil || *p.Name == "" || p.Port == nil {
				continue
			}
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			pp := port{*p.Name, proto, *p.Port}
			if !slices.Contains(ports, pp) {
				ports = append(ports, pp)
			}
		}
	}
	weight := uint16(max(1, 100/len(ready)))
	for _, p := range ports {
		owner := srvName(p.name, p.proto, base)
		for _, e := range ready {
			t.add(&dns.SRV{
				Hdr:      t.hdr(owner, dns.TypeSRV),
				Priority: 0, Weight: weight, Port: uint16(p.num), Target: e.hostname + "." + base,
			})
		}
	}
}

// readyEndpoints returns the ready addresses of a Service's slices, sorted and
// without duplicates (an endpoint may sit in two slices while they are
// rebalanced). publishNotReadyAddresses, and the older tolerate-unready
// annotation the spec still names, publish every address.
func readyEndpoints(svc *corev1.Service, eps []*discoveryv1.EndpointSlice) []endpoint {
	all := svc.Spec.PublishNotReadyAddresses ||
		svc.Annotations["service.alpha.kubernetes.io/tolerate-unready-endpoints"] == "true"
	var out []endpoint
	for _, s := range eps {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, e := range s.Endpoints {
			// A nil Ready means "unknown", which the API says to treat as ready.
			if !all && e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				ip = ip.Unmap()
				host := ""
				if e.Hostname != nil {
					host = strings.ToLower(*e.Hostname)
				}
				if len(validation.IsDNS1123Label(host)) != 0 {
					host = dashed(ip)
				}
				out = append(out, endpoint{ip: ip, hostname: host})
			}
		}
	}
	slices.SortFunc(out, func(a, b endpoint) int {
		if c := a.ip.Compare(b.ip); c != 0 {
			return c
		}
		return strings.Compare(a.hostname, b.hostname)
	})
	return slices.Compact(out)
}

func srvName(port string, proto corev1.Protocol, base string) string {
	return strings.ToLower("_" + port + "._" + string(proto) + "." + base)
}

// dashed is the system-assigned hostname of an endpoint without one: its IP
// with dashes, as CoreDNS does, so the name is stable and unique in the Service.
func dashed(ip netip.Addr) string {
	s := ip.String()
	if ip.Is4() {
		return strings.ReplaceAll(s, ".", "-")
	}
	return strings.ReplaceAll(s, ":", "-")
}
