package main

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/proxy/lbmap"
	"github.com/skiffnet/skiff/proxy/model"
)

type ebpfLB struct {
	objs *bpf.Objects
	fs   string // the bpf filesystem mount
	pins string
	prog programming
}

// programming is the control side's cost: model and apply, as the agent
// does per Service after an informer event (the API server's own watch
// latency is not included).
type programming struct {
	fullSync time.Duration
	p50, p99 time.Duration
	rssMiB   float64
	entries  [3]int
}

func (l *ebpfLB) close() {
	l.objs.Close()
	bpf.Remove(l.pins)
	unix.Unmount(l.fs, 0)
	os.Remove(l.fs)
}

var node = model.Node{Name: "bench", IPs: []netip.Addr{netip.MustParseAddr(backendIP)}}

func svcObjects(i int, eps []netip.AddrPort) (*v1.Service, *discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("svc-%d", i)
	ip := fmt.Sprintf("10.96.%d.%d", 1+i/250, 1+i%250)
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
		Spec: v1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []v1.ServicePort{{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}}},
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, ep := range eps {
		sl.Ports = []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(ep.Port())), Protocol: ptr.To(v1.ProtocolTCP)}}
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{ep.Addr().String()}, NodeName: ptr.To("other"),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	return svc, sl
}

func podAddr(svc, ep int) netip.AddrPort {
	n := svc*64 + ep
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(64 + n>>16), byte(n >> 8), byte(n)}), 8080)
}

// loadEBPF loads the programs into cgroup cg with the other Services and
// the measured one (ebpfVIP over the backends), timing a full sync and
// then single-endpoint changes.
func loadEBPF(cg string, backends []uint16) (*ebpfLB, error) {
	fs := filepath.Join(os.TempDir(), fmt.Sprintf("skiff-bench-bpffs-%d", os.Getpid()))
	if err := bpf.MountBPFFS(fs); err != nil { // private to this mount namespace
		return nil, err
	}
	pins := filepath.Join(fs, "bench")
	objs, err := bpf.Load(pins)
	if err != nil {
		unix.Unmount(fs, 0)
		os.Remove(fs)
		return nil, err
	}
	l := &ebpfLB{objs: objs, fs: fs, pins: pins}
	if err := objs.Attach(cg); err != nil {
		l.close()
		return nil, err
	}
	a := lbmap.New(lbmap.TablesOf(&objs.Maps), lbmap.Snapshot{})

	type obj struct {
		svc *v1.Service
		sl  *discoveryv1.EndpointSlice
	}
	all := make([]obj, *services)
	for i := range all {
		var eps []netip.AddrPort
		for e := range *endpoints {
			eps = append(eps, podAddr(i, e))
		}
		all[i].svc, all[i].sl = svcObjects(i, eps)
	}
	start := time.Now()
	for _, o := range all {
		if _, err := a.Apply(types.NamespacedName{Namespace: "bench", Name: o.svc.Name}, model.Service(o.svc, []*discoveryv1.EndpointSlice{o.sl}, node, model.Options{})); err != nil {
			l.close()
			return nil, err
		}
	}
	l.prog.fullSync = time.Since(start)

	// Changes: one endpoint of a random Service replaced.
	rng := rand.New(rand.NewPCG(1, 1))
	var lats []time.Duration
	for c := range *changes {
		i := rng.IntN(len(all))
		o := all[i]
		sl := o.sl.DeepCopy()
		sl.Endpoints[rng.IntN(len(sl.Endpoints))].Addresses = []string{fmt.Sprintf("10.200.%d.%d", c>>8&255, c&255)}
		all[i].sl = sl
		t := time.Now()
		if _, err := a.Apply(types.NamespacedName{Namespace: "bench", Name: o.svc.Name}, model.Service(o.svc, []*discoveryv1.EndpointSlice{sl}, node, model.Options{})); err != nil {
			l.close()
			return nil, err
		}
		lats = append(lats, time.Since(t))
	}
	slices.Sort(lats)
	l.prog.p50, l.prog.p99 = lats[len(lats)/2], lats[len(lats)*99/100]
	l.prog.rssMiB = rssMiB()
	f, b, s := a.Occupancy()
	l.prog.entries = [3]int{f, b, s}

	// The measured Service.
	vip := netip.MustParseAddrPort(ebpfVIP)
	fe := model.Frontend{Key: model.Key{Addr: vip.Addr(), Port: vip.Port(), Proto: model.TCP, Scope: model.Internal}}
	for _, p := range backends {
		fe.Backends = append(fe.Backends, netip.AddrPortFrom(netip.MustParseAddr(backendIP), p))
	}
	if _, err := a.Apply(types.NamespacedName{Namespace: "bench", Name: "measured"}, []model.Frontend{fe}); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	var kb float64
	for _, line := range strings.Split(string(b), "\n") {
		if n, _ := fmt.Sscanf(line, "VmRSS: %f kB", &kb); n == 1 {
			return kb / 1024
		}
	}
	return 0
}
