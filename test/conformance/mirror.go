package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	imageutils "k8s.io/kubernetes/test/utils/image"
	// The yaml package upstream reads the list with: it goes by the
	// fields' yaml tags.
	"go.yaml.in/yaml/v2"

	"github.com/skiffnet/skiff/test/cluster"
	"github.com/skiffnet/skiff/test/conformance/e2eimages"
	"github.com/skiffnet/skiff/test/harness"
)

// mirrorImages builds the e2e test images and pushes each to the cluster's
// registry under the name the tests will ask for, given the repo list it
// writes to dir (the KUBE_TEST_REPO_LIST file it returns).
func mirrorImages(r *harness.Runner, c *cluster.Cluster, t tools, dir string) (string, error) {
	start := time.Now()
	list := e2eimages.RepoList(cluster.Registry)
	b, err := yaml.Marshal(list)
	if err != nil {
		return "", err
	}
	repoList := filepath.Join(dir, "repo-list.yaml")
	if err := os.WriteFile(repoList, b, 0o644); err != nil {
		return "", err
	}
	imageutils.Init(repoList)
	imgs, err := e2eimages.Build(t.programs)
	if err != nil {
		return "", fmt.Errorf("build the e2e test images: %w", err)
	}
	var refs []string
	for id, img := range imgs {
		refs = append(refs, imageutils.GetE2EImage(id))
		ref := strings.TrimPrefix(imageutils.GetE2EImage(id), cluster.Registry+"/")
		if !r.Do(func() { c.Push(img, ref) }) {
			return "", fmt.Errorf("push %s to the cluster's registry failed (see above)", ref)
		}
	}
	slices.Sort(refs)
	fmt.Printf("mirrored %d test images into %s in %v:\n  %s\n", len(refs), cluster.Registry,
		time.Since(start).Round(time.Second), strings.Join(refs, "\n  "))
	return repoList, nil
}
