package gatewayconformance

import (
	"context"
	"fmt"
	"net"
	"net/url"

	"golang.org/x/net/websocket"
)

// wsDialer is the suite's websocket.Dialer over dial.
type wsDialer struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (d wsDialer) Dial(rawURL, protocol, origin string) (*websocket.Conn, error) {
	cfg, err := websocket.NewConfig(rawURL, origin)
	if err != nil {
		return nil, err
	}
	if protocol != "" {
		cfg.Protocol = []string{protocol}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("websocket dial %s: only ws:// is supported here", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	conn, err := d.dial(context.Background(), "tcp", host)
	if err != nil {
		return nil, err
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return ws, nil
}
