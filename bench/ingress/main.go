// Command ingress is bench/ingress: its run command compares Skiff's
// ingress proxy with nginx and HAProxy on the same Go backends (see
// docs/benchmarks.md); the other commands are the processes it starts.
//
//	ingress run [-rounds 5] [-duration 10s] [-conns 64,256,1000] ...
//	ingress backend -addr 127.0.0.1:18081
//	ingress proxy -http 127.0.0.1:18080 -https 127.0.0.1:18443 -backends 127.0.0.1:18081,127.0.0.1:18082
//	ingress cert -dir DIR    # writes tls.crt and tls.key (self-signed, bench.local)
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffnet/skiff/ingress/proxy"
	"github.com/skiffnet/skiff/ingress/routes"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ingress run|backend|proxy|cert [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		ctx, cancel := signalContext()
		err = run(ctx, os.Args[2:])
		cancel()
	case "backend":
		err = backend(os.Args[2:])
	case "proxy":
		err = runProxy(os.Args[2:])
	case "cert":
		err = cert(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingress bench:", err)
		os.Exit(1)
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// backend answers every request with a small fixed body, as a typical
// JSON API endpoint would.
func backend(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:18081", "listen address")
	fs.Parse(args)
	body := []byte(`{"status":"ok","service":"bench","items":[1,2,3,4,5,6,7,8]}` + "\n")
	srv := &http.Server{Addr: *addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})}
	ctx, cancel := signalContext()
	defer cancel()
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// runProxy serves a static table: host bench.local (and any host), path /,
// one Service whose endpoints are the given backends.
func runProxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	httpAddr := fs.String("http", "127.0.0.1:18080", "HTTP listen address")
	httpsAddr := fs.String("https", "127.0.0.1:18443", "HTTPS listen address")
	backends := fs.String("backends", "127.0.0.1:18081", "comma-separated backend addresses")
	certDir := fs.String("cert", "", "directory with tls.crt and tls.key for bench.local")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	netHTTP := fs.Bool("nethttp", false, "serve with net/http only (the lean HTTP/1.1 path off)")
	fs.Parse(args)
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}

	in := routes.Input{}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	in.Services = append(in.Services, svc)
	for i, b := range strings.Split(*backends, ",") {
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			return fmt.Errorf("backend %q: %w", b, err)
		}
		pn, _ := strconv.Atoi(port)
		name, p32, ready := "http", int32(pn), true
		in.EndpointSlices = append(in.EndpointSlices, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("web-%d", i), Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &p32}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		})
	}
	pt := networkingv1.PathTypePrefix
	class := "skiff"
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "web"},
		Spec: networkingv1.IngressSpec{
			IngressClassName: &class,
			DefaultBackend:   &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}},
			Rules: []networkingv1.IngressRule{{Host: "bench.local", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &pt, Backend: networkingv1.IngressBackend{
					Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}},
		},
	}
	if *certDir != "" {
		crt, err := os.ReadFile(filepath.Join(*certDir, "tls.crt"))
		if err != nil {
			return err
		}
		key, err := os.ReadFile(filepath.Join(*certDir, "tls.key"))
		if err != nil {
			return err
		}
		in.Secrets = append(in.Secrets, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "tls"},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
		})
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"bench.local"}, SecretName: "tls"}}
	}
	in.Ingresses = append(in.Ingresses, ing)
	res := routes.Build(in)
	for _, p := range res.Problems {
		return fmt.Errorf("static table: %s", p)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := proxy.New(proxy.Options{HTTPAddr: *httpAddr, HTTPSAddr: *httpsAddr, Logger: log, NetHTTPOnly: *netHTTP})
	if err != nil {
		return err
	}
	p.Swap(res.Table)
	ctx, cancel := signalContext()
	defer cancel()
	return p.Serve(ctx)
}

func cert(args []string) error {
	fs := flag.NewFlagSet("cert", flag.ExitOnError)
	dir := fs.String("dir", ".", "output directory")
	fs.Parse(args)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "bench.local"},
		DNSNames:     []string{"bench.local"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
}

// startCPUProfile profiles until the returned function is called (the proxy
// stops on SIGTERM, so run.sh's cleanup still gets a complete profile).
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
