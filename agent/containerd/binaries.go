package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// BundleDir is the directory, next to the skiff executable, where `make
// build` puts the containerd Skiff ships (built from the Go modules under
// agent/containerd/build) with its shim, ctr and runc, under their upstream
// names. It is a directory of its own so that installing skiff next to a
// machine's own containerd (both in /usr/local/bin) overwrites nothing.
const BundleDir = "skiff-containerd"

// Binaries are the programs a node's containerd runs with.
type Binaries struct {
	Containerd string
	Shim       string // containerd-shim-runc-v2
	Runc       string
	Ctr        string // imports image archives
}

// Dir is the directory containerd starts in and whose programs come first
// on its PATH: containerd looks for its shim in its working directory, then
// on PATH, so a machine's older containerd-shim-runc-v2 in /usr/bin is
// never picked up.
func (b Binaries) Dir() string { return filepath.Dir(b.Containerd) }

// MinMajor is the oldest containerd major version the rendered
// configuration (version 3) is valid for.
const MinMajor = 2

// FindBinaries returns the containerd Skiff ships, next to the running
// executable, else the one on PATH if it is containerd 2.x or newer.
func FindBinaries(ctx context.Context) (Binaries, error) {
	if b, ok := shipped(); ok {
		return b, nil
	}
	return fromPath(ctx)
}

// shipped is the bundle next to the running executable (through symlinks,
// so a link to skiff in another directory finds it too).
func shipped() (Binaries, bool) {
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		return Binaries{}, false
	}
	return bundled(filepath.Join(filepath.Dir(self), BundleDir))
}

// bundled is the complete set of programs in dir, if they are all there.
func bundled(dir string) (Binaries, bool) {
	b := Binaries{
		Containerd: filepath.Join(dir, "containerd"),
		Shim:       filepath.Join(dir, "containerd-shim-runc-v2"),
		Runc:       filepath.Join(dir, "runc"),
		Ctr:        filepath.Join(dir, "ctr"),
	}
	for _, p := range []string{b.Containerd, b.Shim, b.Runc, b.Ctr} {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return Binaries{}, false
		}
	}
	return b, true
}

// fromPath finds a containerd installed on the machine, as a fallback for
// a skiff binary copied without its bundle.
func fromPath(ctx context.Context) (Binaries, error) {
	var b Binaries
	var missing []string
	for _, f := range []struct {
		name string
		dst  *string
	}{{"containerd", &b.Containerd}, {"containerd-shim-runc-v2", &b.Shim}, {"runc", &b.Runc}, {"ctr", &b.Ctr}} {
		p, err := exec.LookPath(f.name)
		if err != nil {
			missing = append(missing, f.name)
			continue
		}
		*f.dst = p
	}
	if len(missing) > 0 {
		return Binaries{}, fmt.Errorf("no containerd next to skiff (%s/) and %v not on PATH: run make build, which builds them there, or pass --container-runtime-endpoint", BundleDir, missing)
	}
	major, version, err := Version(ctx, b.Containerd)
	if err != nil {
		return Binaries{}, err
	}
	if major < MinMajor {
		return Binaries{}, fmt.Errorf("%s is containerd %s, and Skiff needs containerd %d.x or newer: install skiff with the %s directory make build puts next to it, or pass --container-runtime-endpoint for a runtime you run yourself", b.Containerd, version, MinMajor, BundleDir)
	}
	return b, nil
}

var versionRE = regexp.MustCompile(`\sv?(\d+)\.(\d+)\.\d+\S*`)

// Version asks a containerd binary its version, returning its major
// version and the version string.
func Version(ctx context.Context, bin string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return 0, "", fmt.Errorf("%s --version: %w", bin, err)
	}
	return parseVersion(string(out))
}

// parseVersion reads `containerd --version`: "containerd
// github.com/containerd/containerd/v2 v2.4.2 <commit>" (1.x Debian builds
// print "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1").
func parseVersion(out string) (int, string, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return 0, "", errors.New("containerd --version: no version in " + strconv.Quote(out))
	}
	major, _ := strconv.Atoi(m[1])
	return major, m[0][1:], nil
}
