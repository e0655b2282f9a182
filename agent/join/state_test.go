package join

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cluster makes a CA as `skiff server` does and returns its file and token.
func cluster(t *testing.T, name string) (caFile, token string) {
	t.Helper()
	ca, tok, _ := authority(t, name)
	return ca.CertPath, tok.String()
}

// joined is a node state dir that joined the cluster of caFile, as the
// agent leaves it after FetchCA.
func joined(t *testing.T, caFile string) string {
	t.Helper()
	state := t.TempDir()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, StateCAFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return state
}

func TestCheckStateWithToken(t *testing.T) {
	caA, tokA := cluster(t, "a")
	_, tokB := cluster(t, "b")

	if err := CheckState(t.TempDir(), tokB, ""); err != nil {
		t.Errorf("a new node refused: %v", err)
	}
	state := joined(t, caA)
	if err := CheckState(state, tokA, ""); err != nil {
		t.Errorf("a restart with the node's own token refused: %v", err)
	}
	err := CheckState(state, tokB, "")
	if err == nil {
		t.Fatal("a node of cluster a started with cluster b's token: no error")
	}
	for _, want := range []string{"--token", "another cluster", state, "skiff uninstall"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// Refusing changes nothing: the node still belongs to cluster a.
	if err := CheckState(state, tokA, ""); err != nil {
		t.Errorf("after the refusal, the node's own token is refused: %v", err)
	}
}

func TestCheckStateServerNode(t *testing.T) {
	caA, _ := cluster(t, "a")
	caB, _ := cluster(t, "b")
	state := t.TempDir()
	if err := CheckState(state, "", caA); err != nil {
		t.Fatalf("the server's new node refused: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, StateCAFile)); err != nil {
		t.Fatalf("the server's CA was not recorded: %v", err)
	}
	if err := CheckState(state, "", caA); err != nil {
		t.Errorf("restart of the server's node refused: %v", err)
	}
	err := CheckState(state, "", caB)
	if err == nil || !strings.Contains(err.Error(), "skiff uninstall") || !strings.Contains(err.Error(), "SKIFF_AGENT_DATA_DIR") {
		t.Errorf("a new server over the old server's node state: %v, want a refusal saying what to do", err)
	}
}

func TestCheckStateUnreadableRecord(t *testing.T) {
	_, tok := cluster(t, "a")
	state := t.TempDir()
	os.WriteFile(filepath.Join(state, StateCAFile), []byte("not a certificate"), 0o644)
	if err := CheckState(state, tok, ""); err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("a corrupt %s: %v, want an error naming --data-dir", StateCAFile, err)
	}
}
