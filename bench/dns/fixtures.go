package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffnet/skiff/dns/dnstest"
)

// namespace holds every fixture object.
const namespace = "bench-dns"

// endpointsPerService in every EndpointSlice.
const endpointsPerService = 3

// fixture is what was created: the names the query mix draws from.
type fixture struct {
	clusterIP  []string // Service names
	clusterIPs []string // their allocated ClusterIPs
	headless   []string // headless Service names
	hostnames  []string // endpoint hostnames of headless Services, as FQDNs
}

// createFixtures creates n Services in namespace bench-dns, one in five
// headless, each with an EndpointSlice of three ready endpoints (every
// other headless Service's endpoints have hostnames, as a StatefulSet's
// do), the way an EndpointSlice controller would write them.
func createFixtures(ctx context.Context, cs kubernetes.Interface, n int) (*fixture, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	http := dnstest.Port{Name: "http", Port: 80}
	f := &fixture{}
	for i := range n {
		headless := i%5 == 4
		name := fmt.Sprintf("svc-%d", i)
		ip := "" // the API server allocates
		if headless {
			name, ip = fmt.Sprintf("hl-%d", i), "None"
		}
		svc, err := cs.CoreV1().Services(namespace).Create(ctx, dnstest.Service(namespace, name, ip, http), metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create Service %s: %w", name, err)
		}
		var eps []dnstest.Endpoint
		for k := range endpointsPerService {
			e := dnstest.Endpoint{IP: fmt.Sprintf("10.%d.%d.%d", 240+k, i/250, i%250+1)}
			if headless && i%10 == 4 {
				e.Hostname = fmt.Sprintf("%s-%d", name, k)
				f.hostnames = append(f.hostnames, fmt.Sprintf("%s.%s.%s.svc.cluster.local.", e.Hostname, name, namespace))
			}
			eps = append(eps, e)
		}
		slice := dnstest.Slice(namespace, name, name+"-1", []dnstest.Port{http}, eps...)
		if _, err := cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("create EndpointSlice %s: %w", slice.Name, err)
		}
		if headless {
			f.headless = append(f.headless, name)
		} else {
			f.clusterIP = append(f.clusterIP, name)
			f.clusterIPs = append(f.clusterIPs, svc.Spec.ClusterIP)
		}
	}
	return f, nil
}

// question is one line of the query file.
type question struct {
	name  string // FQDN
	qtype uint16
}

func (q question) String() string { return q.name + " " + dns.TypeToString[q.qtype] }

// share is one part of the query mix.
type share struct {
	what    string
	percent int
	pick    func(r *rand.Rand) question
}

// mix is the query mix, roughly what pods ask: mostly Service addresses
// (glibc asks A and AAAA together, and an IPv4-only Service answers AAAA
// with NODATA), search-path misses (NXDOMAIN), SRV and headless names.
func (f *fixture) mix() []share {
	svc := func(name string) string { return name + "." + namespace + ".svc.cluster.local." }
	oneOf := func(r *rand.Rand, s []string) string { return s[r.IntN(len(s))] }
	return []share{
		{"A, ClusterIP Service", 40, func(r *rand.Rand) question {
			return question{svc(oneOf(r, f.clusterIP)), dns.TypeA}
		}},
		{"AAAA, ClusterIP Service (NODATA)", 10, func(r *rand.Rand) question {
			return question{svc(oneOf(r, f.clusterIP)), dns.TypeAAAA}
		}},
		{"SRV _http._tcp, ClusterIP Service", 10, func(r *rand.Rand) question {
			return question{"_http._tcp." + svc(oneOf(r, f.clusterIP)), dns.TypeSRV}
		}},
		{"A, headless Service (3 endpoints)", 15, func(r *rand.Rand) question {
			return question{svc(oneOf(r, f.headless)), dns.TypeA}
		}},
		{"A, endpoint hostname of a headless Service", 5, func(r *rand.Rand) question {
			return question{oneOf(r, f.hostnames), dns.TypeA}
		}},
		{"A, search-path miss / unknown Service (NXDOMAIN)", 15, func(r *rand.Rand) question {
			if r.IntN(2) == 0 {
				return question{fmt.Sprintf("www.example-%d.com.%s.svc.cluster.local.", r.IntN(1000), namespace), dns.TypeA}
			}
			return question{svc(fmt.Sprintf("nosuch-%d", r.IntN(1000))), dns.TypeA}
		}},
		{"PTR, ClusterIP", 5, func(r *rand.Rand) question {
			ip := netip.MustParseAddr(oneOf(r, f.clusterIPs))
			rev, _ := dns.ReverseAddr(ip.String())
			return question{rev, dns.TypePTR}
		}},
	}
}

// writeQueries writes n questions drawn from the mix (fixed seed, so every
// run and every server gets the same file) in dnsperf's format.
func writeQueries(path string, mix []share, n int) ([]question, error) {
	r := rand.New(rand.NewPCG(6, 53))
	var qs []question
	var b strings.Builder
	for i := range n {
		p := i * 100 / n // shares are laid out in order, then shuffled
		for _, s := range mix {
			if p < s.percent {
				qs = append(qs, s.pick(r))
				break
			}
			p -= s.percent
		}
	}
	r.Shuffle(len(qs), func(i, j int) { qs[i], qs[j] = qs[j], qs[i] })
	for _, q := range qs {
		b.WriteString(q.String() + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("write query file: %w", err)
	}
	return qs, nil
}
