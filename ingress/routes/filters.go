package routes

import "net/http"

// Filters are the Gateway API's HTTPRoute filters, resolved. The proxy
// applies them in this order: redirect (which ends the request), request
// headers, URL rewrite, then response headers on the way back.
type Filters struct {
	RequestHeaders  *HeaderModifier
	ResponseHeaders *HeaderModifier
	Redirect        *Redirect
	Rewrite         *Rewrite
	// Mirrors receive a copy of each request; their responses are ignored.
	Mirrors []*Backend
}

// Empty reports whether f does nothing.
func (f *Filters) Empty() bool {
	return f.RequestHeaders == nil && f.ResponseHeaders == nil && f.Redirect == nil && f.Rewrite == nil && len(f.Mirrors) == 0
}

// HeaderModifier sets, adds and removes headers. Names are canonical.
type HeaderModifier struct {
	Set    []Header
	Add    []Header
	Remove []string
}

// Header is one name and value.
type Header struct{ Name, Value string }

// Apply modifies h in the order of the specification: set, add, remove.
func (m *HeaderModifier) Apply(h http.Header) {
	if m == nil {
		return
	}
	for _, s := range m.Set {
		h[s.Name] = []string{s.Value}
	}
	for _, a := range m.Add {
		h[a.Name] = append(h[a.Name], a.Value)
	}
	for _, r := range m.Remove {
		delete(h, r)
	}
}

// PathModifier replaces the full path or the matched prefix.
type PathModifier struct {
	// Full replaces the whole path when ReplacePrefix is false.
	Full string
	// Prefix replaces the route's matched prefix when ReplacePrefix is true.
	Prefix        string
	ReplacePrefix bool
}

// Redirect answers with a redirect instead of proxying. Empty fields keep
// the request's value.
type Redirect struct {
	Scheme   string
	Hostname string
	Port     int32 // 0: the request's, or the scheme's default
	Path     *PathModifier
	Status   int // 301 or 302 (default 302)
}

// Rewrite changes the request before it goes to the backend.
type Rewrite struct {
	Hostname string
	Path     *PathModifier
}

// RewritePath applies a path modifier to path p that matched prefix.
func RewritePath(m *PathModifier, p, matched string) string {
	if m == nil {
		return p
	}
	if !m.ReplacePrefix {
		return m.Full
	}
	rest := p
	if matched != "/" {
		// matched is a whole element prefix of p (or p with a trailing slash)
		if len(p) >= len(matched) {
			rest = p[len(matched):]
		} else {
			rest = ""
		}
	}
	repl := m.Prefix
	switch {
	case rest == "" || rest == "/":
		if repl == "" {
			return "/"
		}
		if rest == "/" && repl[len(repl)-1] != '/' {
			return repl + "/"
		}
		return repl
	case repl == "" || repl == "/":
		return rest
	case repl[len(repl)-1] == '/':
		return repl + rest[1:]
	}
	return repl + rest
}
