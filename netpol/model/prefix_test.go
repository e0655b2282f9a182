package model

import (
	"fmt"
	"net/netip"
	"testing"
)

func TestFlattenEntries(t *testing.T) {
	tcp80 := PortSet{Ranges: []PortRange{{ProtoTCP, 80, 80}}}
	tcp443 := PortSet{Ranges: []PortRange{{ProtoTCP, 443, 443}}}
	b := &block{cidr: netip.MustParsePrefix("10.0.0.0/8"), excepts: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	got := flatten([]grant{
		{block: b, ports: tcp80},
		{pod: netip.MustParseAddr("10.1.0.5"), ports: tcp443},     // inside the except
		{pod: netip.MustParseAddr("10.2.0.5"), ports: tcp80},      // adds nothing to the block
		{pod: netip.MustParseAddr("10.3.0.5"), ports: tcp443},     // both
		{pod: netip.MustParseAddr("192.0.2.1"), ports: PortSet{}}, // empty: no entry
	}, nil)
	want := "[{10.0.0.0/8 tcp/80} {10.1.0.0/16 none} {10.1.0.5/32 tcp/443} {10.3.0.5/32 tcp/80,tcp/443}]"
	if s := fmt.Sprint(got); s != want {
		t.Errorf("entries\n got %s\nwant %s", s, want)
	}
}

func TestPortSet(t *testing.T) {
	a := PortSet{Ranges: []PortRange{{ProtoTCP, 80, 90}, {ProtoUDP, 53, 53}}}
	b := PortSet{Ranges: []PortRange{{ProtoTCP, 91, 100}, {ProtoTCP, 85, 86}}}
	if got, want := a.Union(b).Key(), "tcp/80-100,udp/53"; got != want {
		t.Errorf("union %s, want %s", got, want)
	}
	if got, want := a.Intersect(b).Key(), "tcp/85-86"; got != want {
		t.Errorf("intersect %s, want %s", got, want)
	}
	if got, want := AnyPort.Intersect(a).Key(), a.Key(); got != want {
		t.Errorf("any ∩ a = %s, want %s", got, want)
	}
	if got := (PortSet{Ranges: []PortRange{{ProtoTCP, 0, 65535}}}).Key(); got != "tcp" {
		t.Errorf("every TCP port renders %q", got)
	}
}

// The shortcut for pod-only grants says what the general path says.
func TestFlattenPodsShortcut(t *testing.T) {
	tcp := func(p uint16) PortSet { return PortSet{Ranges: []PortRange{{ProtoTCP, p, p}}} }
	var grants []grant
	for i := range 50 {
		ip := netip.AddrFrom4([4]byte{10, 244, byte(i % 7), byte(i % 11)})
		ports := tcp(uint16(8000 + i%3))
		switch i % 5 {
		case 0:
			ports = AnyPort
		case 1:
			ports = PortSet{}
		}
		grants = append(grants, grant{pod: ip, ports: ports})
	}
	if a, b := fmt.Sprint(flattenPods(grants)), fmt.Sprint(flattenPrefixes(grants, nil)); a != b {
		t.Errorf("shortcut\n %s\ngeneral\n %s", a, b)
	}
}
