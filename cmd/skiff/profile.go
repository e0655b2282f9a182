package main

import (
	"github.com/spf13/pflag"
)

// profileFlag registers --profile-addr: off by default, because profiles
// expose goroutine stacks and heap contents; a user turns it on to take
// the same heap and CPU profiles the benchmarks take (docs/operations.md).
func profileFlag(f *pflag.FlagSet, addr *string) {
	f.StringVar(addr, "profile-addr", "", "serve Go pprof profiles (/debug/pprof/) at this loopback HOST:PORT, e.g. 127.0.0.1:6060 (default: off)")
}
