package server

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/skiffnet/skiff/controlplane/pki"
)

func (s *Server) apiserverArgs(etcdServers []string) []string {
	c, b := s.cfg, s.pki
	args := []string{
		"--bind-address=" + c.BindAddress,
		"--secure-port=" + strconv.Itoa(c.HTTPSPort),
		"--advertise-address=" + c.AdvertiseAddress,
		"--etcd-servers=" + strings.Join(etcdServers, ","),
		"--tls-cert-file=" + b.Server.CertPath,
		"--tls-private-key-file=" + b.Server.KeyPath,
		"--client-ca-file=" + b.CA.CertPath,
		"--anonymous-auth=false",
		"--enable-bootstrap-token-auth=true",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-account-issuer=https://kubernetes.default.svc." + c.ClusterDomain,
		"--service-account-key-file=" + b.SAPub,
		"--service-account-signing-key-file=" + b.SAKey,
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--service-node-port-range=" + c.NodePortRange,
		"--kubelet-client-certificate=" + b.KubeletClient.CertPath,
		"--kubelet-client-key=" + b.KubeletClient.KeyPath,
		"--kubelet-preferred-address-types=InternalIP,Hostname,ExternalIP",
		// Webhooks and aggregated APIs are dialled at an endpoint's pod IP,
		// not the Service's ClusterIP: ClusterIPs exist only in the nodes'
		// eBPF load balancer, which a control plane without an agent lacks
		// (k3s sets the same). See docs/architecture.md.
		"--enable-aggregator-routing=true",
		"--proxy-client-cert-file=" + b.FrontProxyClient.CertPath,
		"--proxy-client-key-file=" + b.FrontProxyClient.KeyPath,
		"--requestheader-client-ca-file=" + b.FrontProxyCA.CertPath,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--cert-dir=" + filepath.Join(c.DataDir, "tls"),
		"--profiling=false",
		"--event-ttl=1h",
	}
	if c.EtcdCAFile != "" {
		args = append(args, "--etcd-cafile="+c.EtcdCAFile)
	}
	if c.EtcdCertFile != "" {
		args = append(args, "--etcd-certfile="+c.EtcdCertFile, "--etcd-keyfile="+c.EtcdKeyFile)
	}
	return args
}

func (s *Server) controllerManagerArgs() []string {
	c, b := s.cfg, s.pki
	return []string{
		"--kubeconfig=" + s.kubeconfigPath("controller-manager"),
		"--secure-port=0",
		"--leader-elect=" + strconv.FormatBool(s.clustered),
		// In-process over loopback: upstream's client rate limits (20 QPS)
		// are meant for a shared remote API server and slow big rollouts.
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + b.SAKey,
		"--root-ca-file=" + b.CA.CertPath,
		"--cluster-signing-cert-file=" + b.CA.CertPath,
		"--cluster-signing-key-file=" + b.CA.KeyPath,
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + c.ClusterCIDR,
		"--node-cidr-mask-size=" + strconv.Itoa(c.NodeCIDRMaskSize),
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--configure-cloud-routes=false",
		"--cluster-name=skiff",
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--profiling=false",
	}
}

func (s *Server) schedulerArgs() []string {
	return []string{
		"--kubeconfig=" + s.kubeconfigPath("scheduler"),
		"--authentication-kubeconfig=" + s.kubeconfigPath("scheduler"),
		"--authorization-kubeconfig=" + s.kubeconfigPath("scheduler"),
		"--secure-port=0",
		"--leader-elect=" + strconv.FormatBool(s.clustered),
		"--profiling=false",
		// The scheduler's 50 QPS default caps binding at ~50 pods/s.
		"--kube-api-qps=200",
		"--kube-api-burst=400",
	}
}

func (s *Server) kubeconfigPath(component string) string {
	return filepath.Join(s.cfg.DataDir, "tls", component+".kubeconfig")
}

// writeKubeconfigs writes the admin kubeconfig users take and the ones the
// in-process components use.
func (s *Server) writeKubeconfigs() error {
	local := fmt.Sprintf("https://127.0.0.1:%d", s.cfg.HTTPSPort)
	b := s.pki
	for _, kc := range []struct {
		path string
		leaf *pki.Leaf
		user string
	}{
		{s.AdminKubeconfig(), b.Admin, "skiff-admin"},
		{s.kubeconfigPath("controller-manager"), b.ControllerMgr, "system:kube-controller-manager"},
		{s.kubeconfigPath("scheduler"), b.Scheduler, "system:kube-scheduler"},
	} {
		if err := pki.WriteKubeconfig(kc.path, local, b.CA.CertPath, kc.leaf, kc.user); err != nil {
			return err
		}
	}
	return nil
}

// NodeKubeconfig issues a node client certificate (system:node:NAME in
// system:nodes, what TLS bootstrap would give) for the agent that runs inside
// the server process, and writes its kubeconfig. It returns the kubeconfig
// and the CA file the kubelet trusts for its API clients.
func (s *Server) NodeKubeconfig(node string) (kubeconfig, caFile string, err error) {
	leaf, err := s.pki.CA.Issue(s.pki.Dir, pki.LeafSpec{
		Name: "node-" + node, CommonName: "system:node:" + node, Organization: []string{"system:nodes"}, Client: true,
	})
	if err != nil {
		return "", "", err
	}
	kubeconfig = filepath.Join(s.cfg.DataDir, "tls", "node-"+node+".kubeconfig")
	local := fmt.Sprintf("https://127.0.0.1:%d", s.cfg.HTTPSPort)
	if err := pki.WriteKubeconfig(kubeconfig, local, s.pki.CA.CertPath, leaf, "system:node:"+node); err != nil {
		return "", "", err
	}
	return kubeconfig, s.pki.CA.CertPath, nil
}

// Address is the address nodes reach the API server at.
func (s *Server) Address() string { return s.cfg.AdvertiseAddress }
