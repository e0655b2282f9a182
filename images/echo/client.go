package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// runClient is the image's client mode, so tests can make requests from
// inside a pod (the image has no shell or curl): each request uses a new
// connection, and one line per reply names the pod that answered and the
// client address it saw, or the error.
func runClient(url, udpAddr string, n int) int {
	failed := 0
	for range n {
		var rep reply
		var err error
		if udpAddr != "" {
			err = udpRequest(udpAddr, &rep)
		} else {
			var raw []byte
			raw, err = httpRequest(url, &rep)
			if _, notJSON := err.(*json.SyntaxError); notJSON {
				// Not an echo reply (a file, an env value): print it as is.
				fmt.Println(string(raw))
				continue
			}
		}
		if err != nil {
			fmt.Println("error", err)
			failed++
			continue
		}
		fmt.Println(rep.Pod, rep.Client)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func httpRequest(url string, rep *reply) ([]byte, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("status %d", resp.StatusCode)
	}
	return b, json.Unmarshal(b, rep)
}

func udpRequest(addr string, rep *reply) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	return json.Unmarshal(buf[:n], rep)
}

// clientMode runs `echo get URL [N]` or `echo udp HOST:PORT [N]` and
// reports whether the arguments asked for it.
func clientMode(args []string) (code int, ok bool) {
	if len(args) >= 2 && args[0] == "resolve" {
		interval := 10 * time.Millisecond
		if len(args) > 2 {
			d, err := time.ParseDuration(args[2])
			if err != nil {
				fmt.Fprintln(os.Stderr, "usage: echo resolve NAME [INTERVAL]")
				return 2, true
			}
			interval = d
		}
		return runResolve(args[1], interval), true
	}
	if len(args) < 2 || (args[0] != "get" && args[0] != "udp") {
		return 0, false
	}
	n := 1
	if len(args) > 2 {
		if _, err := fmt.Sscan(args[2], &n); err != nil {
			fmt.Fprintln(os.Stderr, "usage: echo get URL [N] | echo udp HOST:PORT [N]")
			return 2, true
		}
	}
	if args[0] == "get" {
		return runClient(args[1], "", n), true
	}
	return runClient("", args[1], n), true
}
