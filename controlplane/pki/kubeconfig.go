package pki

import (
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// WriteKubeconfig writes a kubeconfig (mode 0600) that reaches server with the
// client certificate leaf, trusting caPath. Files are embedded rather than
// referenced so the kubeconfig can be copied to another machine.
func WriteKubeconfig(path, server, caPath string, leaf *Leaf, user string) error {
	ca, err := os.ReadFile(caPath)
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(leaf.CertPath)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(leaf.KeyPath)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["skiff"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["skiff"] = &clientcmdapi.Context{Cluster: "skiff", AuthInfo: user}
	cfg.CurrentContext = "skiff"
	return writeConfig(path, cfg)
}

// WriteTokenKubeconfig writes a kubeconfig that authenticates with a bearer token.
func WriteTokenKubeconfig(path, server string, caPEM []byte, token, user string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["skiff"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["skiff"] = &clientcmdapi.Context{Cluster: "skiff", AuthInfo: user}
	cfg.CurrentContext = "skiff"
	return writeConfig(path, cfg)
}

func writeConfig(path string, cfg *clientcmdapi.Config) error {
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	return writeFile(path, data, 0o600)
}

// SetKubeconfigServer points every cluster of the kubeconfig at path to
// server, keeping its credentials; a missing file is left missing.
func SetKubeconfigServer(path, server string) error {
	cfg, err := clientcmd.LoadFromFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	changed := false
	for _, c := range cfg.Clusters {
		if c.Server != server {
			c.Server, changed = server, true
		}
	}
	if !changed {
		return nil
	}
	return writeConfig(path, cfg)
}
