package h1server

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiffnet/skiff/ingress/h1"
)

// bufferBeforeChunking is how much of a body of unknown length is held
// back before the head is written: a handler that finishes within it gets
// a Content-Length instead of chunked coding, as with net/http (same size).
const bufferBeforeChunking = 2048

var pendingBufs = sync.Pool{New: func() any { b := make([]byte, 0, bufferBeforeChunking); return &b }}

// response is the lean path's http.ResponseWriter. It follows net/http's
// rules for what the handler did not say: Date, Content-Type by sniffing,
// Content-Length when the body is short or announced, otherwise chunked
// (HTTP/1.1) or the end of the connection (HTTP/1.0), no body for HEAD,
// 1xx, 204 and 304.
type response struct {
	c   *conn
	req *http.Request
	hdr http.Header

	status    int  // final status; 0 until WriteHeader
	committed bool // the head is in the write buffer
	chunked   bool
	declared  int64 // Content-Length sent; -1 when none
	written   int64
	pending   *[]byte // body held back before the head is written
	trailers  []string

	closeAfter bool  // the connection ends after this response
	err        error // the first write error; the connection is lost
}

func (w *response) reset(r *http.Request) {
	if w.hdr == nil {
		w.hdr = http.Header{}
	}
	clear(w.hdr)
	*w = response{c: w.c, req: r, hdr: w.hdr, declared: -1, trailers: w.trailers[:0]}
}

func (w *response) Header() http.Header { return w.hdr }

func (w *response) WriteHeader(code int) {
	if w.status != 0 {
		return // superfluous, as net/http ignores it
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInterim(code)
		return
	}
	w.status = code
	// The head can go out now when nothing about it depends on the body.
	if !w.bodyAllowed() || w.hasContentLength() && w.hasKey("Content-Type") {
		w.commit(false)
	}
}

func (w *response) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.committed {
		if w.pending == nil {
			w.pending = pendingBufs.Get().(*[]byte)
		}
		if len(*w.pending)+len(b) <= bufferBeforeChunking {
			*w.pending = append(*w.pending, b...)
			return len(b), nil
		}
		w.commit(false)
	}
	return w.writeBody(b)
}

// Flush sends what the handler wrote so far; the head goes out first.
func (w *response) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(false)
	}
	if w.err == nil {
		w.setErr(w.c.bw.Flush())
	}
}

// finish completes the response after the handler returned.
func (w *response) finish() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true)
	}
	bw := w.c.bw
	if w.chunked && w.err == nil {
		bw.WriteString("0\r\n")
		w.writeTrailers()
		bw.WriteString("\r\n")
	}
	if w.declared >= 0 && w.written != w.declared && w.req.Method != http.MethodHead && w.bodyAllowed() {
		// a body shorter than announced leaves the client waiting for
		// the rest: only closing tells it
		w.closeAfter = true
	}
	if w.err == nil {
		w.setErr(bw.Flush())
	}
}

func (w *response) setErr(err error) {
	if err != nil && w.err == nil {
		w.err = err
		w.closeAfter = true
	}
}

func (w *response) writeBody(b []byte) (int, error) {
	if w.req.Method == http.MethodHead {
		return len(b), nil
	}
	if len(b) == 0 || w.err != nil {
		return 0, w.err
	}
	bw := w.c.bw
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(b)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(b)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.written += int64(n)
	w.setErr(err)
	return n, w.err
}

func (w *response) bodyAllowed() bool {
	s := w.status
	return !(s >= 100 && s < 200 || s == http.StatusNoContent || s == http.StatusNotModified)
}

func (w *response) hasKey(k string) bool { _, ok := w.hdr[k]; return ok }

func (w *response) hasContentLength() bool {
	v := w.hdr["Content-Length"]
	return len(v) == 1 && v[0] != ""
}

// commit writes the status line and header fields. final says the handler
// has returned, so what is pending is the whole body.
func (w *response) commit(final bool) {
	w.committed = true
	h := w.hdr
	c := w.c
	var pend []byte
	if w.pending != nil {
		pend = *w.pending
	}
	switch {
	case !w.bodyAllowed():
	case w.hasContentLength():
		if n, err := strconv.ParseInt(w.hdr["Content-Length"][0], 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			delete(h, "Content-Length")
			w.frameUnknown(final, pend)
		}
	default:
		w.frameUnknown(final, pend)
	}
	if w.bodyAllowed() && len(pend) > 0 && !w.hasKey("Content-Type") {
		h["Content-Type"] = []string{http.DetectContentType(pend)}
	}
	if !w.hasKey("Date") {
		h["Date"] = []string{httpDate()}
	}
	keepAlive := !w.req.Close && !c.srv.closing.Load() && !w.closeAfter &&
		!hasToken(h["Connection"], "close") && c.body.left.Load() == 0
	switch {
	case !keepAlive:
		w.closeAfter = true
		if !hasToken(h["Connection"], "close") {
			h["Connection"] = []string{"close"}
		}
	case w.req.ProtoMinor == 0:
		h["Connection"] = []string{"keep-alive"}
	}

	bw := c.bw
	bw.WriteString(statusLine(w.status))
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range vv {
			h1.WriteField(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
	if w.chunked {
		for _, v := range h["Trailer"] {
			for k := range strings.SplitSeq(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
				}
			}
		}
	}
	if w.pending != nil {
		*w.pending = (*w.pending)[:0]
		p := w.pending
		w.pending = nil
		if len(pend) > 0 {
			w.writeBody(pend)
		}
		pendingBufs.Put(p)
	}
}

// frameUnknown picks the framing of a body whose length the handler did
// not announce.
func (w *response) frameUnknown(final bool, pend []byte) {
	switch {
	case w.req.Method == http.MethodHead && final && len(pend) == 0:
		// nothing known about a HEAD body: say nothing, as net/http does
	case final:
		w.declared = int64(len(pend))
		w.hdr["Content-Length"] = []string{strconv.Itoa(len(pend))}
	case w.req.ProtoMinor >= 1:
		w.chunked = true
		w.hdr["Transfer-Encoding"] = []string{"chunked"}
	default:
		// HTTP/1.0 has no chunks: the end of the connection ends the body
		w.closeAfter = true
	}
}

// writeTrailers sends the trailer fields the head announced and those
// set under http.TrailerPrefix.
func (w *response) writeTrailers() {
	bw := w.c.bw
	for _, k := range w.trailers {
		for _, v := range w.hdr[k] {
			h1.WriteField(bw, k, v)
		}
	}
	for k, vv := range w.hdr {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vv {
				h1.WriteField(bw, name, v)
			}
		}
	}
}

// writeInterim sends a 1xx response with the fields set so far, which stay
// for the final response (as with net/http).
func (w *response) writeInterim(code int) {
	if w.err != nil {
		return
	}
	bw := w.c.bw
	bw.WriteString(statusLine(code))
	for k, vv := range w.hdr {
		for _, v := range vv {
			h1.WriteField(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
	w.setErr(bw.Flush())
}

func hasToken(vv []string, token string) bool {
	for _, v := range vv {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// statusLines caches "HTTP/1.1 200 OK\r\n" for the codes in use.
var statusLines [600]string

func init() {
	for code := range statusLines {
		if text := http.StatusText(code); text != "" {
			statusLines[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
}

func statusLine(code int) string {
	if code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " status code " + strconv.Itoa(code) + "\r\n"
}

// httpDate returns the Date field for now, formatted once per second.
func httpDate() string {
	now := time.Now().Unix()
	if d := dateCache.Load(); d != nil && d.sec == now {
		return d.s
	}
	d := &cachedDate{sec: now, s: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}

type cachedDate struct {
	sec int64
	s   string
}

var dateCache atomic.Pointer[cachedDate]
