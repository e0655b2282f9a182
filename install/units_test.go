package install

import (
	"strings"
	"testing"
)

func TestRenderQuoting(t *testing.T) {
	u := Unit{Name: "skiff-agent", Description: "d", Binary: "/usr/local/bin/skiff", EnvFile: "/etc/skiff/skiff-agent.env",
		Args: []string{"agent", "--token", "${SKIFF_TOKEN}", "--node-name", "a b", "--x", "50%", "--y", "$HOME"}}
	b, err := u.Render()
	if err != nil {
		t.Fatal(err)
	}
	want := `ExecStart=/usr/local/bin/skiff agent --token ${SKIFF_TOKEN} --node-name "a b" --x "50%%" --y "$$HOME"`
	if !strings.Contains(string(b), want+"\n") {
		t.Errorf("unit:\n%s\nwant line:\n%s", b, want)
	}
	if !strings.Contains(string(b), "EnvironmentFile=/etc/skiff/skiff-agent.env\n") {
		t.Errorf("unit lacks its EnvironmentFile:\n%s", b)
	}
}
