package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/skiffnet/skiff/agent/containerd"
)

// defaultImageDirs are where the agent looks for image archives to import
// when --images-dir is not given: next to the skiff binary (a build tree's
// _output/images) and where `skiff install` puts them.
func defaultImageDirs() []string {
	dirs := []string{"/var/lib/skiff/images"}
	if exe, err := os.Executable(); err == nil {
		dirs = append([]string{filepath.Join(filepath.Dir(exe), "images")}, dirs...)
	}
	return dirs
}

// importImages loads every *.tar in the image directories into the node's
// containerd before the kubelet starts, so the sandbox image is there for the
// first pod and test images need no registry.
func (a *Agent) importImages(ctx context.Context, endpoint string) error {
	var files []string
	for _, d := range a.cfg.ImageDirs {
		m, _ := filepath.Glob(filepath.Join(d, "*.tar"))
		sort.Strings(m)
		files = append(files, m...)
	}
	if len(files) == 0 {
		a.progress("warning: no image archives in %v; pods need the sandbox image %s (build it with `make build`)", a.cfg.ImageDirs, SandboxImage)
		return nil
	}
	a.progress("importing %d images into containerd", len(files))
	sock := strings.TrimPrefix(endpoint, "unix://")
	// Concurrently: each import is a ctr process of its own, and the
	// kubelet, which waits for them, is on the node's start-up path.
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Go(func() {
			if _, err := containerd.Import(ctx, sock, f); err != nil {
				errs[i] = fmt.Errorf("import image archive %s: %w", f, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
