package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/skiffnet/skiff/test/conformance/e2eimages"
)

// tools are the upstream programs a run needs, built by `make conformance`
// into one directory.
type tools struct {
	e2eTest, ginkgo, kubectl string
	programs                 e2eimages.Programs
}

func findTools(dir string) (tools, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return tools{}, err
	}
	in := func(name string) string { return filepath.Join(abs, name) }
	t := tools{
		e2eTest: in("e2e.test"),
		ginkgo:  in("ginkgo"),
		kubectl: os.Getenv("KUBECTL_BINARY"),
		programs: e2eimages.Programs{
			Agnhost: in("agnhost"), Nonewprivs: in("nonewprivs"), Consumer: in("resource-consumer"),
			ConsumeCPU: in("consume-cpu"), SampleAPIServer: in("sample-apiserver"), Etcd: in("etcd"), Pause: in("pause"),
			Busybox: in("busybox"),
		},
	}
	if t.kubectl == "" {
		return t, errors.New("KUBECTL_BINARY is not set: point it at the kubectl of the Kubernetes version under test (make build writes _output/kubectl)")
	}
	p := t.programs
	for _, f := range []string{t.e2eTest, t.ginkgo, t.kubectl, p.Agnhost, p.Nonewprivs, p.Consumer, p.ConsumeCPU, p.SampleAPIServer, p.Etcd, p.Pause, p.Busybox} {
		if _, err := os.Stat(f); err != nil {
			return t, fmt.Errorf("%w: run `make conformance`, which builds the upstream programs into %s", err, dir)
		}
	}
	// kitten and nautilus carry pictures from Kubernetes' source tree.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes").Output()
	if err != nil {
		return t, fmt.Errorf("locate k8s.io/kubernetes's source (go list -m, from Skiff's checkout): %w", err)
	}
	t.programs.KubernetesSource = strings.TrimSpace(string(out))
	return t, nil
}
