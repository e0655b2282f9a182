package netpol

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skiffnet/skiff/bpf"
)

func TestFormatEvent(t *testing.T) {
	ev := bpf.PolicyEvent{
		Saddr: bpf.Addr4(netip.MustParseAddr("10.244.1.11")), Daddr: bpf.Addr4(netip.MustParseAddr("10.244.2.10")),
		Sport: bpf.Port(40000), Dport: bpf.Port(8080), Proto: 6, Dir: bpf.PolicyIngress,
	}
	got := formatEvent(ev, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	want := "03:04:05 denied ingress tcp  10.244.1.11:40000 -> 10.244.2.10:8080"
	if strings.TrimSpace(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
