package proxy

import "syscall"

// alive peeks at an idle connection without blocking: a backend that closed
// it (EOF) or sent something unasked makes it unusable. http.Transport
// learns this from its per-connection read goroutine; one system call on
// reuse is cheaper.
func (pc *h1Conn) alive() bool {
	if pc.raw == nil {
		return true
	}
	var buf [1]byte
	ok := false
	err := pc.raw.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = rerr == syscall.EAGAIN
		return true // never wait: nothing to read is the good answer
	})
	return err == nil && ok
}
