package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExamples is issue 8's acceptance point 2: every manifest set under
// examples/ applies on a 3-node cluster and passes the checks its comments
// state (`# check: KUBECTL ARGS`, `# curl: HOST PATH` through a node's
// proxy).
func TestExamples(t *testing.T) {
	entries, err := filepath.Glob("../../examples/*")
	var dirs []string
	for _, e := range entries {
		if fi, err := os.Stat(e); err == nil && fi.IsDir() {
			dirs = append(dirs, e)
		}
	}
	if err != nil || len(dirs) < 15 {
		t.Fatalf("examples: want at least 15 directories, found %v (%v)", dirs, err)
	}
	c := Start(t, Options{Nodes: 3, WaitReady: true})
	for _, dir := range dirs {
		c.MustKubectl("apply", "-f", dir)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range strings.Split(string(b), "\n") {
					if args, ok := strings.CutPrefix(l, "# check: "); ok {
						if out, err := c.Kubectl(strings.Fields(args)...); err != nil {
							t.Errorf("%s: kubectl %s: %v\n%s", filepath.Base(f), args, err, out)
						}
					}
					if req, ok := strings.CutPrefix(l, "# curl: "); ok {
						host, path, _ := strings.Cut(strings.TrimSpace(req), " ")
						err := poll(60*time.Second, func() bool {
							out, _ := c.ClientExec("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
								"-H", "Host: "+host, "http://"+c.Nodes[0].IP+path)
							return out == "200"
						})
						if err != nil {
							t.Errorf("%s: http://%s%s through the node's proxy never answered 200", filepath.Base(f), host, path)
						}
					}
				}
			}
		})
	}
}
