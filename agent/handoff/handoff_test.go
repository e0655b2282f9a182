package handoff

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// predecessor serves an Offer of one TCP listener on a control socket.
type predecessor struct {
	ln       *net.TCPListener
	socket   string
	replaced chan Peer
}

func startPredecessor(t *testing.T) *predecessor {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &predecessor{ln: ln.(*net.TCPListener), socket: filepath.Join(t.TempDir(), "c.sock"), replaced: make(chan Peer, 1)}
	offer := &Offer{
		Self:     Peer{PID: 1, Version: "old"},
		Sockets:  func() []Socket { return []Socket{{Name: "http", Addr: "127.0.0.1:0", Conn: p.ln}} },
		Replaced: func(s Peer) { p.replaced <- s },
	}
	cl, err := net.Listen("unix", p.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, offer)
	srv := &http.Server{Handler: mux}
	go srv.Serve(cl)
	t.Cleanup(func() { srv.Close() })
	return p
}

func TestTakeSharesTheListeningSocket(t *testing.T) {
	p := startPredecessor(t)
	h, err := Take(context.Background(), p.socket, Peer{PID: 2, Version: "new"})
	if err != nil {
		t.Fatal(err)
	}
	if h.From.PID != 1 || h.From.Version != "old" {
		t.Errorf("predecessor %+v, want pid 1 version old", h.From)
	}
	if f := h.Socket("http", "127.0.0.1:1"); f != nil {
		t.Error("a socket configured for another address was handed over")
	}
	f := h.Socket("http", "127.0.0.1:0")
	if f == nil {
		t.Fatal("no socket named http")
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() != p.ln.Addr().String() {
		t.Fatalf("successor listens on %s, predecessor on %s", ln.Addr(), p.ln.Addr())
	}
	// The predecessor stops accepting: a client's connection must still be
	// accepted, by the successor, from the same kernel queue.
	p.ln.Close()
	c, err := net.Dial("tcp", p.ln.Addr().String())
	if err != nil {
		t.Fatalf("dial after the predecessor closed its copy: %v", err)
	}
	defer c.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatalf("successor accept: %v", err)
	}
	sc.Close()
	select {
	case <-p.replaced:
		t.Fatal("replaced before the successor said ready")
	default:
	}
	if err := h.Ready(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-p.replaced:
		if s.PID != 2 || s.Version != "new" {
			t.Errorf("successor reported as %+v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("predecessor was not told to drain")
	}
	// A completed handoff is not repeated.
	if _, err := Take(context.Background(), p.socket, Peer{PID: 3}); err == nil {
		t.Error("a second handoff after a completed one succeeded")
	}
}

func TestClosingBeforeReadyCancels(t *testing.T) {
	p := startPredecessor(t)
	h, err := Take(context.Background(), p.socket, Peer{PID: 2})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	h2, err := Take(context.Background(), p.socket, Peer{PID: 3})
	if err != nil {
		t.Fatalf("a new successor after a cancelled handoff: %v", err)
	}
	defer h2.Close()
	select {
	case <-p.replaced:
		t.Fatal("a cancelled handoff replaced the predecessor")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestNoPredecessor(t *testing.T) {
	_, err := Take(context.Background(), filepath.Join(t.TempDir(), "none.sock"), Peer{})
	if !errors.Is(err, ErrNoPredecessor) {
		t.Fatalf("err = %v, want ErrNoPredecessor", err)
	}
	// A stale socket file whose process is gone is no predecessor either.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(stale); err != nil {
		t.Fatal(err)
	}
	if _, err := Take(context.Background(), stale, Peer{}); !errors.Is(err, ErrNoPredecessor) {
		t.Fatalf("stale socket: err = %v, want ErrNoPredecessor", err)
	}
}

func TestOfferRefusesGET(t *testing.T) {
	p := startPredecessor(t)
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", p.socket)
	}}}
	resp, err := c.Get("http://dataplane" + Path)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: %d, want 405", Path, resp.StatusCode)
	}
}
