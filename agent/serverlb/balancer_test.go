package serverlb

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// backend is a TCP server that answers each line with its name.
type backend struct {
	name string
	l    net.Listener
	mu   sync.Mutex
	cs   []net.Conn
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.cs = append(b.cs, c)
			b.mu.Unlock()
			go func() {
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						c.Close()
						return
					}
					c.Write([]byte(name + "\n"))
				}
			}()
		}
	}()
	t.Cleanup(b.stop)
	return b
}

func (b *backend) addr() string { return b.l.Addr().String() }

// stop closes the listener and every accepted connection, as a killed
// process's kernel does.
func (b *backend) stop() {
	b.l.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.cs {
		c.Close()
	}
}

func run(t *testing.T, o Options) *Balancer {
	t.Helper()
	o.ListenAddr = "127.0.0.1:0"
	o.CheckInterval = 100 * time.Millisecond
	o.DialTimeout = 500 * time.Millisecond
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return b
}

// ask sends a line over c and returns the answering backend's name.
func ask(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("who\n")); err != nil {
		return "", err
	}
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s), err
}

func dialAsk(t *testing.T, b *Balancer) string {
	t.Helper()
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	name, err := ask(c)
	if err != nil {
		t.Fatalf("through the balancer: %v", err)
	}
	return name
}

func TestFailsOverAndClosesDeadServersConnections(t *testing.T) {
	s1, s2 := newBackend(t, "s1"), newBackend(t, "s2")
	b := run(t, Options{Servers: []string{s1.addr(), s2.addr()}})
	if got := dialAsk(t, b); got != "s1" {
		t.Fatalf("first connection went to %s, want the first server", got)
	}
	held, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if got, err := ask(held); err != nil || got != "s1" {
		t.Fatalf("held connection: %s %v", got, err)
	}
	s1.stop()
	// The held connection is closed, not left hanging.
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a connection to the dead server stayed open (%v)", err)
	}
	for range 5 {
		if got := dialAsk(t, b); got != "s2" {
			t.Fatalf("after s1 died a connection went to %s", got)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestUnreachableServerIsSkipped(t *testing.T) {
	s := newBackend(t, "live")
	// TEST-NET-1: nothing answers, the dial times out.
	b := run(t, Options{Servers: []string{"192.0.2.1:6443", s.addr()}})
	if got := dialAsk(t, b); got != "live" {
		t.Fatalf("got %s", got)
	}
}

func TestListIsReplacedAndKept(t *testing.T) {
	s1, s2 := newBackend(t, "s1"), newBackend(t, "s2")
	state := filepath.Join(t.TempDir(), "servers.json")
	b := run(t, Options{Servers: []string{s1.addr()}, StatePath: state})
	b.SetServers(nil)
	if got := b.Servers(); !slices.Equal(got, []string{s1.addr()}) {
		t.Fatalf("an empty list replaced the servers: %v", got)
	}
	b.SetServers([]string{s2.addr()})
	if got := dialAsk(t, b); got != "s2" {
		t.Fatalf("after the list changed a connection went to %s", got)
	}
	b2, err := New(Options{ListenAddr: "127.0.0.1:0", Servers: []string{s1.addr()}, StatePath: state})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.listener.Close()
	if got := b2.Servers(); !slices.Contains(got, s2.addr()) {
		t.Fatalf("a new balancer did not load the kept list: %v", got)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{ListenAddr: "127.0.0.1:0"},
		{ListenAddr: "127.0.0.1:0", Servers: []string{"noport"}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	_, err := New(Options{ListenAddr: "127.0.0.1:0", Servers: []string{"host"}})
	if err == nil || !strings.Contains(err.Error(), `"host"`) {
		t.Errorf("err %v: want the bad address named", err)
	}
}
