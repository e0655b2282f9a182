package gatewayconformance

import (
	"context"
	"fmt"
	"net"
	"net/url"

	"golang.org/x/net/websocket"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"
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

// nsRoundTripper keeps every request of the suite inside the client
// namespace. The suite's own HTTP/2 and h2c transports ignore
// CustomDialContext and would dial from the test's network namespace, so
// traffic could leave the machine: such requests fail instead.
type nsRoundTripper struct {
	roundtripper.DefaultRoundTripper
}

func (r *nsRoundTripper) CaptureRoundTrip(req roundtripper.Request) (*roundtripper.CapturedRequest, *roundtripper.CapturedResponse, error) {
	switch req.Protocol {
	case roundtripper.H2CPriorKnowledgeProtocol, roundtripper.H2Protocol:
		return nil, nil, fmt.Errorf("protocol %s: the conformance suite's transport for it ignores the namespace dialer; "+
			"Skiff does not claim the features that use it (see supportedFeatures)", req.Protocol)
	}
	return r.DefaultRoundTripper.CaptureRoundTrip(req)
}
