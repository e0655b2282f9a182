package routes

import (
	"fmt"
	"net/http"
	"regexp"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// httpRoute attaches an HTTPRoute to the listeners its parentRefs select
// and compiles its rules for each of them.
func (b *builder) httpRoute(in *GatewayInput, hr *gatewayv1.HTTPRoute, listeners map[types.NamespacedName][]*listener, nsLabels map[string]labels.Set, st *GatewayStatus) {
	key := types.NamespacedName{Namespace: hr.Namespace, Name: hr.Name}
	name := "httproute/" + hr.Namespace + "/" + hr.Name
	var compiled []*Route
	var resolved = cond(string(gatewayv1.RouteConditionResolvedRefs), true, string(gatewayv1.RouteReasonResolvedRefs), "", hr.Generation)
	compileOnce := func() {
		if compiled != nil {
			return
		}
		compiled, resolved = b.compileRules(in, hr, name)
	}
	for _, ref := range hr.Spec.ParentRefs {
		if (ref.Group != nil && *ref.Group != gatewayGroup) || (ref.Kind != nil && *ref.Kind != "Gateway") {
			continue
		}
		ns := hr.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		ls, ours := listeners[types.NamespacedName{Namespace: ns, Name: string(ref.Name)}]
		if !ours {
			// another controller's Gateway, or none: not ours to report on
			continue
		}
		ps := gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: gatewayv1.GatewayController(b.gatewayController(in))}
		reason := string(gatewayv1.RouteReasonNoMatchingParent)
		attached := 0
		for _, l := range ls {
			if ref.SectionName != nil && *ref.SectionName != l.spec.Name {
				continue
			}
			if ref.Port != nil && *ref.Port != l.spec.Port {
				continue
			}
			// Attachment depends on the listener being accepted and
			// admitting the route, not on its being programmed: a listener
			// with an unresolved certificate still counts its routes
			// (attachedRoutes), it just serves none of them.
			if !l.accepted {
				continue
			}
			if !l.allows(hr.Namespace, nsLabels) || !kindAllowed(l) {
				reason = string(gatewayv1.RouteReasonNotAllowedByListeners)
				continue
			}
			hosts := intersect(l.hostname, hr.Spec.Hostnames)
			if len(hosts) == 0 {
				if reason != string(gatewayv1.RouteReasonNotAllowedByListeners) {
					reason = string(gatewayv1.RouteReasonNoMatchingListenerHostname)
				}
				continue
			}
			compileOnce()
			attached++
			l.status.AttachedRoutes++
			if !l.valid {
				continue
			}
			for _, h := range hosts {
				for _, rt := range compiled {
					b.addGateway(l, h, rt)
				}
			}
		}
		var accepted metav1.Condition
		if attached > 0 {
			accepted = cond(string(gatewayv1.RouteConditionAccepted), true, string(gatewayv1.RouteReasonAccepted), "", hr.Generation)
		} else {
			accepted = cond(string(gatewayv1.RouteConditionAccepted), false, reason, "", hr.Generation)
		}
		if compiled == nil {
			// never attached: still report whether its references resolve
			_, resolved = b.compileRules(in, hr, name)
		}
		ps.Conditions = []metav1.Condition{accepted, resolved}
		st.Routes[key] = append(st.Routes[key], ps)
	}
}

func (b *builder) gatewayController(in *GatewayInput) string {
	if in.ControllerName != "" {
		return in.ControllerName
	}
	return GatewayController
}

func kindAllowed(l *listener) bool {
	for _, k := range l.status.SupportedKinds {
		if k.Kind == "HTTPRoute" {
			return true
		}
	}
	return false
}

// addGateway adds a compiled rule match under a Gateway hostname, where a
// wildcard matches names of any depth. The same Route object serves every
// listener and hostname, so precedence ties break by its order.
func (b *builder) addGateway(l *listener, host string, rt *Route) {
	b.t.routes++
	s := &b.t.listeners
	if l.addr.IsValid() {
		s = b.t.gateways[l.addr]
	}
	b.group(&s[l.side], host, false).insert(rt)
}

// compileRules turns an HTTPRoute's rules into Routes, one per match, and
// says whether all references resolved.
func (b *builder) compileRules(in *GatewayInput, hr *gatewayv1.HTTPRoute, name string) ([]*Route, metav1.Condition) {
	resolved := cond(string(gatewayv1.RouteConditionResolvedRefs), true, string(gatewayv1.RouteReasonResolvedRefs), "", hr.Generation)
	bad := func(reason, msg string) {
		if resolved.Status == metav1.ConditionTrue {
			resolved = cond(string(gatewayv1.RouteConditionResolvedRefs), false, reason, msg, hr.Generation)
		}
	}
	var out []*Route
	for ri := range hr.Spec.Rules {
		rule := &hr.Spec.Rules[ri]
		filters, err := b.filters(in, hr, rule.Filters)
		if err != "" {
			b.problem(name, "rule %d: %s", ri, err)
		}
		var backends []WeightedBackend
		for _, ref := range rule.BackendRefs {
			w := int32(1)
			if ref.Weight != nil {
				w = *ref.Weight
			}
			be, reason, msg := b.backendRef(in, hr.Namespace, ref.BackendObjectReference)
			if be == nil {
				bad(reason, msg)
				be = &Backend{Name: msg, Status: http.StatusInternalServerError}
			}
			bf, ferr := b.filters(in, hr, ref.Filters)
			if ferr != "" {
				b.problem(name, "rule %d backend %s: %s", ri, ref.Name, ferr)
			}
			backends = append(backends, WeightedBackend{Backend: be, Weight: w, Filters: bf})
		}
		timeouts, terr := compileTimeouts(rule.Timeouts)
		if terr != nil {
			b.problem(name, "rule %d: %v", ri, terr)
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.HTTPRouteMatch{{}}
		}
		for mi := range matches {
			m, err := compileMatch(&matches[mi])
			if err != nil {
				b.problem(name, "rule %d match %d: %v", ri, mi, err)
				continue
			}
			rt := &Route{Name: name, Match: m, Filters: filters, Backends: backends, Timeouts: timeouts}
			rt.order = b.order
			b.order++
			rt.finish()
			out = append(out, rt)
		}
	}
	if out == nil {
		out = []*Route{}
	}
	return out, resolved
}

// compileTimeouts reads a rule's timeouts (GEP-2257 durations, which
// time.ParseDuration reads; zero disables one).
func compileTimeouts(t *gatewayv1.HTTPRouteTimeouts) (Timeouts, error) {
	var out Timeouts
	if t == nil {
		return out, nil
	}
	for _, f := range []struct {
		field string
		in    *gatewayv1.Duration
		out   *time.Duration
	}{{"timeouts.request", t.Request, &out.Request}, {"timeouts.backendRequest", t.BackendRequest, &out.BackendRequest}} {
		if f.in == nil {
			continue
		}
		d, err := time.ParseDuration(string(*f.in))
		if err != nil || d < 0 {
			return Timeouts{}, fmt.Errorf("%s %q: want a duration such as 10s or 500ms", f.field, *f.in)
		}
		*f.out = d
	}
	return out, nil
}

func compileMatch(m *gatewayv1.HTTPRouteMatch) (Match, error) {
	var out Match
	out.Path = PathMatch{Type: Prefix, Value: "/"}
	if p := m.Path; p != nil {
		v := "/"
		if p.Value != nil {
			v = *p.Value
		}
		t := gatewayv1.PathMatchPathPrefix
		if p.Type != nil {
			t = *p.Type
		}
		switch t {
		case gatewayv1.PathMatchExact:
			out.Path = PathMatch{Type: Exact, Value: v}
		case gatewayv1.PathMatchRegularExpression:
			re, err := regexp.Compile("^(?:" + v + ")$")
			if err != nil {
				return out, fmt.Errorf("path regular expression: %w", err)
			}
			out.Path = PathMatch{Type: Regex, Value: v, re: re}
		default:
			out.Path = PathMatch{Type: Prefix, Value: normalizePrefix(v)}
		}
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	seen := map[string]bool{}
	for _, h := range m.Headers {
		n := http.CanonicalHeaderKey(string(h.Name))
		if seen[n] {
			continue // the first of equal names counts, as the API says
		}
		seen[n] = true
		sm := StringMatch{Name: n, Value: h.Value}
		if h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression {
			re, err := regexp.Compile(h.Value)
			if err != nil {
				return out, fmt.Errorf("header %s regular expression: %w", n, err)
			}
			sm.re = re
		}
		out.Headers = append(out.Headers, sm)
	}
	seen = map[string]bool{}
	for _, q := range m.QueryParams {
		n := string(q.Name)
		if seen[n] {
			continue
		}
		seen[n] = true
		sm := StringMatch{Name: n, Value: q.Value}
		if q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression {
			re, err := regexp.Compile(q.Value)
			if err != nil {
				return out, fmt.Errorf("query %s regular expression: %w", n, err)
			}
			sm.re = re
		}
		out.Query = append(out.Query, sm)
	}
	return out, nil
}

// backendRef resolves a Service reference of an HTTPRoute; on failure it
// returns the RouteReason and a message.
func (b *builder) backendRef(in *GatewayInput, routeNS string, ref gatewayv1.BackendObjectReference) (*Backend, string, string) {
	if (ref.Group != nil && *ref.Group != "" && *ref.Group != "core") || (ref.Kind != nil && *ref.Kind != "Service") {
		return nil, string(gatewayv1.RouteReasonInvalidKind), fmt.Sprintf("backendRef %s: only Services are supported", ref.Name)
	}
	ns := routeNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	if ns != routeNS && !granted(in, "HTTPRoute", routeNS, "", "Service", ns, string(ref.Name)) {
		return nil, string(gatewayv1.RouteReasonRefNotPermitted), fmt.Sprintf("no ReferenceGrant allows Service %s/%s", ns, ref.Name)
	}
	if ref.Port == nil {
		return nil, string(gatewayv1.RouteReasonUnsupportedValue), fmt.Sprintf("backendRef %s/%s: port is required", ns, ref.Name)
	}
	be, err := b.backend(ns, string(ref.Name), servicePort{Number: *ref.Port})
	if err != nil {
		return nil, string(gatewayv1.RouteReasonBackendNotFound), err.Error()
	}
	return be, "", ""
}

// filters compiles HTTPRoute filters; the string reports ignored ones.
func (b *builder) filters(in *GatewayInput, hr *gatewayv1.HTTPRoute, fs []gatewayv1.HTTPRouteFilter) (Filters, string) {
	var out Filters
	var ignored string
	for _, f := range fs {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			out.RequestHeaders = headerModifier(f.RequestHeaderModifier)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			out.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			if r := f.RequestRedirect; r != nil {
				rd := &Redirect{Path: pathModifier(r.Path)}
				if r.Scheme != nil {
					rd.Scheme = *r.Scheme
				}
				if r.Hostname != nil {
					rd.Hostname = string(*r.Hostname)
				}
				if r.Port != nil {
					rd.Port = *r.Port
				}
				if r.StatusCode != nil {
					rd.Status = *r.StatusCode
				}
				out.Redirect = rd
			}
		case gatewayv1.HTTPRouteFilterURLRewrite:
			if r := f.URLRewrite; r != nil {
				rw := &Rewrite{Path: pathModifier(r.Path)}
				if r.Hostname != nil {
					rw.Hostname = string(*r.Hostname)
				}
				out.Rewrite = rw
			}
		case gatewayv1.HTTPRouteFilterRequestMirror:
			if m := f.RequestMirror; m != nil {
				if be, _, msg := b.backendRef(in, hr.Namespace, m.BackendRef); be != nil {
					out.Mirrors = append(out.Mirrors, be)
				} else {
					ignored += "mirror: " + msg + "; "
				}
			}
		default:
			ignored += string(f.Type) + " is not supported; "
		}
	}
	return out, ignored
}

func headerModifier(f *gatewayv1.HTTPHeaderFilter) *HeaderModifier {
	if f == nil {
		return nil
	}
	m := &HeaderModifier{}
	for _, h := range f.Set {
		m.Set = append(m.Set, Header{Name: http.CanonicalHeaderKey(string(h.Name)), Value: h.Value})
	}
	for _, h := range f.Add {
		m.Add = append(m.Add, Header{Name: http.CanonicalHeaderKey(string(h.Name)), Value: h.Value})
	}
	for _, h := range f.Remove {
		m.Remove = append(m.Remove, http.CanonicalHeaderKey(h))
	}
	return m
}

func pathModifier(p *gatewayv1.HTTPPathModifier) *PathModifier {
	if p == nil {
		return nil
	}
	switch p.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath != nil {
			return &PathModifier{Full: *p.ReplaceFullPath}
		}
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch != nil {
			return &PathModifier{Prefix: *p.ReplacePrefixMatch, ReplacePrefix: true}
		}
	}
	return nil
}
