package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// runResolve is the image's resolver mode, for tests of cluster DNS under
// restarts: it looks name up (A records, through the pod's resolv.conf)
// every interval for ever and prints its running totals once a second.
// A lookup that errs is a failure; NXDOMAIN for a name that exists is also
// counted apart as wrong, the worse of the two. slowest_ms is the longest
// lookup since the previous line: a query the server dropped shows there as
// a retry.
func runResolve(name string, interval time.Duration) int {
	var total, failed, wrong int
	var slowest time.Duration
	report := time.NewTicker(time.Second)
	defer report.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		ips, err := net.DefaultResolver.LookupIP(ctx, "ip4", name)
		slowest = max(slowest, time.Since(start))
		cancel()
		total++
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			wrong++
			fmt.Println("wrong", name, err)
		case err != nil:
			failed++
			fmt.Println("error", name, err)
		case len(ips) == 0:
			wrong++
			fmt.Println("wrong", name, "no addresses")
		}
		select {
		case <-report.C:
			fmt.Printf("resolve total=%d failed=%d wrong=%d slowest_ms=%d\n", total, failed, wrong, slowest.Milliseconds())
			slowest = 0
		default:
		}
		<-tick.C
	}
}
