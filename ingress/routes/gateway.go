package routes

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// GatewayInput holds the Gateway API objects a Table is built from.
type GatewayInput struct {
	// ControllerName selects GatewayClasses (default GatewayController).
	ControllerName string
	// HTTPPort and HTTPSPort are the proxy's ports: HTTP listeners on
	// HTTPPort and HTTPS listeners on HTTPSPort are programmed, others are
	// reported PortUnavailable.
	HTTPPort, HTTPSPort int32

	Classes         []*gatewayv1.GatewayClass
	Gateways        []*gatewayv1.Gateway
	HTTPRoutes      []*gatewayv1.HTTPRoute
	ReferenceGrants []*gatewayv1beta1.ReferenceGrant
	// Namespaces resolve allowedRoutes namespace selectors.
	Namespaces []*corev1.Namespace
}

// GatewayStatus is the status Build computed for the Gateway API objects
// this controller owns. Condition times are left zero: the writer keeps
// those of unchanged conditions.
type GatewayStatus struct {
	Classes  map[string][]metav1.Condition
	Gateways map[types.NamespacedName]*gatewayv1.GatewayStatus
	// Routes holds, per HTTPRoute, the status of each parentRef that names
	// one of our Gateways.
	Routes map[types.NamespacedName][]gatewayv1.RouteParentStatus
}

const gatewayGroup = gatewayv1.GroupName

// listener is one Gateway listener as compiled.
type listener struct {
	gw       *gatewayv1.Gateway
	spec     *gatewayv1.Listener
	status   *gatewayv1.ListenerStatus
	side     Listener
	addr     netip.Addr // the Gateway's own address; zero: the nodes'
	accepted bool       // its Accepted condition: routes may attach and count
	valid    bool       // accepted, resolved and unconflicted: it serves traffic
	hostname string
}

func cond(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionTrue
	if !ok {
		s = metav1.ConditionFalse
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}

func (b *builder) gateways(in *GatewayInput) {
	ctrl := in.ControllerName
	if ctrl == "" {
		ctrl = GatewayController
	}
	if in.HTTPPort == 0 {
		in.HTTPPort = 80
	}
	if in.HTTPSPort == 0 {
		in.HTTPSPort = 443
	}
	st := &GatewayStatus{
		Classes:  map[string][]metav1.Condition{},
		Gateways: map[types.NamespacedName]*gatewayv1.GatewayStatus{},
		Routes:   map[types.NamespacedName][]gatewayv1.RouteParentStatus{},
	}
	b.res.Gateway = st
	ours := map[string]bool{}
	for _, c := range in.Classes {
		if string(c.Spec.ControllerName) != ctrl {
			continue
		}
		ours[c.Name] = true
		st.Classes[c.Name] = []metav1.Condition{
			cond(string(gatewayv1.GatewayClassConditionStatusAccepted), true, string(gatewayv1.GatewayClassReasonAccepted), "Skiff serves this class", c.Generation),
			cond(string(gatewayv1.GatewayClassConditionStatusSupportedVersion), true, string(gatewayv1.GatewayClassReasonSupportedVersion), "", c.Generation),
		}
	}
	nsLabels := map[string]labels.Set{}
	for _, n := range in.Namespaces {
		nsLabels[n.Name] = n.Labels
	}
	listeners := map[types.NamespacedName][]*listener{}
	badAddress := map[types.NamespacedName]string{}
	pending := map[types.NamespacedName]bool{}
	for _, gw := range in.Gateways {
		if !ours[string(gw.Spec.GatewayClassName)] || gw.DeletionTimestamp != nil {
			continue
		}
		key := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
		gs := &gatewayv1.GatewayStatus{}
		st.Gateways[key] = gs
		pending[key] = AddressPending(gw)
		addr, own, err := GatewayAddress(gw)
		if err != nil {
			b.problem("gateway/"+key.String(), "%v", err)
			badAddress[key] = err.Error()
		}
		ls := b.gatewayListeners(in, gw, gs)
		if own {
			ipType := gatewayv1.IPAddressType
			gs.Addresses = []gatewayv1.GatewayStatusAddress{{Type: &ipType, Value: addr.String()}}
			if b.t.gateways == nil {
				b.t.gateways = map[netip.Addr]*site{}
			}
			if b.t.gateways[addr] == nil {
				b.t.gateways[addr] = &site{}
			}
			for _, l := range ls {
				l.addr = addr
			}
		}
		listeners[key] = ls
	}
	routes := append([]*gatewayv1.HTTPRoute(nil), in.HTTPRoutes...)
	sort.Slice(routes, func(i, j int) bool { return Older(routes[i], routes[j]) })
	for _, hr := range routes {
		b.httpRoute(in, hr, listeners, nsLabels, st)
	}
	// Gateway conditions, now that attached route counts are known.
	for key, gs := range st.Gateways {
		gen := int64(0)
		valid, accepted := 0, 0
		for _, l := range listeners[key] {
			gen = l.gw.Generation
			if l.valid {
				valid++
			}
			if l.accepted {
				accepted++
			}
		}
		accReason, progReason := string(gatewayv1.GatewayReasonAccepted), string(gatewayv1.GatewayReasonProgrammed)
		if valid < len(listeners[key]) {
			accReason = string(gatewayv1.GatewayReasonListenersNotValid)
		}
		// A Gateway none of whose listeners could be accepted is not
		// accepted itself (the spec's ListenersNotValid with False).
		gwAccepted := accepted > 0 || len(listeners[key]) == 0
		programmed := valid > 0 || len(listeners[key]) == 0
		if !programmed {
			progReason = string(gatewayv1.GatewayReasonInvalid)
		}
		progMsg := ""
		if pending[key] && programmed {
			programmed, progReason = false, string(gatewayv1.GatewayReasonAddressNotAssigned)
			progMsg = "waiting for the server's address allocator (skiff server runs it) to give this Gateway an address or place it on the nodes' addresses"
		}
		accMsg := ""
		if msg, bad := badAddress[key]; bad {
			// The Gateway is still served on the nodes' addresses, but
			// not where it asked to be.
			gwAccepted, accReason, accMsg = false, string(gatewayv1.GatewayReasonUnsupportedAddress), msg
		}
		gs.Conditions = []metav1.Condition{
			cond(string(gatewayv1.GatewayConditionAccepted), gwAccepted, accReason, accMsg, gen),
			cond(string(gatewayv1.GatewayConditionProgrammed), programmed, progReason, progMsg, gen),
		}
	}
}

// Older orders objects as the API specifications ask when two conflict:
// the older wins, then the first by namespace/name.
func Older(a, c metav1.Object) bool {
	ta, tc := a.GetCreationTimestamp(), c.GetCreationTimestamp()
	if !ta.Equal(&tc) {
		return ta.Before(&tc)
	}
	if a.GetNamespace() != c.GetNamespace() {
		return a.GetNamespace() < c.GetNamespace()
	}
	return a.GetName() < c.GetName()
}

// gatewayListeners validates the listeners of one Gateway and loads their
// certificates.
func (b *builder) gatewayListeners(in *GatewayInput, gw *gatewayv1.Gateway, gs *gatewayv1.GatewayStatus) []*listener {
	var out []*listener
	gen := gw.Generation
	seen := map[string]int{} // port/hostname → count, for conflicts
	for i := range gw.Spec.Listeners {
		ls := &gw.Spec.Listeners[i]
		h := ""
		if ls.Hostname != nil {
			h = NormalizeHost(string(*ls.Hostname))
		}
		seen[strconv.Itoa(int(ls.Port))+"/"+h]++
	}
	// Each listener keeps a pointer into gs.Listeners (routes count
	// themselves on it later): the slice must never reallocate.
	gs.Listeners = make([]gatewayv1.ListenerStatus, 0, len(gw.Spec.Listeners))
	for i := range gw.Spec.Listeners {
		ls := &gw.Spec.Listeners[i]
		l := &listener{gw: gw, spec: ls, valid: true}
		if ls.Hostname != nil {
			l.hostname = NormalizeHost(string(*ls.Hostname))
		}
		gs.Listeners = append(gs.Listeners, gatewayv1.ListenerStatus{Name: ls.Name})
		l.status = &gs.Listeners[len(gs.Listeners)-1]
		accepted, accReason, accMsg := true, string(gatewayv1.ListenerReasonAccepted), ""
		resolved, resReason, resMsg := true, string(gatewayv1.ListenerReasonResolvedRefs), ""
		conflicted := seen[strconv.Itoa(int(ls.Port))+"/"+l.hostname] > 1
		switch {
		case ls.Protocol == gatewayv1.HTTPProtocolType && ls.Port == in.HTTPPort:
			l.side = HTTP
		case ls.Protocol == gatewayv1.HTTPSProtocolType && ls.Port == in.HTTPSPort:
			l.side = HTTPS
		case ls.Protocol != gatewayv1.HTTPProtocolType && ls.Protocol != gatewayv1.HTTPSProtocolType:
			accepted, accReason, accMsg = false, string(gatewayv1.ListenerReasonUnsupportedProtocol), "Skiff serves HTTP and HTTPS listeners"
		default:
			accepted, accReason, accMsg = false, string(gatewayv1.ListenerReasonPortUnavailable), "Skiff's proxy listens on other ports"
		}
		// Route kinds: HTTPRoute is the one Skiff serves.
		var kinds []gatewayv1.RouteGroupKind
		badKind := false
		if ls.AllowedRoutes != nil && len(ls.AllowedRoutes.Kinds) > 0 {
			for _, k := range ls.AllowedRoutes.Kinds {
				if k.Kind == "HTTPRoute" && (k.Group == nil || *k.Group == gatewayGroup) {
					kinds = append(kinds, gatewayv1.RouteGroupKind{Group: ptrTo(gatewayv1.Group(gatewayGroup)), Kind: "HTTPRoute"})
				} else {
					badKind = true
				}
			}
		} else if accepted {
			kinds = []gatewayv1.RouteGroupKind{{Group: ptrTo(gatewayv1.Group(gatewayGroup)), Kind: "HTTPRoute"}}
		}
		if badKind {
			resolved, resReason, resMsg = false, string(gatewayv1.ListenerReasonInvalidRouteKinds), "Skiff serves HTTPRoute only"
		}
		if kinds == nil {
			kinds = []gatewayv1.RouteGroupKind{}
		}
		l.status.SupportedKinds = kinds
		if accepted && l.side == HTTPS {
			if ok, reason, msg := b.listenerCerts(in, gw, ls, l.hostname); !ok {
				resolved, resReason, resMsg = false, reason, msg
			}
		}
		l.accepted = accepted
		l.valid = accepted && resolved && !conflicted && len(kinds) > 0
		progReason := string(gatewayv1.ListenerReasonProgrammed)
		if !l.valid {
			progReason = string(gatewayv1.ListenerReasonInvalid)
		}
		confReason := string(gatewayv1.ListenerReasonNoConflicts)
		if conflicted {
			confReason = string(gatewayv1.ListenerReasonHostnameConflict)
		}
		l.status.Conditions = []metav1.Condition{
			cond(string(gatewayv1.ListenerConditionAccepted), accepted, accReason, accMsg, gen),
			cond(string(gatewayv1.ListenerConditionResolvedRefs), resolved, resReason, resMsg, gen),
			cond(string(gatewayv1.ListenerConditionConflicted), conflicted, confReason, "", gen),
			cond(string(gatewayv1.ListenerConditionProgrammed), l.valid, progReason, "", gen),
		}
		out = append(out, l)
	}
	return out
}

// listenerCerts loads an HTTPS listener's certificates into the table.
func (b *builder) listenerCerts(in *GatewayInput, gw *gatewayv1.Gateway, ls *gatewayv1.Listener, host string) (bool, string, string) {
	if ls.TLS == nil || (ls.TLS.Mode != nil && *ls.TLS.Mode != gatewayv1.TLSModeTerminate) || len(ls.TLS.CertificateRefs) == 0 {
		return false, string(gatewayv1.ListenerReasonInvalidCertificateRef), "HTTPS listeners need tls.mode Terminate and a certificateRef"
	}
	for _, ref := range ls.TLS.CertificateRefs {
		if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret") {
			return false, string(gatewayv1.ListenerReasonInvalidCertificateRef), "certificateRefs must name Secrets"
		}
		ns := gw.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		if ns != gw.Namespace && !granted(in, "Gateway", gw.Namespace, "", "Secret", ns, string(ref.Name)) {
			return false, string(gatewayv1.ListenerReasonRefNotPermitted), "no ReferenceGrant allows Secret " + ns + "/" + string(ref.Name)
		}
		s := b.secrets[types.NamespacedName{Namespace: ns, Name: string(ref.Name)}]
		if s == nil {
			return false, string(gatewayv1.ListenerReasonInvalidCertificateRef), "Secret " + ns + "/" + string(ref.Name) + " not found"
		}
		crt, err := b.in.Certs.load(s)
		if err != nil {
			return false, string(gatewayv1.ListenerReasonInvalidCertificateRef), err.Error()
		}
		b.t.certs.add(host, crt)
	}
	return true, "", ""
}

// granted reports whether a ReferenceGrant in toNS lets fromKind objects
// of fromNS refer to the toKind object named name.
func granted(in *GatewayInput, fromKind, fromNS, toGroup, toKind, toNS, name string) bool {
	for _, g := range in.ReferenceGrants {
		if g.Namespace != toNS {
			continue
		}
		from := false
		for _, f := range g.Spec.From {
			if string(f.Group) == gatewayGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS {
				from = true
			}
		}
		if !from {
			continue
		}
		for _, t := range g.Spec.To {
			if string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == name) {
				return true
			}
		}
	}
	return false
}

// allows reports whether listener l admits routes from namespace ns.
func (l *listener) allows(ns string, nsLabels map[string]labels.Set) bool {
	from := gatewayv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		return err == nil && s.Matches(nsLabels[ns])
	case gatewayv1.NamespacesFromNone:
		return false
	}
	return ns == l.gw.Namespace
}

// intersect returns the hostnames a route serves on a listener, nil when
// they have none in common. "" stands for any host.
func intersect(listenerHost string, routeHosts []gatewayv1.Hostname) []string {
	if len(routeHosts) == 0 {
		return []string{listenerHost}
	}
	var out []string
	for _, rh := range routeHosts {
		r := NormalizeHost(string(rh))
		switch {
		case listenerHost == "":
			out = append(out, r)
		case r == listenerHost:
			out = append(out, r)
		case strings.HasPrefix(listenerHost, "*.") && hostCovers(listenerHost, r):
			out = append(out, r)
		case strings.HasPrefix(r, "*.") && hostCovers(r, listenerHost):
			out = append(out, listenerHost)
		}
	}
	return out
}

// hostCovers reports whether wildcard w ("*.example.com") covers h, an
// exact name or a narrower wildcard, with the Gateway API's any-depth rule.
func hostCovers(w, h string) bool {
	suffix := w[1:]
	if strings.HasPrefix(h, "*.") {
		return len(h) > len(w) && strings.HasSuffix(h, suffix)
	}
	return len(h) > len(suffix) && strings.HasSuffix(h, suffix)
}

func ptrTo[T any](v T) *T { return &v }
