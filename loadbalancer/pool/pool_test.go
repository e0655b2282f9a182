package pool

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/loadbalancer/api"
)

func apiPool(name string, age int, blocks ...api.Block) *api.Pool {
	return &api.Pool{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(-time.Duration(age) * time.Second))},
		Spec:       api.PoolSpec{Blocks: blocks},
	}
}

var epoch = time.Unix(1_000_000, 0)

func cidr(s string) api.Block           { return api.Block{CIDR: s} }
func span(start, stop string) api.Block { return api.Block{Start: start, Stop: stop} }

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		blocks  []api.Block
		wantErr string // substring; "" means valid
		size    int64
	}{
		{"cidr leaves out network and broadcast", []api.Block{cidr("192.168.1.0/29")}, "", 6},
		{"a /32", []api.Block{cidr("192.168.1.7/32")}, "", 1},
		{"a /31 uses both", []api.Block{cidr("192.168.1.6/31")}, "", 2},
		{"range inclusive", []api.Block{span("10.0.0.10", "10.0.0.19")}, "", 10},
		{"two blocks", []api.Block{cidr("10.0.1.0/30"), span("10.0.0.1", "10.0.0.3")}, "", 5},
		{"empty", nil, "spec.blocks is empty", 0},
		{"invalid cidr", []api.Block{cidr("10.0.0.0/33")}, "spec.blocks[0]: cidr \"10.0.0.0/33\" is not a CIDR", 0},
		{"host bits", []api.Block{cidr("10.0.0.1/24")}, "did you mean 10.0.0.0/24", 0},
		{"ipv6 cidr", []api.Block{cidr("fd00::/120")}, "IPv6 pools are not supported", 0},
		{"ipv6 range", []api.Block{span("fd00::1", "fd00::9")}, "IPv6 pools are not supported", 0},
		{"reversed range", []api.Block{span("10.0.0.9", "10.0.0.1")}, "swap them", 0},
		{"half a range", []api.Block{{Start: "10.0.0.1"}}, "must both be IP addresses", 0},
		{"cidr and range", []api.Block{{CIDR: "10.0.0.0/24", Start: "10.0.0.1", Stop: "10.0.0.2"}}, "not both", 0},
		{"empty block", []api.Block{{}}, "set cidr, or start and stop", 0},
		{"blocks overlap", []api.Block{cidr("10.0.0.0/24"), span("10.0.0.5", "10.0.0.6")}, "spec.blocks[1] (10.0.0.5-10.0.0.6) overlaps spec.blocks[0]", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Parse(apiPool("p", 0, tc.blocks...))
			if tc.wantErr == "" {
				if p.Err != nil || p.Size() != tc.size {
					t.Fatalf("Parse = size %d, err %v; want size %d", p.Size(), p.Err, tc.size)
				}
				return
			}
			if p.Err == nil || !strings.Contains(p.Err.Error(), tc.wantErr) {
				t.Fatalf("Parse error = %v, want it to contain %q", p.Err, tc.wantErr)
			}
		})
	}
	bad := apiPool("p", 0, cidr("10.0.0.0/24"))
	bad.Spec.ServiceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}
	if p := Parse(bad); p.Err == nil || !strings.Contains(p.Err.Error(), "spec.serviceSelector") {
		t.Errorf("a bad selector gave %v, want an error naming spec.serviceSelector", p.Err)
	}
}

func TestValidate(t *testing.T) {
	reserved := []Reserved{
		{Name: "--service-cidr", Prefix: netip.MustParsePrefix("10.96.0.0/12")},
		{Name: "--cluster-cidr", Prefix: netip.MustParsePrefix("10.244.0.0/16")},
	}
	nodes := []Node{{Name: "n1", Addr: netip.MustParseAddr("172.30.0.11"), Ready: true}}
	pools := validate([]Pool{
		Parse(apiPool("young-overlap", 1, span("172.30.0.205", "172.30.0.210"))),
		Parse(apiPool("old", 5, span("172.30.0.200", "172.30.0.207"))),
		Parse(apiPool("services", 4, cidr("10.100.0.0/24"))),
		Parse(apiPool("pods", 4, cidr("10.244.3.0/24"))),
		Parse(apiPool("node", 3, cidr("172.30.0.0/28"))),
		Parse(apiPool("ipv6", 3, cidr("fd00::/64"))),
	}, reserved, nodes)
	want := map[string]string{
		"old":           "",
		"young-overlap": "overlaps 172.30.0.200-172.30.0.207 of the older pool old",
		"services":      "overlaps the cluster's --service-cidr 10.96.0.0/12",
		"pods":          "overlaps the cluster's --cluster-cidr",
		"node":          "holds node n1's address 172.30.0.11",
		"ipv6":          "IPv6",
	}
	for _, p := range pools {
		w := want[p.Name]
		if (w == "") != (p.Err == nil) || p.Err != nil && !strings.Contains(p.Err.Error(), w) {
			t.Errorf("pool %s: err %v, want %q", p.Name, p.Err, w)
		}
	}
}

func TestServes(t *testing.T) {
	for _, tc := range []struct {
		serves  []string
		svc, gw bool
		wantErr string
	}{
		{nil, true, false, ""},
		{[]string{api.ServesGateways}, false, true, ""},
		{[]string{api.ServesServices, api.ServesGateways}, true, true, ""},
		{[]string{"Ingresses"}, true, false, `spec.serves[0]: "Ingresses" is neither Services nor Gateways`},
	} {
		p := apiPool("p", 0, cidr("10.0.0.0/30"))
		p.Spec.Serves = tc.serves
		got := Parse(p)
		if got.ForServices != tc.svc || got.ForGateways != tc.gw || (tc.wantErr == "") != (got.Err == nil) ||
			got.Err != nil && !strings.Contains(got.Err.Error(), tc.wantErr) {
			t.Errorf("serves %v: services %v gateways %v err %v; want %v %v %q", tc.serves, got.ForServices, got.ForGateways, got.Err, tc.svc, tc.gw, tc.wantErr)
		}
	}
	err := CheckReserved(Parse(apiPool("flag", 0, cidr("10.96.5.0/24"))), []Reserved{{Name: "--service-cidr", Prefix: netip.MustParsePrefix("10.96.0.0/12")}})
	if err == nil || !strings.Contains(err.Error(), "--service-cidr 10.96.0.0/12") {
		t.Errorf("CheckReserved = %v, want it to name --service-cidr", err)
	}
}
