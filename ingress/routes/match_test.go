package routes

import (
	"net/http"
	"testing"
)

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "",
		"Example.COM":      "example.com",
		"example.com:8080": "example.com",
		"example.com.":     "example.com",
		"[::1]:80":         "::1",
		"[fd00::1]":        "[fd00::1]",
		"10.0.0.1:443":     "10.0.0.1",
	} {
		if got := NormalizeHost(in); got != want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"":             "/",
		"/":            "/",
		"/a/b/":        "/a/b/",
		"/a/../b":      "/b",
		"/a/./b/":      "/a/b/",
		"//a///b":      "/a/b",
		"/../../etc":   "/etc",
		"a/b":          "/a/b",
		"/a/b.txt":     "/a/b.txt",
		"/a/.hidden/x": "/a/.hidden/x",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRewritePath(t *testing.T) {
	cases := []struct {
		mod           PathModifier
		path, matched string
		want          string
	}{
		{PathModifier{Full: "/new"}, "/old/x", "/old", "/new"},
		{PathModifier{Prefix: "/one", ReplacePrefix: true}, "/prefix/one/two", "/prefix/one", "/one/two"},
		{PathModifier{Prefix: "/one", ReplacePrefix: true}, "/prefix/one", "/prefix/one", "/one"},
		{PathModifier{Prefix: "/one", ReplacePrefix: true}, "/prefix/one/", "/prefix/one", "/one/"},
		{PathModifier{Prefix: "/one/", ReplacePrefix: true}, "/prefix/one/two", "/prefix/one", "/one/two"},
		{PathModifier{Prefix: "/", ReplacePrefix: true}, "/strip/three", "/strip", "/three"},
		{PathModifier{Prefix: "/", ReplacePrefix: true}, "/strip", "/strip", "/"},
		{PathModifier{Prefix: "", ReplacePrefix: true}, "/strip/x", "/strip", "/x"},
		{PathModifier{Prefix: "/new", ReplacePrefix: true}, "/any/path", "/", "/new/any/path"},
	}
	for _, c := range cases {
		if got := RewritePath(&c.mod, c.path, c.matched); got != c.want {
			t.Errorf("RewritePath(%+v, %q, %q) = %q, want %q", c.mod, c.path, c.matched, got, c.want)
		}
	}
}

func TestPickWeights(t *testing.T) {
	a, b, z := &Backend{Name: "a"}, &Backend{Name: "b"}, &Backend{Name: "z"}
	rt := &Route{Backends: []WeightedBackend{{Backend: a, Weight: 90}, {Backend: z, Weight: 0}, {Backend: b, Weight: 10}}}
	rt.finish()
	counts := map[string]int{}
	const n = 20000
	for i := 0; i < n; i++ {
		counts[rt.Pick().Name]++
	}
	// 10 % of 20,000 has a standard deviation of ~42; allow 5 of them.
	if counts["z"] != 0 || counts["b"] < 1790 || counts["b"] > 2210 {
		t.Errorf("picks = %v, want about 18000/2000 and none for weight 0", counts)
	}
	none := &Route{Backends: []WeightedBackend{{Backend: a, Weight: 0}}}
	none.finish()
	if none.Pick() != nil {
		t.Errorf("all-zero weights picked a backend")
	}
}

func TestMatchConditions(t *testing.T) {
	m := Match{
		Method:  http.MethodPost,
		Headers: []StringMatch{{Name: "X-Version", Value: "v2"}},
		Query:   []StringMatch{{Name: "debug", Value: "1"}},
	}
	cases := []struct {
		r    *http.Request
		want bool
	}{
		{req("POST", "h", "/?debug=1", "X-Version", "v2"), true},
		{req("GET", "h", "/?debug=1", "X-Version", "v2"), false},
		{req("POST", "h", "/?debug=2", "X-Version", "v2"), false},
		{req("POST", "h", "/?debug=1&debug=2", "X-Version", "v2"), true},
		{req("POST", "h", "/", "X-Version", "v2"), false},
		{req("POST", "h", "/?debug=1", "X-Version", "V2"), false},
		{req("POST", "h", "/?debug=1"), false},
		{req("POST", "h", "/?debug=1", "X-Version", "v1", "X-Version", "v2"), false}, // joined: "v1,v2"
	}
	for i, c := range cases {
		if got := m.conditions(c.r); got != c.want {
			t.Errorf("case %d (%s %s %v): %v, want %v", i, c.r.Method, c.r.URL, c.r.Header, got, c.want)
		}
	}
}
