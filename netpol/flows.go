package netpol

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/skiffnet/skiff/bpf"
)

// DeniedFlows prints the packets the node's policy programs drop, as they
// happen, until ctx is done: one line each with the time, direction seen
// from the pod, protocol, source and destination. It reads the pinned ring
// buffer; run one reader at a time (a second one would take events from
// the first).
func DeniedFlows(ctx context.Context, w io.Writer, nodePinDir string) error {
	m, err := ebpf.LoadPinnedMap(filepath.Join(nodePinDir, bpf.PolicyDir, "pol_events"), nil)
	if err != nil {
		return fmt.Errorf("open the denied-flow ring buffer: %w", err)
	}
	defer m.Close()
	r, err := ringbuf.NewReader(m)
	if err != nil {
		return fmt.Errorf("read the denied-flow ring buffer: %w", err)
	}
	defer r.Close()
	context.AfterFunc(ctx, func() { r.Close() })
	for {
		rec, err := r.Read()
		if errors.Is(err, ringbuf.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the denied-flow ring buffer: %w", err)
		}
		var ev bpf.PolicyEvent
		if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &ev); err != nil {
			continue
		}
		fmt.Fprintln(w, formatEvent(ev, time.Now()))
	}
}

func formatEvent(ev bpf.PolicyEvent, at time.Time) string {
	dir := "ingress"
	if ev.Dir == bpf.PolicyEgress {
		dir = "egress"
	}
	proto := map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}[ev.Proto]
	if proto == "" {
		proto = fmt.Sprint(ev.Proto)
	}
	return fmt.Sprintf("%s denied %-7s %-4s %s:%d -> %s:%d", at.Format(time.TimeOnly), dir, proto,
		bpf.DecodeAddr4(ev.Saddr), bpf.DecodePort(ev.Sport), bpf.DecodeAddr4(ev.Daddr), bpf.DecodePort(ev.Dport))
}
