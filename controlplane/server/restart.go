package server

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// restartOnFatal makes a clustered server restart in place when an
// upstream component ends the process. kube-controller-manager and
// kube-scheduler exit when they cannot renew their Lease, which happens
// to the leader whenever its API server loses the etcd quorum (two of
// three servers down). A bare exit would leave that machine without an
// API until something restarted it; re-executing gives the same result
// as the installed unit's Restart=always: the server comes back, its etcd
// member waits for the quorum (saying so every 30 s), and the rest
// follows. A component that fails within a minute of start is a real
// error: it exits as before, so a bad configuration cannot loop.
func (s *Server) restartOnFatal() {
	klog.OsExit = func(code int) {
		if time.Since(s.start) < time.Minute {
			os.Exit(code)
		}
		fmt.Fprintf(s.cfg.Out, "skiff server: an upstream component exited (code %d; most likely it lost its Lease because this server's etcd lost its quorum, see %s); restarting this server in place\n",
			code, "DATA/logs/server.log")
		exe, err := os.Executable()
		if err == nil {
			err = syscall.Exec(exe, os.Args, os.Environ())
		}
		fmt.Fprintf(s.cfg.Out, "skiff server: restart failed: %v\n", err)
		os.Exit(code)
	}
}
