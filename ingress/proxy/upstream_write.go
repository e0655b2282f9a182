package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/skiffnet/skiff/ingress/h1"
)

// Header fields writeHead frames itself rather than copying from
// r.Header, as net/http's Request.Write does.
var framedHeaders = map[string]bool{
	"Host": true, "User-Agent": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true,
}

// writeHead writes the request line and header block of r. withBody says
// whether a body follows: with a known length it is announced by
// Content-Length, otherwise it is sent chunked (with its trailers).
func writeHead(bw *bufio.Writer, r *http.Request, withBody bool) error {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return errors.New("invalid Host header " + strconv.Quote(host))
	}
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	writeRequestURI(bw, r)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	// net/http sends one User-Agent and none when it is empty (the
	// ReverseProxy sets it empty when the client sent none).
	if ua := r.Header.Get("User-Agent"); ua != "" {
		writeField(bw, "User-Agent", ua)
	}
	if r.Close && !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "close") {
		bw.WriteString("Connection: close\r\n")
	}
	switch {
	case withBody && r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
		bw.WriteString("\r\n")
	case withBody:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		writeTrailerNames(bw, r.Trailer)
	case r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH":
		// many servers want a length for these, as net/http knows
		bw.WriteString("Content-Length: 0\r\n")
	}
	for k, vv := range r.Header {
		if framedHeaders[k] {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// writeRequestURI writes what URL.RequestURI returns without building the
// string: the path (escaped) and the query.
func writeRequestURI(bw *bufio.Writer, r *http.Request) {
	u := r.URL
	if u.Opaque != "" {
		bw.WriteString(u.RequestURI())
		return
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	bw.WriteString(p)
	if u.ForceQuery || u.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(u.RawQuery)
	}
}

// writeField writes one header field (see h1.WriteField): header filters
// are configuration, not checked like client input.
func writeField(bw *bufio.Writer, k, v string) { h1.WriteField(bw, k, v) }

func writeTrailerNames(bw *bufio.Writer, t http.Header) {
	if len(t) == 0 {
		return
	}
	keys := make([]string, 0, len(t))
	for k := range t {
		if k = http.CanonicalHeaderKey(k); !badTrailer(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	writeField(bw, "Trailer", strings.Join(keys, ","))
}

// writeRequest writes a request with a body. The head is flushed before
// the body is read, as net/http does, so a backend sees the request even
// while the client is slow to send the body.
func (pc *h1Conn) writeRequest(r *http.Request) error {
	bw := pc.bw
	if err := writeHead(bw, r, true); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if r.ContentLength > 0 {
		n, err := io.Copy(bw, io.LimitReader(r.Body, r.ContentLength))
		if err == nil && n != r.ContentLength {
			err = fmt.Errorf("http: ContentLength=%d with Body length %d", r.ContentLength, n)
		}
		if err != nil {
			return err
		}
		return bw.Flush()
	}
	return writeChunked(bw, r)
}

// writeChunked sends the body in chunks as they arrive (a streaming client
// is streamed, not buffered), then the trailers.
func writeChunked(bw *bufio.Writer, r *http.Request) error {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			bw.WriteString(strconv.FormatInt(int64(n), 16))
			bw.WriteString("\r\n")
			bw.Write(buf[:n])
			bw.WriteString("\r\n")
			if ferr := bw.Flush(); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	bw.WriteString("0\r\n")
	// the server fills the trailer values once the body has been read
	for k, vv := range r.Trailer {
		if badTrailer(http.CanonicalHeaderKey(k)) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

// badTrailer names the fields a trailer must not carry (RFC 9110 6.5.1);
// net/http refuses to send them too.
func badTrailer(k string) bool {
	return k == "Transfer-Encoding" || k == "Trailer" || k == "Content-Length"
}
