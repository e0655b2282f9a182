package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// startBackends listens on n ports of backendIP. Each connection is one
// request: the backend sends one byte, the client reads it and closes.
func startBackends(n int) ([]uint16, error) {
	var ports []uint16
	for range n {
		l, err := net.Listen("tcp4", backendIP+":0")
		if err != nil {
			return nil, err
		}
		ports = append(ports, uint16(l.Addr().(*net.TCPAddr).Port))
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					c.Write([]byte{'x'})
					var b [1]byte
					c.Read(b[:]) // until the client closes
					c.Close()
				}()
			}
		}()
	}
	return ports, nil
}

// result is what a client run measured.
type result struct {
	Conns    int
	Errors   int
	Seconds  float64
	P50, P99 time.Duration
}

func (r result) rate() float64 { return float64(r.Conns) / r.Seconds }

// measure runs the client inside cgroup cg (where the eBPF programs act)
// against target.
func measure(cg, target string) (result, error) {
	fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return result{}, err
	}
	defer unix.Close(fd)
	cmd := exec.Command("/proc/self/exe", target, duration.String(), strconv.Itoa(*workers))
	cmd.Env = append(os.Environ(), clientEnv+"=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("client for %s: %w", target, err)
	}
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("client for %s printed %q: %w", target, out, err)
	}
	if r.Conns == 0 || r.Errors > r.Conns/100 {
		return r, fmt.Errorf("client for %s: %d connections, %d errors", target, r.Conns, r.Errors)
	}
	return r, nil
}

// client connects to its target from several workers for a while and
// prints a result as JSON.
func client() int {
	args := os.Args[len(os.Args)-3:]
	target := args[0]
	d, _ := time.ParseDuration(args[1])
	n, _ := strconv.Atoi(args[2])
	var (
		mu     sync.Mutex
		lats   []time.Duration
		errs   int
		wg     sync.WaitGroup
		start  = time.Now()
		finish = start.Add(d)
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for time.Now().Before(finish) {
				t := time.Now()
				if err := request(target); err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lats, errs = append(lats, mine...), errs+bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lats)
	r := result{Conns: len(lats), Errors: errs, Seconds: time.Since(start).Seconds()}
	if len(lats) > 0 {
		r.P50, r.P99 = lats[len(lats)/2], lats[len(lats)*99/100]
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

func request(target string) error {
	c, err := net.Dial("tcp4", target)
	if err != nil {
		return err
	}
	// Reset instead of TIME_WAIT, so ports are not exhausted.
	c.(*net.TCPConn).SetLinger(0)
	defer c.Close()
	var b [1]byte
	_, err = c.Read(b[:])
	return err
}
