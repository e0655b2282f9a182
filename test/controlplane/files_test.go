package controlplane

import (
	"os"
	"strconv"
	"testing"
)

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func itoa(i int) string { return strconv.Itoa(i) }
