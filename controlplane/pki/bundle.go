package pki

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Names are the DNS names and addresses the API server's certificate carries.
type Names struct {
	DNSNames []string
	IPs      []net.IP
}

// Bundle is every credential the control plane uses, as files under Dir.
type Bundle struct {
	Dir              string
	CA               *Authority
	FrontProxyCA     *Authority
	Server           *Leaf
	Admin            *Leaf
	ControllerMgr    *Leaf
	Scheduler        *Leaf
	KubeletClient    *Leaf // the API server's identity towards kubelets
	FrontProxyClient *Leaf
	SAKey, SAPub     string
	// EtcdCA signs the embedded etcd's certificate, which serves its
	// clients and peers and is also its client identity towards other
	// members: a separate CA, so a Kubernetes client certificate can never
	// talk to etcd.
	EtcdCA *Authority
	Etcd   *Leaf
}

// Ensure loads the bundle under dir, creating what is missing. The same data
// dir therefore keeps its CA across restarts, so issued kubeconfigs and node
// certificates stay valid.
func Ensure(dir string, names Names) (*Bundle, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w (is --data-dir writable?)", dir, err)
	}
	b := &Bundle{Dir: dir}
	var err error
	if b.CA, err = LoadOrCreateAuthority(dir, "ca", "skiff-ca"); err != nil {
		return nil, err
	}
	if b.FrontProxyCA, err = LoadOrCreateAuthority(dir, "front-proxy-ca", "skiff-front-proxy-ca"); err != nil {
		return nil, err
	}
	if b.EtcdCA, err = LoadOrCreateAuthority(dir, "etcd-ca", "skiff-etcd-ca"); err != nil {
		return nil, err
	}
	leaves := []struct {
		dst  **Leaf
		ca   *Authority
		spec LeafSpec
	}{
		{&b.Server, b.CA, LeafSpec{Name: "apiserver", CommonName: "kube-apiserver", DNSNames: names.DNSNames, IPs: names.IPs, Server: true}},
		{&b.Admin, b.CA, LeafSpec{Name: "admin", CommonName: "skiff-admin", Organization: []string{"system:masters"}, Client: true}},
		{&b.ControllerMgr, b.CA, LeafSpec{Name: "controller-manager", CommonName: "system:kube-controller-manager", Client: true}},
		{&b.Scheduler, b.CA, LeafSpec{Name: "scheduler", CommonName: "system:kube-scheduler", Client: true}},
		{&b.KubeletClient, b.CA, LeafSpec{Name: "apiserver-kubelet-client", CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true}},
		{&b.FrontProxyClient, b.FrontProxyCA, LeafSpec{Name: "front-proxy-client", CommonName: "front-proxy-client", Client: true}},
		{&b.Etcd, b.EtcdCA, LeafSpec{Name: "etcd", CommonName: "etcd", DNSNames: []string{"localhost"}, IPs: names.IPs, Server: true, Client: true}},
	}
	for _, l := range leaves {
		if *l.dst, err = l.ca.Issue(dir, l.spec); err != nil {
			return nil, err
		}
	}
	if b.SAKey, b.SAPub, err = LoadOrCreateKeyPair(dir, "service-account"); err != nil {
		return nil, err
	}
	return b, nil
}

// SharedFiles are the files every server of one cluster holds alike: the
// authorities and the service-account keys. A joining server receives
// them; each server issues its own leaves from them.
var SharedFiles = []string{
	"ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key",
	"etcd-ca.crt", "etcd-ca.key", "service-account.key", "service-account.pub",
}

// Path is a file under the bundle's directory.
func (b *Bundle) Path(name string) string { return filepath.Join(b.Dir, name) }
