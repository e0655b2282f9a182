package server

import (
	"context"
	"testing"

	"github.com/miekg/dns"

	"github.com/skiffnet/skiff/dns/dnstest"
	"github.com/skiffnet/skiff/dns/records"
)

// FuzzHandler feeds arbitrary packets to the query path: whatever arrives,
// the handler must not panic, and whatever it answers must be a valid DNS
// message of at most the size the transport allows, for the query's ID.
// `make test` runs it for a bounded time; testdata/fuzz/FuzzHandler holds
// a few malformed seeds (compression loops, bad OPT, oversized labels).
func FuzzHandler(f *testing.F) {
	set := dnstest.Fixtures("default")
	tab, err := records.Build(records.Options{}, set.Services, set.Slices)
	if err != nil {
		f.Fatal(err)
	}
	h, err := NewHandler(tab, nil, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"web.default.svc.cluster.local.", dns.TypeA},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV},
		{"10-244-1-3.default.pod.cluster.local.", dns.TypeA},
		{"nope.default.svc.cluster.local.", dns.TypeAAAA},
		{"dns-version.cluster.local.", dns.TypeTXT},
		{"example.org.", dns.TypeMX},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		f.Add(b, false)
		f.Add(b, true)
	}
	out := make([]byte, 0, dns.MaxMsgSize)
	f.Fuzz(func(t *testing.T, req []byte, tcp bool) {
		resp := h.Answer(context.Background(), req, out, tcp)
		if resp == nil {
			return
		}
		limit := dns.MaxMsgSize
		if !tcp {
			limit = maxUDP
		}
		if len(resp) > limit {
			t.Fatalf("response of %d bytes over %d", len(resp), limit)
		}
		var m dns.Msg
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("handler answered with a malformed message: %v", err)
		}
		if !m.Response {
			t.Fatal("answer without the QR bit")
		}
		if m.Id != uint16(req[0])<<8|uint16(req[1]) {
			t.Fatalf("answer ID %d does not match the query's", m.Id)
		}
	})
}
