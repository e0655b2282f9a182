package routes

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

type ingOpt func(*networkingv1.Ingress)

func newIngress(name string, opts ...ingOpt) *networkingv1.Ingress {
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, CreationTimestamp: metav1.NewTime(epoch)},
		Spec:       networkingv1.IngressSpec{IngressClassName: ptr("skiff")},
	}
	for _, o := range opts {
		o(ing)
	}
	return ing
}

func class(c *string) ingOpt { return func(i *networkingv1.Ingress) { i.Spec.IngressClassName = c } }

func created(d time.Duration) ingOpt {
	return func(i *networkingv1.Ingress) { i.CreationTimestamp = metav1.NewTime(epoch.Add(d)) }
}

func svcBackend(svc string, port int32) networkingv1.IngressBackend {
	return networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: port}}}
}

// rule adds one host with paths given as "type path service" triples.
func rule(host string, paths ...networkingv1.HTTPIngressPath) ingOpt {
	return func(i *networkingv1.Ingress) {
		i.Spec.Rules = append(i.Spec.Rules, networkingv1.IngressRule{
			Host:             host,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}},
		})
	}
}

func pth(pt networkingv1.PathType, p, svc string) networkingv1.HTTPIngressPath {
	return networkingv1.HTTPIngressPath{Path: p, PathType: &pt, Backend: svcBackend(svc, 80)}
}

func defaultBackend(svc string) ingOpt {
	return func(i *networkingv1.Ingress) { b := svcBackend(svc, 80); i.Spec.DefaultBackend = &b }
}

func tlsFor(secret string, hosts ...string) ingOpt {
	return func(i *networkingv1.Ingress) {
		i.Spec.TLS = append(i.Spec.TLS, networkingv1.IngressTLS{Hosts: hosts, SecretName: secret})
	}
}

// service returns a Service "name" with port 80 named "http" (targetPort
// 8080) and one EndpointSlice with a ready address 10.0.0.<n> per n.
func service(name string, ready ...int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
		}},
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
	}
	for _, n := range ready {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{"10.0.0." + itoa(n)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		})
	}
	return s, es
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// services builds Input services and slices, each Service named after
// itself with one ready endpoint whose last octet is its index+1.
func withServices(in *Input, names ...string) {
	for i, n := range names {
		s, es := service(n, i+1)
		in.Services = append(in.Services, s)
		in.EndpointSlices = append(in.EndpointSlices, es)
	}
}

func req(method, host, target string, hdr ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

// backendOf names the first backend a request routes to, "" when none and
// "404" when no route matches.
func backendOf(t *Table, l Listener, r *http.Request) string {
	rt := t.Match(l, netip.Addr{}, r)
	if rt == nil {
		return "404"
	}
	if len(rt.Backends) == 0 {
		return ""
	}
	return rt.Backends[0].Name
}

// selfSigned returns a PEM certificate and key for the DNS names.
func selfSigned(t *testing.T, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func tlsSecret(t *testing.T, name string, names ...string) *corev1.Secret {
	crt, key := selfSigned(t, names...)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), ResourceVersion: "1"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}
}
