package ingress

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// TestNoAnswerBeforeFirstSync: a proxy that has not loaded its routes must
// not answer 404 for a host that has one. Connections wait in the listen
// queue until the first table from synced caches is in.
func TestNoAnswerBeforeFirstSync(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "backend") }))
	defer backend.Close()
	host, portStr, _ := net.SplitHostPort(backend.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)

	client := fake.NewClientset(objects(host, int32(port))...)
	release := make(chan struct{})
	client.PrependReactor("list", "ingresses", func(k8stesting.Action) (bool, runtime.Object, error) {
		<-release // the API is slow: the caches are not synced yet
		return false, nil, nil
	})
	ing, err := New(Options{Client: client, HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), DisableStatus: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ing.Serve(ctx, ln, nil) }()
	defer func() {
		cancel()
		<-done
	}()

	url := "http://" + ln.Addr().String() + "/"
	get := func(timeout time.Duration) (int, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = "a.test"
		resp, err := (&http.Client{Timeout: timeout}).Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(500 * time.Millisecond); err == nil {
		t.Fatalf("before the caches synced the proxy answered %d; want no answer yet", code)
	}
	select {
	case <-ing.Serving():
		t.Fatal("Serving closed before the first table")
	default:
	}
	close(release)
	select {
	case <-ing.Serving():
	case <-time.After(10 * time.Second):
		t.Fatal("not serving 10 s after the caches could sync")
	}
	if code, err := get(5 * time.Second); err != nil || code != http.StatusOK {
		t.Fatalf("after sync: %d, %v; want 200 from the backend", code, err)
	}
}

func objects(ip string, port int32) []runtime.Object {
	prefix := networkingv1.PathTypePrefix
	return []runtime.Object{
		&networkingv1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a", Generation: 1},
			Spec: networkingv1.IngressSpec{
				IngressClassName: ptr.To("skiff"),
				Rules: []networkingv1.IngressRule{{Host: "a.test", IngressRuleValue: networkingv1.IngressRuleValue{
					HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{
						Path: "/", PathType: &prefix,
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: "s", Port: networkingv1.ServiceBackendPort{Number: 80}}},
					}}},
				}}},
			},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
		},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "s-1", Labels: map[string]string{discoveryv1.LabelServiceName: "s"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true)}}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
		},
	}
}
