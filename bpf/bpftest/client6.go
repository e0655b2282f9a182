package bpftest

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Go's net package dials an IPv4 address, v4-mapped or not, from an IPv4
// socket; the clients below use an IPv6 socket and the v4-mapped form of
// target, as Java and other dual-stack programs do, so the *6 hooks run.
// They print the peer as the kernel reports it ("[::ffff:a.b.c.d]:port").

// Dial6 connects to target from an IPv6 socket and returns the client line.
func Dial6(target string) string {
	start := time.Now()
	fd, err := socket6(unix.SOCK_STREAM, target)
	if err != nil {
		return fmt.Sprintf("err %s %d", errnoName(err), time.Since(start).Milliseconds())
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sockaddr6(target)); err != nil {
		return fmt.Sprintf("err %s %d", errnoName(err), time.Since(start).Milliseconds())
	}
	buf := make([]byte, 64)
	n, err := unix.Read(fd, buf)
	if err != nil || n == 0 {
		return fmt.Sprintf("err read:%v 0", err)
	}
	peer, err := unix.Getpeername(fd)
	if err != nil {
		return fmt.Sprintf("err getpeername:%v 0", err)
	}
	return fmt.Sprintf("ok %s %s", strings.TrimSpace(string(buf[:n])), format6(peer))
}

// udp6 sends n datagrams to target from one unconnected IPv6 socket and
// prints a client line for each answer.
func udp6(target string, n int) {
	fd, err := socket6(unix.SOCK_DGRAM, target)
	if err != nil {
		fmt.Println("err socket", errnoName(err))
		return
	}
	defer unix.Close(fd)
	buf := make([]byte, 64)
	for range n {
		if err := unix.Sendto(fd, []byte("ping"), 0, sockaddr6(target)); err != nil {
			fmt.Println("err", errnoName(err), 0)
			continue
		}
		k, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			fmt.Println("err", errnoName(err), 0)
			continue
		}
		fmt.Println("ok", string(buf[:k]), format6(from))
	}
}

func socket6(typ int, target string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET6, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	tv := unix.Timeval{Sec: 2}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	return fd, nil
}

func sockaddr6(target string) *unix.SockaddrInet6 {
	ap := netip.MustParseAddrPort(target)
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func format6(sa unix.Sockaddr) string {
	if s, ok := sa.(*unix.SockaddrInet6); ok {
		return netip.AddrPortFrom(netip.AddrFrom16(s.Addr), uint16(s.Port)).String()
	}
	return fmt.Sprintf("%v", sa)
}
