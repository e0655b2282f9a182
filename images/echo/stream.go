package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
)

// serveTCP greets each connection with one line naming the pod and the
// client address it saw, then echoes whatever the client sends.
func serveTCP(ctx context.Context, addr string, id identity, errs chan<- error) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					errs <- err
				}
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "pod=%s node=%s client=%s\n", id.Pod, id.Node, c.RemoteAddr())
				io.Copy(c, c)
			}()
		}
	}()
	return nil
}

// serveUDP answers each datagram with a JSON reply carrying the payload.
func serveUDP(ctx context.Context, addr string, id identity, errs chan<- error) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { pc.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					errs <- err
				}
				return
			}
			b, _ := json.Marshal(reply{identity: id, Client: from.String(), Proto: "udp", Body: string(buf[:n])})
			pc.WriteTo(b, from)
		}
	}()
	return nil
}
