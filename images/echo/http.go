package main

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// maxBody bounds how much of a request body is echoed back.
const maxBody = 64 << 10

func serveHTTP(addr string, id identity, log *slog.Logger, errs chan<- error) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, health.NewServer())

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "want /status/CODE with CODE in 200..599", http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
	})
	mux.HandleFunc("GET /env/{name}", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.PathValue("name"))
		if !ok {
			http.Error(w, "not set", http.StatusNotFound)
			return
		}
		io.WriteString(w, v)
	})
	mux.HandleFunc("GET /file/{path...}", readFile)
	mux.HandleFunc("PUT /file/{path...}", writeFile)
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { echoHTTP(w, r, id) })

	// Prior-knowledge h2c lets clients (and the ingress proxy) speak HTTP/2
	// without TLS; gRPC arrives that way too and goes to the gRPC server.
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				g.ServeHTTP(w, r)
				return
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errs <- err
		}
	}()
	return srv, nil
}

// echoHTTP answers with the server's identity and what it saw of the
// request. ?delay=DURATION waits first (for drain and timeout tests).
func echoHTTP(w http.ResponseWriter, r *http.Request, id identity) {
	if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil && d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
	rep := reply{
		identity: id,
		Client:   r.RemoteAddr,
		Proto:    r.Proto,
		Method:   r.Method,
		Host:     r.Host,
		Path:     r.URL.RequestURI(),
		Header:   r.Header,
		Body:     string(body),
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Echo-Pod", id.Pod)
	json.NewEncoder(w).Encode(rep)
}

// readFile and writeFile let tests see mounted ConfigMaps, Secrets and
// volumes from outside: the image has no shell to exec.
func readFile(w http.ResponseWriter, r *http.Request) {
	b, err := os.ReadFile(filepath.Join("/", r.PathValue("path")))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.Write(b)
}

func writeFile(w http.ResponseWriter, r *http.Request) {
	p := filepath.Join("/", r.PathValue("path"))
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err == nil {
		err = os.WriteFile(p, b, 0o644)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
