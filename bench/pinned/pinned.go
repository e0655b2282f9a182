// Package pinned runs the processes a benchmark compares, each pinned to a
// CPU at a chosen priority, and reads what they used from /proc: CPU time
// (their own and their children's, for servers with worker processes),
// resident memory, and how busy their core was. bench/dns and bench/ingress
// share it so that every contestant is started and measured the same way.
package pinned

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

// Proc is a process started under `taskset -c CPU`, so that every server
// under test gets the same single core.
type Proc struct {
	Name   string
	Cmd    *exec.Cmd
	exited chan struct{}
	logf   string
}

// Start runs argv pinned to cpu at niceness nice, its output in
// dir/NAME.log. env, when not nil, is its environment.
func Start(name, dir string, cpu, nice int, env []string, argv ...string) (*Proc, error) {
	p := &Proc{Name: name, exited: make(chan struct{}), logf: filepath.Join(dir, name+".log")}
	log, err := os.Create(p.logf)
	if err != nil {
		return nil, fmt.Errorf("%s: create log: %w", name, err)
	}
	p.Cmd = exec.Command("nice", Argv(cpu, nice, argv...)...)
	p.Cmd.Env = env
	p.Cmd.Stdout, p.Cmd.Stderr = log, log
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}
	if err := p.Cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("%s: exec %s: %w", name, argv[0], err)
	}
	if err := Prioritize(p.Cmd.Process.Pid, nice); err != nil {
		p.Cmd.Process.Kill()
		p.Cmd.Wait()
		log.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		p.Cmd.Wait()
		log.Close()
		close(p.exited)
	}()
	return p, nil
}

// Argv is the argv of nice that runs argv on cpu at the given niceness.
// nice and taskset both exec, so the PID is argv's own. Benchmarks raise
// their processes' priority because the machine they run on may be
// shared: the servers and load generators should get their cores.
func Argv(cpu, nice int, argv ...string) []string {
	return append([]string{"-n", strconv.Itoa(nice), "taskset", "-c", strconv.Itoa(cpu)}, argv...)
}

// Prioritize gives pid's scheduler autogroup the niceness nice. With
// autogroups (kernel.sched_autogroup_enabled=1, the default) the scheduler
// first shares a CPU fairly between sessions and only then by nice within
// one, so a process's own nice value is no help against a compiler in
// another session. Every process this package starts has its own session
// (Setsid), so the autogroup holds that process alone.
func Prioritize(pid, nice int) error {
	err := os.WriteFile(fmt.Sprintf("/proc/%d/autogroup", pid), []byte(strconv.Itoa(nice)), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel without autogroups: nice alone does it
	}
	if err != nil {
		return fmt.Errorf("set the autogroup niceness of %d: %w", pid, err)
	}
	return nil
}

// Alive returns an error when the process has exited.
func (p *Proc) Alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v\n%s", p.Name, p.Cmd.ProcessState, p.Tail())
	default:
		return nil
	}
}

// Close stops the process (SIGTERM, SIGKILL after 20 s) by its PID.
func (p *Proc) Close() { skiffserver.Stop(p.Cmd, p.exited) }

// Tail is the end of what the process printed, for error messages.
func (p *Proc) Tail() string { return skiffserver.TailFile(p.logf) }

// CPUTime is the user+system time the process and its children (nginx's
// workers) have used so far, all threads.
func (p *Proc) CPUTime() (time.Duration, error) { return sumTree(p, cpuTime) }

// sumTree adds f over the process and its descendants.
func sumTree[T time.Duration | uint64](p *Proc, f func(pid int) (T, error)) (T, error) {
	var sum T
	for _, pid := range tree(p.Cmd.Process.Pid) {
		v, err := f(pid)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p.Name, err)
		}
		sum += v
	}
	return sum, nil
}

func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after ')' are fixed.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat %q", s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc stat: %w", err)
	}
	// USER_HZ is 100 on every Linux this runs on.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// tree is pid and its descendants, from /proc/PID/task/TID/children.
func tree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, t := range tasks {
			b, _ := os.ReadFile(t)
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// SchedFIFO moves every thread of the process into SCHED_FIFO priority 1
// (threads it starts later inherit that) or back to SCHED_OTHER.
func (p *Proc) SchedFIFO(on bool) error {
	args := []string{"-a", "-o", "-p", "0", strconv.Itoa(p.Cmd.Process.Pid)}
	if on {
		args = []string{"-a", "-f", "-p", "1", strconv.Itoa(p.Cmd.Process.Pid)}
	}
	if out, err := exec.Command("chrt", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: chrt %s: %w: %s", p.Name, strings.Join(args, " "), err, out)
	}
	return nil
}

// CoreTicks reads /proc/stat's ticks of one CPU: busy (everything but
// idle and iowait, so interrupt and softirq time too, which /proc/PID/stat
// charges to no process), tasks (user, nice and system: what processes
// ran) and total.
func CoreTicks(cpu int) (busy, tasks, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read /proc/stat: %w", err)
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
				return 0, 0, 0, fmt.Errorf("parse /proc/stat %q: %w", line, err)
			}
			total += v
			if i != 3 && i != 4 { // idle, iowait
				busy += v
			}
			if i <= 2 {
				tasks += v
			}
		}
		return busy, tasks, total, nil
	}
	return 0, 0, 0, fmt.Errorf("no cpu%d in /proc/stat", cpu)
}

// RSS is the resident set of the process and its children, in bytes.
func (p *Proc) RSS() (uint64, error) { return sumTree(p, rss) }

func rss(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}
