package proxy

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxyHTTP1 measures one keep-alive GET through the proxy to a
// loopback backend (client and backend in the same process, so compare
// runs with each other, not with bench/ingress/run.sh).
//
//	go test ./ingress/proxy -run - -bench ProxyHTTP1/lean -cpu 1 -cpuprofile cpu.out
//
// The nethttp case is the same proxy with the lean server path off.
func BenchmarkProxyHTTP1(b *testing.B) {
	for _, c := range []struct {
		name    string
		netHTTP bool
	}{{"lean", false}, {"nethttp", true}} {
		b.Run(c.name, func(b *testing.B) { benchmarkProxy(b, c.netHTTP) })
	}
}

func benchmarkProxy(b *testing.B, netHTTP bool) {
	body := []byte(`{"status":"ok"}`)
	be := startBackend(b, "a", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}), false)
	var w world
	w.service("a", "", be.addr)
	w.ingress("ia", "bench.local", "/", "a")
	p := startProxy(b, Options{NetHTTPOnly: netHTTP}, w.table(b))
	req, _ := http.NewRequest(http.MethodGet, p.httpURL+"/", nil)
	req.Host = "bench.local"
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := plainClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
