// Package e2eimages builds the container images Kubernetes' e2e tests run
// (agnhost, busybox, nginx, etcd, the sample API server, ...) on a machine
// with no registry on the internet: each image is a root filesystem put
// together from this machine's Debian packages (busybox-static, curl, dig,
// nginx, ...) and from upstream's Go code built at the Kubernetes version
// Skiff is built from. Mirroring the test images this way is what an
// air-gapped site does; the tests themselves are upstream's, unchanged.
package e2eimages

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// entry is one file system object of a Rootfs.
type entry struct {
	data []byte
	mode int64  // permission bits, setuid included
	link string // symlink target when not empty
	dir  bool
}

// Rootfs is an image's file system being put together.
type Rootfs struct {
	entries map[string]entry // by path without the leading slash
}

// NewRootfs returns a file system with the directories every image has.
func NewRootfs() *Rootfs {
	r := &Rootfs{entries: map[string]entry{}}
	r.Dir("/tmp", 0o1777)
	r.Dir("/root", 0o700)
	r.Dir("/etc", 0o755)
	return r
}

// Clone returns an independent copy, to build several images on one base.
func (r *Rootfs) Clone() *Rootfs {
	return &Rootfs{entries: maps.Clone(r.entries)}
}

// Dir adds a directory.
func (r *Rootfs) Dir(p string, mode int64) { r.entries[clean(p)] = entry{dir: true, mode: mode} }

// File adds a file with the given contents.
func (r *Rootfs) File(p string, data []byte, mode int64) {
	r.entries[clean(p)] = entry{data: data, mode: mode}
}

// Chmod sets the permission bits of p, if it is there.
func (r *Rootfs) Chmod(p string, mode int64) {
	if e, ok := r.entries[clean(p)]; ok {
		e.mode = mode
		r.entries[clean(p)] = e
	}
}

// Symlink adds a symbolic link p → target.
func (r *Rootfs) Symlink(p, target string) { r.entries[clean(p)] = entry{link: target, mode: 0o777} }

// Copy adds the file at host path src as p, keeping its permission bits.
func (r *Rootfs) Copy(src, p string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	r.File(p, b, int64(st.Mode().Perm()))
	return nil
}

// Program adds the host's dynamically linked program src as p, with the
// shared libraries it loads at the paths the dynamic linker looks them up
// (ldd tells which). glibc resolves names with its built-in files and dns
// services (glibc ≥ 2.34), so nothing is loaded later by dlopen.
func (r *Rootfs) Program(src, p string) error {
	if err := r.Copy(src, p); err != nil {
		return fmt.Errorf("%s (is its Debian package installed?): %w", src, err)
	}
	libs, err := sharedLibraries(src)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if err := r.Copy(lib, lib); err != nil {
			return fmt.Errorf("%s needs %s: %w", src, lib, err)
		}
	}
	return nil
}

// sharedLibraries lists the libraries ldd resolves for a program, the
// dynamic linker included.
func sharedLibraries(prog string) ([]string, error) {
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", prog, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	// The linker's canonical path may be a symlink on the host
	// (/lib64/ld-linux-x86-64.so.2 → /lib/x86_64-linux-gnu/...): Copy
	// reads through it and stores the file under the path the program names.
	return libs, nil
}

// Layer is the file system as one image layer. Parent directories are
// added as needed, and timestamps are fixed so builds are reproducible.
func (r *Rootfs) Layer() (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	written := map[string]bool{}
	var writeDir func(d string) error
	writeDir = func(d string) error {
		if d == "." || written[d] {
			return nil
		}
		if err := writeDir(path.Dir(d)); err != nil {
			return err
		}
		written[d] = true
		mode := int64(0o755)
		if e, ok := r.entries[d]; ok && e.dir {
			mode = e.mode
		}
		return tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: epoch})
	}
	for _, p := range slices.Sorted(maps.Keys(r.entries)) {
		e := r.entries[p]
		if err := writeDir(path.Dir(p)); err != nil {
			return nil, err
		}
		var err error
		switch {
		case e.dir:
			err = writeDir(p)
		case e.link != "":
			err = tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeSymlink, Linkname: e.link, Mode: e.mode, ModTime: epoch})
		default:
			if err = tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: e.mode, Size: int64(len(e.data)), ModTime: epoch}); err == nil {
				_, err = tw.Write(e.data)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("layer: %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}

func clean(p string) string { return strings.TrimPrefix(filepath.Clean("/"+p), "/") }
