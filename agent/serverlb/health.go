package serverlb

import (
	"context"
	"net"
	"time"
)

// check connects to every server each CheckInterval. Two failures in a
// row mark a server down; a success marks it up again.
func (b *Balancer) check(ctx context.Context) {
	tick := time.NewTicker(b.opts.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		b.mu.Lock()
		servers := append([]*server(nil), b.servers...)
		b.mu.Unlock()
		for _, s := range servers {
			go b.probe(ctx, s)
		}
	}
}

func (b *Balancer) probe(ctx context.Context, s *server) {
	d := net.Dialer{Timeout: b.opts.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err == nil {
		c.Close()
		b.mu.Lock()
		s.fails = 0
		if !s.healthy {
			s.healthy = true
			b.opts.Logger.Info("API server answers again", "server", s.addr)
		}
		b.mu.Unlock()
		return
	}
	if ctx.Err() != nil {
		return
	}
	b.mu.Lock()
	s.fails++
	down := s.fails >= 2 && s.healthy
	b.mu.Unlock()
	if down {
		b.markDown(s, err)
	}
}

// markDown marks s unhealthy and, if clients were using it, moves the
// balancer to another server and closes s's connections at once: a
// server whose host vanished sends no reset, and the kubelet's watches
// would otherwise wait for TCP to time out.
func (b *Balancer) markDown(s *server, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.healthy {
		b.opts.Logger.Warn("API server unreachable", "server", s.addr, "err", err)
	}
	s.healthy = false
	if b.current == s {
		for _, o := range b.servers {
			if o.healthy {
				b.switchTo(o)
				break
			}
		}
	}
	closeAll(s)
}

// switchTo makes s the server new connections go to. Called with mu held.
func (b *Balancer) switchTo(s *server) {
	from := "none"
	if b.current != nil {
		from = b.current.addr
	}
	b.opts.Logger.Info("using another API server", "from", from, "to", s.addr)
	b.current = s
}
