package profiling

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestServeHeapProfile(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// debug=1 is the text form `go tool pprof` also reads.
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile:") {
		t.Fatalf("GET heap profile: %s\n%.200s", resp.Status, body)
	}
	cancel()
}

func TestServeOffByDefault(t *testing.T) {
	addr, err := Serve(context.Background(), "", slog.New(slog.DiscardHandler))
	if err != nil || addr != "" {
		t.Fatalf("Serve(\"\") = %q, %v; want nothing served", addr, err)
	}
}

func TestCheckAddrRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "10.0.0.1:6060", "example.com:6060", "6060"} {
		if err := CheckAddr(addr); err == nil {
			t.Errorf("CheckAddr(%q) accepted an address other machines may reach", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:6060", "[::1]:6060", "localhost:6060"} {
		if err := CheckAddr(addr); err != nil {
			t.Errorf("CheckAddr(%q): %v", addr, err)
		}
	}
}
