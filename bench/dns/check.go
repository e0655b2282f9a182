package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// exchange asks addr one question over UDP.
func exchange(addr string, q question) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(q.name, q.qtype)
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", addr, q, err)
	}
	return r, nil
}

// waitServing polls until addr answers every question in probe with at
// least one record: the server has synced the whole fixture set.
func waitServing(ctx context.Context, p *dnsServer, probe []question) error {
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		if err := p.Alive(); err != nil {
			return err
		}
		ok := true
		for _, q := range probe {
			r, err := exchange(p.addr, q)
			if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
				ok = false
				last = fmt.Sprintf("%s: %v %v", q, err, r)
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s does not serve the fixture after 2m; last: %s\n%s", p.Name, last, p.Tail())
}

// answerKey is what must be equal between servers for one question: the
// response code and the answer's records, TTLs aside and in a fixed order.
// SRV priority and weight are left out: the spec leaves them to the server.
func answerKey(r *dns.Msg) string {
	var rrs []string
	for _, rr := range r.Answer {
		rr = dns.Copy(rr)
		rr.Header().Ttl = 0
		if srv, ok := rr.(*dns.SRV); ok {
			srv.Priority, srv.Weight = 0, 0
		}
		rrs = append(rrs, strings.ToLower(rr.String()))
	}
	slices.Sort(rrs)
	return dns.RcodeToString[r.Rcode] + " [" + strings.Join(rrs, "; ") + "]"
}

// compareAnswers asks every distinct question of qs of each server and
// returns the questions on which a server disagrees with the first: a
// benchmark only compares servers that give the same answers.
func compareAnswers(servers []*dnsServer, qs []question) ([]string, int, error) {
	seen := map[question]bool{}
	var diffs []string
	for _, q := range qs {
		if seen[q] {
			continue
		}
		seen[q] = true
		var want string
		for i, s := range servers {
			r, err := exchange(s.addr, q)
			if err != nil {
				return nil, 0, err
			}
			got := answerKey(r)
			if i == 0 {
				want = got
			} else if got != want {
				diffs = append(diffs, fmt.Sprintf("%s:\n    %s: %s\n    %s: %s", q, servers[0].Name, want, s.Name, got))
			}
		}
	}
	return diffs, len(seen), nil
}
