// Command echo is Skiff's test and demo workload. It answers HTTP/1.1, h2c,
// gRPC health checks and WebSocket on one port, and echoes raw TCP and UDP on
// two more, always saying who it is (pod, namespace, node, pod IP, version)
// and which client address it saw, so tests can check load balancing and
// source-address preservation from the outside.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// version is set at link time: the v1 and v2 images differ only here.
var version = "dev"

type options struct {
	http, tcp, udp string
	exitAfter      time.Duration
	exitCode       int
	drain          time.Duration
}

func main() {
	if code, ok := clientMode(os.Args[1:]); ok {
		os.Exit(code)
	}
	var o options
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.StringVar(&o.http, "http", ":8080", "HTTP/1.1, h2c, gRPC and WebSocket listen address")
	flag.StringVar(&o.tcp, "tcp", ":9000", "raw TCP echo listen address (empty: off)")
	flag.StringVar(&o.udp, "udp", ":9001", "UDP echo listen address (empty: off)")
	flag.DurationVar(&o.exitAfter, "exit-after", 0, "exit after this long (for crash-loop tests; 0: never)")
	flag.IntVar(&o.exitCode, "exit-code", 1, "exit code used with -exit-after")
	flag.DurationVar(&o.drain, "drain", 0, "on SIGTERM keep serving this long before exiting")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	if err := run(o, log); err != nil {
		log.Error("echo failed", "err", err)
		os.Exit(1)
	}
}

func run(o options, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	id := identify()
	errs := make(chan error, 3)
	srv, err := serveHTTP(o.http, id, log, errs)
	if err != nil {
		return err
	}
	if err := serveTLS(id, log, errs); err != nil {
		return err
	}
	if o.tcp != "" {
		if err := serveTCP(ctx, o.tcp, id, errs); err != nil {
			return err
		}
	}
	if o.udp != "" {
		if err := serveUDP(ctx, o.udp, id, errs); err != nil {
			return err
		}
	}
	log.Info("listening", "version", version, "http", o.http, "tcp", o.tcp, "udp", o.udp, "pod", id.Pod, "node", id.Node)
	var exit <-chan time.Time
	if o.exitAfter > 0 {
		exit = time.After(o.exitAfter)
	}
	select {
	case err := <-errs:
		return err
	case <-exit:
		log.Info("exiting as asked", "code", o.exitCode)
		os.Exit(o.exitCode)
	case <-ctx.Done():
	}
	log.Info("terminating", "drain", o.drain)
	time.Sleep(o.drain)
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}
