// Package images builds Skiff's own container images (the pod sandbox and
// the echo test server) from static Go binaries, as docker archives that
// `ctr images import` loads, and pushes them to a registry. No Dockerfile and
// no registry on the internet: the images are the binaries plus a config.
package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"runtime"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Spec describes an image made of one static binary.
type Spec struct {
	// Ref names the image, e.g. skiff.local/echo:v1.
	Ref string
	// Binary is the file on this machine to put in the image.
	Binary string
	// Path is where the binary lives in the image; it is the entrypoint.
	Path string
	// Args are the default arguments (the image's Cmd).
	Args []string
	// Files are more files to copy in: path in the image → file here (a
	// test tools image carries dig and the libraries it links).
	Files map[string]string
}

// epoch keeps builds reproducible: the same binary gives the same digest.
var epoch = time.Unix(0, 0)

// Build returns the image Spec describes.
func Build(s Spec) (v1.Image, error) {
	if s.Ref == "" || s.Binary == "" || s.Path == "" {
		return nil, fmt.Errorf("image spec %+v: Ref, Binary and Path are required", s)
	}
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	files := map[string][]byte{s.Path: bin}
	for dst, src := range s.Files {
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", s.Ref, err)
		}
		files[dst] = b
	}
	layerTar, err := filesTar(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", s.Ref, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", s.Ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{s.Path}
	cfg.Config.Cmd = s.Args
	cfg.Config.Env = []string{"PATH=/"}
	cfg.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cfg)
}

// filesTar is a layer holding the files (all executable), their parent
// directories and a /tmp directory.
func filesTar(files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: epoch}); err != nil {
		return nil, err
	}
	written := map[string]bool{"tmp/": true}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		name := trimSlash(p)
		var parents []string
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			parents = append([]string{d + "/"}, parents...)
		}
		for _, d := range parents {
			if written[d] {
				continue
			}
			written[d] = true
			if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
				return nil, err
			}
		}
		data := files[p]
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func trimSlash(p string) string {
	for len(p) > 0 && p[0] == '/' {
		p = p[1:]
	}
	return p
}

// WriteArchive writes img as a docker archive tagged ref.
func WriteArchive(img v1.Image, ref, file string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	tmp := file + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return os.Rename(tmp, file)
}

// Push uploads img to a plain-HTTP registry (such as the test cluster's
// loopback one) as ref, e.g. 172.30.0.1:5000/echo:v3.
func Push(img v1.Image, ref string, opts ...remote.Option) error {
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}
