package server

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// The query counter's children are resolved once into an array, so counting
// a query on the hot path is one atomic add, not a label lookup.
var (
	metricTypes  = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeTXT, dns.TypeCNAME, dns.TypeSOA, dns.TypeNS, dns.TypeMX, dns.TypeANY}
	metricRcodes = []int{dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeFormatError, dns.RcodeNotImplemented}
)

const (
	otherType  = "other"
	otherRcode = "other"
)

type metrics struct {
	queries [][]prometheus.Counter // [type index][rcode index], last of each is "other"
	dropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skiff_dns_queries_total",
		Help: "DNS queries answered by the node's cluster DNS, by query type and response code.",
	}, []string{"type", "rcode"})
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "skiff_dns_dropped_total",
		Help: "DNS packets dropped unanswered: malformed, responses, or over the slow-path concurrency limit.",
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{vec, dropped} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	m := &metrics{dropped: dropped}
	types := make([]string, 0, len(metricTypes)+1)
	for _, t := range metricTypes {
		types = append(types, dns.TypeToString[t])
	}
	rcodes := make([]string, 0, len(metricRcodes)+1)
	for _, r := range metricRcodes {
		rcodes = append(rcodes, dns.RcodeToString[r])
	}
	for _, t := range append(types, otherType) {
		row := make([]prometheus.Counter, 0, len(rcodes)+1)
		for _, r := range append(rcodes, otherRcode) {
			row = append(row, vec.WithLabelValues(t, r))
		}
		m.queries = append(m.queries, row)
	}
	return m, nil
}

func (m *metrics) count(qtype uint16, rcode int) {
	ti := len(metricTypes)
	for i, t := range metricTypes {
		if t == qtype {
			ti = i
			break
		}
	}
	ri := len(metricRcodes)
	for i, r := range metricRcodes {
		if r == rcode {
			ri = i
			break
		}
	}
	m.queries[ti][ri].Inc()
}
