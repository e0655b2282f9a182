// Package handoff passes a running node data plane's listening sockets to
// its successor, so that restarting or upgrading the node's ingress proxy
// and DNS server drops no connection and no query. Both processes hold the
// same kernel sockets until the successor says it serves; then the
// predecessor stops accepting, drains and exits. Connections that arrive
// meanwhile wait in the shared accept queue (or, for UDP, the shared
// receive queue) for whichever process reads first. This is HAProxy's
// seamless reload and systemd's file-descriptor store, done between two
// generations of one program.
//
// The exchange runs over the data plane's control socket (HTTP on a unix
// socket). The successor sends `POST /handoff`; the predecessor answers
// with one message that carries the HTTP response, naming the sockets, and
// their file descriptors (SCM_RIGHTS). The successor later writes "ready"
// on the same connection; closing it instead cancels the handoff and the
// predecessor keeps serving.
package handoff

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Path is the HTTP path of the exchange on the control socket.
const Path = "/handoff"

// readyLine is what the successor writes once it serves.
const readyLine = "ready\n"

// Socket is one listening socket of a data plane.
type Socket struct {
	// Name says what the socket is for ("dns-udp", "ingress-http").
	Name string `json:"name"`
	// Addr is the address the owner was configured to listen on; a
	// successor configured otherwise opens its own socket instead.
	Addr string `json:"addr"`
	// Conn is the sender's live socket (a listener or packet conn); the
	// sender keeps owning it.
	Conn syscall.Conn `json:"-"`
	// File is the receiver's copy, which it owns (and closes).
	File *os.File `json:"-"`
}

// Peer describes the other side of a handoff.
type Peer struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
}

type offerMessage struct {
	Peer
	Sockets []Socket `json:"sockets"`
}

// Offer serves the predecessor's side of the exchange as an http.Handler.
type Offer struct {
	// Self describes this process to the successor.
	Self Peer
	// Sockets returns the sockets to hand over.
	Sockets func() []Socket
	// Replaced is called once, when a successor reports that it serves.
	Replaced func(successor Peer)

	mu   sync.Mutex
	busy bool
	done bool
}

// ServeHTTP runs one handoff. Only one runs at a time; a second successor
// gets 409 Conflict, and any after a completed one 410 Gone.
func (o *Offer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var succ Peer
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&succ); err != nil {
		http.Error(w, "body: want {\"pid\":N,\"version\":\"...\"}: "+err.Error(), http.StatusBadRequest)
		return
	}
	if code := o.claim(); code != 0 {
		http.Error(w, http.StatusText(code), code)
		return
	}
	defer o.release()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "connection cannot be taken over", http.StatusInternalServerError)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return
	}
	if err := o.send(uc); err != nil {
		return
	}
	// Wait for the successor's word; EOF (it died or gave up) cancels.
	line, err := rw.ReadString('\n')
	if err != nil || line != readyLine {
		return
	}
	o.mu.Lock()
	o.done = true
	o.mu.Unlock()
	o.Replaced(succ)
}

func (o *Offer) claim() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.done:
		return http.StatusGone
	case o.busy:
		return http.StatusConflict
	}
	o.busy = true
	return 0
}

func (o *Offer) release() {
	o.mu.Lock()
	o.busy = false
	o.mu.Unlock()
}

// send writes the response and the descriptors in one sendmsg, so the
// receiver's single recvmsg gets both.
func (o *Offer) send(uc *net.UnixConn) error {
	socks := o.Sockets()
	body, err := json.Marshal(offerMessage{Peer: o.Self, Sockets: socks})
	if err != nil {
		return err
	}
	fds, err := dupAll(socks)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if err != nil {
		return err
	}
	var msg bytes.Buffer
	fmt.Fprintf(&msg, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	msg.Write(body)
	_, _, err = uc.WriteMsgUnix(msg.Bytes(), unix.UnixRights(fds...), nil)
	return err
}

// dupAll duplicates each socket's descriptor. It reads the descriptor
// through SyscallConn: os.File.Fd would switch the shared open file
// description to blocking mode under the live listener's poller.
func dupAll(socks []Socket) ([]int, error) {
	var fds []int
	for _, s := range socks {
		rc, err := s.Conn.SyscallConn()
		if err != nil {
			return fds, fmt.Errorf("handoff: socket %s: %w", s.Name, err)
		}
		var derr error
		err = rc.Control(func(fd uintptr) {
			var nfd int
			nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
			if derr == nil {
				fds = append(fds, nfd)
			}
		})
		if err == nil {
			err = derr
		}
		if err != nil {
			return fds, fmt.Errorf("handoff: socket %s: %w", s.Name, err)
		}
	}
	return fds, nil
}

// ErrNoPredecessor says no data plane answers on the control socket.
var ErrNoPredecessor = errors.New("no data plane is running")

// Handover is a successor's side of a handoff in progress.
type Handover struct {
	conn *net.UnixConn
	// From is the predecessor.
	From Peer
	// Sockets are the predecessor's sockets, now this process's too.
	Sockets []Socket
}

// errBusy is a predecessor still finishing an exchange with another
// successor (one that just gave up, usually).
var errBusy = errors.New("handoff: the running data plane is busy with another successor")

// Take asks the data plane on the control socket for its sockets. It
// returns ErrNoPredecessor when nothing listens there. A predecessor busy
// with another successor is asked again for up to ten seconds.
func Take(ctx context.Context, socket string, self Peer) (*Handover, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := takeOnce(ctx, socket, self)
		if !errors.Is(err, errBusy) || time.Now().After(deadline) {
			return h, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func takeOnce(ctx context.Context, socket string, self Peer) (*Handover, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, ErrNoPredecessor
		}
		return nil, fmt.Errorf("handoff: dial %s: %w", socket, err)
	}
	uc := c.(*net.UnixConn)
	h, err := take(ctx, uc, self)
	if err != nil {
		uc.Close()
		return nil, err
	}
	return h, nil
}

func take(ctx context.Context, uc *net.UnixConn, self Peer) (*Handover, error) {
	if dl, ok := ctx.Deadline(); ok {
		uc.SetDeadline(dl)
	} else {
		uc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	body, _ := json.Marshal(self)
	req, err := http.NewRequest(http.MethodPost, "http://dataplane"+Path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if err := req.Write(uc); err != nil {
		return nil, fmt.Errorf("handoff: send request: %w", err)
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(64*4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("handoff: read answer: %w", err)
	}
	files, err := parseRights(oob[:oobn])
	if err != nil {
		return nil, err
	}
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(buf[:n])), req)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("handoff: answer: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusConflict {
		closeAll()
		return nil, errBusy
	}
	if resp.StatusCode != http.StatusOK {
		closeAll()
		return nil, fmt.Errorf("handoff: the running data plane said %s: %s", resp.Status, strings.TrimSpace(string(raw)))
	}
	var m offerMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		closeAll()
		return nil, fmt.Errorf("handoff: answer body: %w", err)
	}
	if len(m.Sockets) != len(files) {
		closeAll()
		return nil, fmt.Errorf("handoff: %d sockets named but %d received", len(m.Sockets), len(files))
	}
	for i := range m.Sockets {
		m.Sockets[i].File = files[i]
	}
	uc.SetDeadline(time.Time{})
	return &Handover{conn: uc, From: m.Peer, Sockets: m.Sockets}, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("handoff: control message: %w", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("handoff-%d", fd)))
		}
	}
	return files, nil
}

// Socket returns the predecessor's socket with that name and address, or
// nil; ownership of its file passes to the caller.
func (h *Handover) Socket(name, addr string) *os.File {
	for i, s := range h.Sockets {
		if s.Name == name && s.Addr == addr && s.File != nil {
			h.Sockets[i].File = nil
			return s.File
		}
	}
	return nil
}

// Ready tells the predecessor that this process serves: it stops
// accepting, drains and exits.
func (h *Handover) Ready() error {
	defer h.Close()
	if _, err := io.WriteString(h.conn, readyLine); err != nil {
		return fmt.Errorf("handoff: tell pid %d to drain: %w", h.From.PID, err)
	}
	return nil
}

// Close ends the exchange; before Ready it cancels the handoff, and the
// predecessor keeps serving. Sockets not taken with Socket are closed.
func (h *Handover) Close() {
	h.conn.Close()
	for _, s := range h.Sockets {
		if s.File != nil {
			s.File.Close()
		}
	}
}
