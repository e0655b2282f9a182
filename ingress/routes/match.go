package routes

import (
	"net"
	"net/http"
	"path"
	"regexp"
	"strings"
)

// PathType is how a route's path compares with a request's.
type PathType uint8

const (
	// Prefix matches element-wise: /foo matches /foo, /foo/ and /foo/bar,
	// never /foobar. A trailing slash in the route's path is ignored.
	Prefix PathType = iota
	// Exact matches the path only, case-sensitive.
	Exact
	// Regex is the Gateway API's RegularExpression (RE2, whole path).
	Regex
)

// PathMatch is a route's path condition. Value is normalized: no trailing
// slash except for "/".
type PathMatch struct {
	Type  PathType
	Value string
	re    *regexp.Regexp
}

// matchPrefix reports whether the cleaned request path p is within prefix.
func (m *PathMatch) matchPrefix(p string) bool {
	v := m.Value
	if v == "/" {
		return true
	}
	if !strings.HasPrefix(p, v) {
		return false
	}
	return len(p) == len(v) || p[len(v)] == '/'
}

// StringMatch compares a header or query value, exactly or by RE2.
type StringMatch struct {
	Name  string // canonical header name, or query parameter name
	Value string
	re    *regexp.Regexp
}

func (m *StringMatch) matches(v string) bool {
	if m.re != nil {
		return m.re.MatchString(v)
	}
	return v == m.Value
}

// Match is all conditions of one route; all must hold.
type Match struct {
	Path    PathMatch
	Method  string
	Headers []StringMatch
	Query   []StringMatch
}

// conditions checks everything but the path, which the group index checks.
func (m *Match) conditions(r *http.Request) bool {
	if m.Method != "" && r.Method != m.Method {
		return false
	}
	for i := range m.Headers {
		h := &m.Headers[i]
		vs := r.Header[h.Name]
		if len(vs) == 0 {
			return false
		}
		// Repeated headers compare as their comma-joined value (RFC 9110
		// 5.3), which is what the Gateway API asks.
		v := vs[0]
		if len(vs) > 1 {
			v = strings.Join(vs, ",")
		}
		if !h.matches(v) {
			return false
		}
	}
	if len(m.Query) > 0 {
		q := r.URL.Query()
		for i := range m.Query {
			vs, ok := q[m.Query[i].Name]
			// the first value decides, as the Gateway API allows
			if !ok || !m.Query[i].matches(vs[0]) {
				return false
			}
		}
	}
	return true
}

// NormalizeHost returns the lowercased host of a Host header or server name
// without port or trailing dot.
func NormalizeHost(h string) string {
	if h == "" {
		return ""
	}
	if strings.LastIndexByte(h, ':') > strings.LastIndexByte(h, ']') {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// cleanPath returns the path that routes compare with: dot segments and
// doubled slashes resolved, so /public/../admin cannot reach an /admin
// backend through a /public route. A trailing slash is kept because Exact
// tells /foo from /foo/. The request itself is forwarded unchanged.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if !needsClean(p) {
		return p
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func needsClean(p string) bool {
	if p[0] != '/' {
		return true
	}
	for i := 1; i < len(p); i++ {
		if p[i] == '/' && (p[i-1] == '/') {
			return true
		}
		if p[i] == '.' && p[i-1] == '/' {
			return true
		}
	}
	return false
}

// normalizePrefix is a route prefix without trailing slash ("/" stays).
func normalizePrefix(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	for len(p) > 1 && strings.HasSuffix(p, "/") {
		p = p[:len(p)-1]
	}
	return p
}
