package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skiffnet/skiff/bench/skiffserver"
)

// pinned is a DNS server process this program started under `taskset -c
// CPU`, so that every server under test gets the same single core.
type pinned struct {
	name   string
	addr   string // 127.0.0.1:PORT it answers on
	cmd    *exec.Cmd
	exited chan struct{}
	logf   string
}

func startPinned(name, addr, dir string, cpu, nice int, argv ...string) (*pinned, error) {
	p := &pinned{name: name, addr: addr, exited: make(chan struct{}), logf: filepath.Join(dir, name+".log")}
	log, err := os.Create(p.logf)
	if err != nil {
		return nil, fmt.Errorf("%s: create log: %w", name, err)
	}
	p.cmd = exec.Command("nice", pin(cpu, nice, argv...)...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}
	if err := p.cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: exec %s: %w", name, argv[0], err)
	}
	if err := prioritize(p.cmd.Process.Pid, nice); err != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		log.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		p.cmd.Wait()
		log.Close()
		close(p.exited)
	}()
	return p, nil
}

// pin is the argv of nice that runs argv on cpu at the given niceness.
// nice and taskset both exec, so the PID is argv's own. The benchmark
// raises its processes' priority because the machine it runs on may be
// shared: the servers and dnsperf should get their cores, not a compiler.
func pin(cpu, nice int, argv ...string) []string {
	return append([]string{"-n", strconv.Itoa(nice), "taskset", "-c", strconv.Itoa(cpu)}, argv...)
}

// prioritize gives pid's scheduler autogroup the niceness nice. With
// autogroups (kernel.sched_autogroup_enabled=1, the default) the scheduler
// first shares a CPU fairly between sessions and only then by nice within
// one, so a process's own nice value is no help against a compiler in
// another session. Every process this program prioritizes is started with
// Setsid, so the autogroup holds that process alone.
func prioritize(pid, nice int) error {
	err := os.WriteFile(fmt.Sprintf("/proc/%d/autogroup", pid), []byte(strconv.Itoa(nice)), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel without autogroups: nice alone does it
	}
	if err != nil {
		return fmt.Errorf("set the autogroup niceness of %d: %w", pid, err)
	}
	return nil
}

func (p *pinned) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, p.tail())
	default:
		return nil
	}
}

// close stops the server (SIGTERM, SIGKILL after 20 s) by its PID.
func (p *pinned) close() { skiffserver.Stop(p.cmd, p.exited) }

// tail is the end of what the server printed, for error messages.
func (p *pinned) tail() string { return skiffserver.TailFile(p.logf) }

// cpuTime is the user+system time the process has used so far, all threads.
func (p *pinned) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%s: read cpu time: %w", p.name, err)
	}
	// The command name (field 2) may hold spaces; fields after ')' are fixed.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: short /proc stat %q", p.name, s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: parse /proc stat: %w", p.name, err)
	}
	// USER_HZ is 100 on every Linux this runs on.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// schedFIFO moves every thread of the server into SCHED_FIFO priority 1
// (threads it starts later inherit that) or back to SCHED_OTHER.
func (p *pinned) schedFIFO(on bool) error {
	args := []string{"-a", "-o", "-p", "0", strconv.Itoa(p.cmd.Process.Pid)}
	if on {
		args = []string{"-a", "-f", "-p", "1", strconv.Itoa(p.cmd.Process.Pid)}
	}
	if out, err := exec.Command("chrt", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: chrt %s: %w: %s", p.name, strings.Join(args, " "), err, out)
	}
	return nil
}

// coreTicks reads /proc/stat's busy and total ticks of one CPU. Busy
// includes interrupt and softirq time, which /proc/PID/stat does not
// charge to any process: much of a loopback DNS server's packet work.
func coreTicks(cpu int) (busy, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	prefix := "cpu" + strconv.Itoa(cpu) + " "
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		for i, f := range strings.Fields(rest) {
			if i >= 8 { // guest time is already in user
				break
			}
			v, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("parse /proc/stat %q: %w", line, err)
			}
			total += v
			if i != 3 && i != 4 { // idle, iowait
				busy += v
			}
		}
		return busy, total, nil
	}
	return 0, 0, fmt.Errorf("no cpu%d in /proc/stat", cpu)
}

// rss is the process's resident set in bytes.
func (p *pinned) rss() (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("%s: read memory: %w", p.name, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("%s: no VmRSS", p.name)
}
