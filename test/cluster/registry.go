package cluster

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/skiffnet/skiff/images"
)

// Registry is the test cluster's image registry (Debian's docker-registry),
// on the bridge so every node pulls from it over plain HTTP.
var Registry = bridgeIP + ":5000"

func (c *Cluster) startRegistry() {
	c.t.Helper()
	dir := filepath.Join(c.Dir, "registry")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	conf := fmt.Sprintf("version: 0.1\nlog: {level: warn}\nstorage:\n  filesystem: {rootdirectory: %s}\n  delete: {enabled: true}\nhttp:\n  addr: %s\n", dir, Registry)
	confPath := filepath.Join(c.Dir, "registry.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if _, err := os.Stat("/usr/bin/docker-registry"); err != nil {
		c.t.Fatal("docker-registry is not installed: apt-get install docker-registry (make deps does)")
	}
	p := start(c.t, c.Infra, "", filepath.Join(c.Dir, "registry.out"), "/usr/bin/docker-registry", "serve", confPath)
	client := &http.Client{Transport: &http.Transport{DialContext: dialer(c.Infra)}, Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := client.Get("http://" + Registry + "/v2/"); err == nil {
			resp.Body.Close()
			return
		}
		if p.hasExited() || time.Now().After(deadline) {
			c.t.Fatalf("registry did not answer at %s:\n%s", Registry, p.tail(20))
		}
	}
}

// Push uploads a image to the cluster's registry as REGISTRY/repo:tag.
func (c *Cluster) Push(img v1.Image, repoTag string) string {
	c.t.Helper()
	ref := Registry + "/" + repoTag
	tr := &http.Transport{DialContext: dialer(c.Infra)}
	if err := images.Push(img, ref, remote.WithTransport(tr)); err != nil {
		c.t.Fatal(err)
	}
	return ref
}
