package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"k8s.io/klog/v2"
)

// redirectComponentLogs sends the upstream components' klog output to a file
// so the terminal shows Skiff's progress, not thousands of library lines;
// with debug it goes to stderr as upstream binaries do.
func redirectComponentLogs(path string, debug bool, verbosity int) (*slog.Logger, error) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	set := func(k, v string) { _ = fs.Set(k, v) }
	set("v", fmt.Sprint(verbosity))
	if debug {
		set("logtostderr", "true")
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	set("logtostderr", "false")
	set("alsologtostderr", "false")
	set("stderrthreshold", "FATAL")
	set("skip_log_headers", "true")
	klog.SetOutput(f)
	// The kubelet re-initialises its logging to stderr, so move stderr
	// itself into the file; skiff's own messages keep the terminal.
	saved, err := unix.Dup(2)
	if err != nil {
		return nil, fmt.Errorf("keep stderr: %w", err)
	}
	if err := unix.Dup3(int(f.Fd()), 2, 0); err != nil {
		return nil, fmt.Errorf("redirect stderr to %s: %w", path, err)
	}
	userErr = os.NewFile(uintptr(saved), "stderr")
	return slog.New(slog.NewTextHandler(f, nil)), nil
}

// userErr is where skiff's own error lines go: the terminal's stderr, even
// after component logs were moved to a file.
var userErr = os.Stderr
