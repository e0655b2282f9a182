package e2eimages

import (
	"archive/tar"
	"errors"
	"io"
	"testing"
)

func TestLayerHoldsParentsModesAndLinks(t *testing.T) {
	r := NewRootfs()
	r.File("/usr/local/bin/nnp", []byte("#!"), 0o755)
	r.Chmod("/usr/local/bin/nnp", 0o4755)
	r.Symlink("/bin/sh", "/bin/busybox")
	r.Dir("/uploads", 0o777)
	base := r.Clone()
	r.File("/only-in-r", nil, 0o644)
	if _, ok := base.entries["only-in-r"]; ok {
		t.Error("Clone shares entries with its source")
	}
	layer, err := r.Layer()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if got[h.Name] != nil {
			t.Errorf("%s written twice", h.Name)
		}
		got[h.Name] = h
	}
	for name, check := range map[string]func(*tar.Header) bool{
		"usr/":              func(h *tar.Header) bool { return h.Typeflag == tar.TypeDir },
		"usr/local/bin/":    func(h *tar.Header) bool { return h.Typeflag == tar.TypeDir },
		"usr/local/bin/nnp": func(h *tar.Header) bool { return h.Mode == 0o4755 && h.Size == 2 },
		"bin/sh":            func(h *tar.Header) bool { return h.Typeflag == tar.TypeSymlink && h.Linkname == "/bin/busybox" },
		"uploads/":          func(h *tar.Header) bool { return h.Mode == 0o777 },
		"tmp/":              func(h *tar.Header) bool { return h.Mode == 0o1777 },
		"only-in-r":         func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg },
	} {
		if h := got[name]; h == nil || !check(h) {
			t.Errorf("%s: got %+v", name, h)
		}
	}
}
