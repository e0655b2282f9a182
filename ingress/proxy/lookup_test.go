package proxy

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/skiffnet/skiff/ingress/routes"
)

// The route lookup on the lean path allocates nothing for the requests
// that make up most traffic (host and path; mixed-case hosts are lowered
// with a copy).
func TestRouteLookupAllocatesNothing(t *testing.T) {
	var w world
	w.service("a", "", "127.0.0.1:1")
	w.service("b", "", "127.0.0.1:2")
	w.ingress("ia", "foo.example.com", "/", "a")
	w.ingress("ib", "foo.example.com", "/api", "b")
	w.ingress("ic", "*.example.org", "/", "a")
	tab := w.table(t)
	for _, c := range []struct{ host, path, want string }{
		{"foo.example.com", "/api/v1/items", "ingress/default/ib"},
		{"foo.example.com:8080", "/index.html", "ingress/default/ia"},
		{"x.example.org", "/", "ingress/default/ic"},
	} {
		r, err := http.NewRequest(http.MethodGet, "http://"+c.host+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		var rt *routes.Route
		allocs := testing.AllocsPerRun(100, func() { rt = tab.Match(routes.HTTP, netip.Addr{}, r) })
		if rt == nil || rt.Name != c.want {
			t.Fatalf("%s%s: route %v, want %s", c.host, c.path, rt, c.want)
		}
		if allocs != 0 {
			t.Errorf("%s%s: %v allocations per lookup, want 0", c.host, c.path, allocs)
		}
	}
}
