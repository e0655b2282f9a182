package routes

import (
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Well-known IngressClass and Ingress annotations.
const (
	AnnotationDefaultClass = networkingv1.AnnotationIsDefaultIngressClass
	// AnnotationLegacyClass predates spec.ingressClassName; still common.
	AnnotationLegacyClass = "kubernetes.io/ingress.class"
)

var bothListeners = []Listener{HTTP, HTTPS}

// ours reports which Ingresses this controller serves: those naming one of
// its IngressClasses (by spec.ingressClassName or the legacy annotation),
// and those naming none when one of its classes is the cluster default.
func (b *builder) oursFunc() func(*networkingv1.Ingress) bool {
	names := map[string]bool{b.in.ClassName: true}
	isDefault := false
	for _, ic := range b.in.IngressClasses {
		if ic.Spec.Controller == b.in.Controller || ic.Name == b.in.ClassName {
			names[ic.Name] = true
			if ic.Annotations[AnnotationDefaultClass] == "true" {
				isDefault = true
			}
		}
	}
	return func(ing *networkingv1.Ingress) bool {
		if c := ing.Spec.IngressClassName; c != nil && *c != "" {
			return names[*c]
		}
		if c, ok := ing.Annotations[AnnotationLegacyClass]; ok {
			return names[c]
		}
		return isDefault
	}
}

// ingresses compiles the Ingresses of our class, oldest first so that the
// older of two conflicting rules wins, as the API documentation suggests.
func (b *builder) ingresses() {
	ours := b.oursFunc()
	var list []*networkingv1.Ingress
	for _, ing := range b.in.Ingresses {
		if ing.DeletionTimestamp == nil && ours(ing) {
			list = append(list, ing)
		}
	}
	sort.Slice(list, func(i, j int) bool { return Older(list[i], list[j]) })
	b.res.Ingresses = list
	for _, ing := range list {
		b.ingress(ing)
	}
}

func (b *builder) ingress(ing *networkingv1.Ingress) {
	name := "ingress/" + ing.Namespace + "/" + ing.Name
	for _, rule := range ing.Spec.Rules {
		host := NormalizeHost(rule.Host)
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			rt := &Route{Name: name}
			pt := networkingv1.PathTypeImplementationSpecific
			if p.PathType != nil {
				pt = *p.PathType
			}
			switch pt {
			case networkingv1.PathTypeExact:
				if !strings.HasPrefix(p.Path, "/") {
					b.problem(name, "exact path %q must start with /", p.Path)
					continue
				}
				rt.Match.Path = PathMatch{Type: Exact, Value: p.Path}
			default: // Prefix, and ImplementationSpecific which Skiff reads as Prefix
				rt.Match.Path = PathMatch{Type: Prefix, Value: normalizePrefix(p.Path)}
			}
			rt.Backends = b.ingressBackend(name, ing.Namespace, &p.Backend)
			b.add(bothListeners, host, true, rt)
		}
	}
	if d := ing.Spec.DefaultBackend; d != nil {
		if b.t.fallback != nil {
			b.problem(name, "default backend ignored: %s already sets one", b.t.fallback.Name)
		} else {
			rt := &Route{Name: name, Match: Match{Path: PathMatch{Type: Prefix, Value: "/"}}}
			rt.Backends = b.ingressBackend(name, ing.Namespace, d)
			rt.order = b.order
			b.order++
			rt.finish()
			b.t.fallback = rt
			b.t.routes++
		}
	}
	for _, t := range ing.Spec.TLS {
		if t.SecretName == "" {
			// TLS for these hosts with the default certificate: nothing to load.
			continue
		}
		s := b.secrets[types.NamespacedName{Namespace: ing.Namespace, Name: t.SecretName}]
		if s == nil {
			b.problem(name, "TLS secret %s not found", t.SecretName)
			continue
		}
		crt, err := b.in.Certs.load(s)
		if err != nil {
			b.problem(name, "TLS: %v", err)
			continue
		}
		if len(t.Hosts) == 0 {
			b.t.certs.add("", crt)
		}
		for _, h := range t.Hosts {
			b.t.certs.add(NormalizeHost(h), crt)
		}
	}
}

// ingressBackend resolves an Ingress backend; a Service that does not
// resolve still yields a backend, with no endpoints, so the path answers
// 503 rather than falling through to another rule.
func (b *builder) ingressBackend(name, ns string, ib *networkingv1.IngressBackend) []WeightedBackend {
	if ib.Service == nil {
		b.problem(name, "only service backends are supported")
		return []WeightedBackend{{Backend: &Backend{Name: "unsupported", Status: 503}, Weight: 1}}
	}
	port := servicePort{Number: ib.Service.Port.Number, Name: ib.Service.Port.Name}
	be, err := b.backend(ns, ib.Service.Name, port)
	if err != nil {
		b.problem(name, "%v", err)
		be = &Backend{Name: ns + "/" + ib.Service.Name + ":" + port.String(), Status: 503}
	}
	return []WeightedBackend{{Backend: be, Weight: 1}}
}
