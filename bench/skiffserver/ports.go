package skiffserver

import (
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
)

// tries bounds the random search for free ports: on a machine where 500
// random ports in 20000-39999 are all taken, something else is wrong.
const tries = 500

// FreePorts returns n distinct loopback ports, each free right now for both
// TCP and UDP (a DNS server listens on both). They are picked at random in
// 20000-39999, away from the kernel's ephemeral range, so that two
// benchmarks on one machine are unlikely to pick the same ones.
func FreePorts(n int) ([]int, error) {
	var ports []int
	for i := 0; len(ports) < n; i++ {
		if i == tries {
			return nil, errors.New("no free loopback ports")
		}
		p := 20000 + rand.IntN(20000)
		if free(p) && !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// freeRun returns a base port p such that p..p+n-1 are all free: the
// embedded etcd takes its peer port right after its client port.
func freeRun(n int) (int, error) {
	for range tries {
		base := 20000 + rand.IntN(20000)
		ok := true
		for i := range n {
			ok = ok && free(base+i)
		}
		if ok {
			return base, nil
		}
	}
	return 0, errors.New("no free run of loopback ports")
}

// free reports whether port is free on 127.0.0.1 for TCP and UDP.
func free(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
