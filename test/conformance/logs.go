package main

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// saveLogs copies the cluster's process logs (the server's and agents'
// output, containerd's and the data planes' logs) into dst before the
// cluster and its directory are removed: a failed test's cause is often
// only in a node's log.
func saveLogs(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a directory that went away or is not ours to read
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			// Pods' own logs and containerd's state are large and are the
			// tests' business, not the cluster's.
			if strings.Count(rel, string(filepath.Separator)) >= 3 || d.Name() == "pods" || d.Name() == "containers" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !(strings.HasSuffix(path, ".log") || strings.HasSuffix(path, ".out")) {
			return nil
		}
		return copyFile(path, filepath.Join(dst, rel))
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
