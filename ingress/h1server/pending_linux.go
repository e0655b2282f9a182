package h1server

import "syscall"

// pending reports, without blocking or reading, whether the socket has
// bytes (or an EOF or error) to read.
func pending(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}
