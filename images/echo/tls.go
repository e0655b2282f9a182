package main

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// HTTPS lets the image stand in for the servers the API server calls
// itself: an admission webhook (POST /validate) and an aggregated API (any
// other path echoes, with 200, which is all the aggregator's availability
// check asks). Tests mount a Secret and pass -https :8443 -tls-cert
// /tls/tls.crt -tls-key /tls/tls.key.
var (
	httpsAddr = flag.String("https", "", "HTTPS listen address for the webhook and echo (empty: off)")
	tlsCert   = flag.String("tls-cert", "", "PEM certificate (chain) for -https")
	tlsKey    = flag.String("tls-key", "", "PEM private key for -https")
)

func serveTLS(id identity, log *slog.Logger, errs chan<- error) error {
	if *httpsAddr == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
	if err != nil {
		return fmt.Errorf("-tls-cert %q, -tls-key %q: %w", *tlsCert, *tlsKey, err)
	}
	ln, err := net.Listen("tcp", *httpsAddr)
	if err != nil {
		return fmt.Errorf("-https %s: %w", *httpsAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /validate", func(w http.ResponseWriter, r *http.Request) { validate(w, r, id) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { echoHTTP(w, r, id) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errs <- err
		}
	}()
	log.Info("listening", "https", *httpsAddr)
	return nil
}

// admissionReview is the part of admission.k8s.io/v1 AdmissionReview the
// webhook reads and writes (the image does not link the Kubernetes API).
type admissionReview struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID    string `json:"uid"`
		Object struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
		} `json:"object"`
	} `json:"request,omitempty"`
	Response *admissionResponse `json:"response,omitempty"`
}

type admissionResponse struct {
	UID     string `json:"uid"`
	Allowed bool   `json:"allowed"`
	Status  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"status,omitempty"`
}

// validate denies objects labelled deny=true, naming the pod that denied,
// so a test sees that the API server reached this very pod.
func validate(w http.ResponseWriter, r *http.Request, id identity) {
	var rev admissionReview
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&rev); err != nil || rev.Request == nil {
		http.Error(w, "want an AdmissionReview with a request", http.StatusBadRequest)
		return
	}
	resp := &admissionResponse{UID: rev.Request.UID, Allowed: rev.Request.Object.Metadata.Labels["deny"] != "true"}
	if !resp.Allowed {
		resp.Status = &struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}{http.StatusForbidden, "denied by webhook pod " + id.Pod}
	}
	rev.Request, rev.Response = nil, resp
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rev)
}
