// Package kubelet runs the upstream kubelet inside `skiff agent`, configured
// for a Skiff node: containerd through CRI, Skiff's cluster DNS, a cgroup
// subtree of the node's own (so several simulated nodes share one kernel),
// and certificates obtained through TLS bootstrap.
package kubelet

import (
	"fmt"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// Config describes one node's kubelet.
type Config struct {
	NodeName          string
	NodeIP            string
	RootDir           string // kubelet state: pods, volumes, plugins
	PodLogsDir        string // container logs; per node, as simulated nodes share a filesystem
	CertDir           string // kubelet client and serving certificates
	Kubeconfig        string // written by TLS bootstrap (or by the server for its own node)
	BootstrapConfig   string // bootstrap-token kubeconfig; empty when Kubeconfig is given
	ClientCAFile      string // CA that signs clients of the kubelet API (the API server)
	RuntimeEndpoint   string // CRI socket, unix:///...
	CgroupRoot        string // e.g. /skiff-node1
	ClusterDNS        string
	ClusterDomain     string
	ResolvConf        string // the node's resolver configuration, for dnsPolicy Default
	Port              int    // kubelet API port; default 10250
	MaxPods           int32
	ImageGCHighPct    int32
	EvictionThreshold string // e.g. "1%": simulated nodes share one disk
}

// configFile renders the KubeletConfiguration.
func (c Config) configFile() ([]byte, error) {
	port := c.Port
	if port == 0 {
		port = 10250
	}
	evict := c.EvictionThreshold
	if evict == "" {
		evict = "2%"
	}
	kc := kubeletv1beta1.KubeletConfiguration{
		TypeMeta: metav1.TypeMeta{APIVersion: "kubelet.config.k8s.io/v1beta1", Kind: "KubeletConfiguration"},
		Address:  c.NodeIP,
		Port:     int32(port),
		Authentication: kubeletv1beta1.KubeletAuthentication{
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: c.ClientCAFile},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: ptr.To(true)},
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: ptr.To(false)},
		},
		Authorization:            kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		ReadOnlyPort:             0,
		HealthzPort:              ptr.To[int32](0),
		ClusterDNS:               []string{c.ClusterDNS},
		ClusterDomain:            c.ClusterDomain,
		ResolverConfig:           ptr.To(c.ResolvConf),
		ContainerRuntimeEndpoint: c.RuntimeEndpoint,
		CgroupDriver:             "cgroupfs",
		CgroupRoot:               c.CgroupRoot,
		CgroupsPerQOS:            ptr.To(true),
		// Debian 12 hosts may boot with cgroup v1; upstream still supports it when asked.
		FailCgroupV1:                  ptr.To(false),
		FailSwapOn:                    ptr.To(false),
		RotateCertificates:            true,
		MaxPods:                       c.MaxPods,
		ImageGCHighThresholdPercent:   ptr.To(c.ImageGCHighPct),
		ImageGCLowThresholdPercent:    ptr.To(c.ImageGCHighPct - 5),
		SerializeImagePulls:           ptr.To(false),
		NodeStatusReportFrequency:     metav1.Duration{Duration: time.Minute},
		NodeStatusUpdateFrequency:     metav1.Duration{Duration: 10 * time.Second},
		SyncFrequency:                 metav1.Duration{Duration: 10 * time.Second},
		FileCheckFrequency:            metav1.Duration{Duration: 10 * time.Second},
		LocalStorageCapacityIsolation: ptr.To(true),
		EvictionHard: map[string]string{
			"memory.available": "100Mi", "nodefs.available": evict, "imagefs.available": evict,
			"nodefs.inodesFree": evict, "imagefs.inodesFree": evict,
		},
		ProtectKernelDefaults: false,
		PodLogsDir:            c.PodLogsDir,
		// Pod sandboxes need no iptables rules from the kubelet: Skiff's data plane does networking.
		MakeIPTablesUtilChains: ptr.To(false),
	}
	if kc.MaxPods == 0 {
		kc.MaxPods = 110
	}
	if c.ImageGCHighPct == 0 {
		kc.ImageGCHighThresholdPercent, kc.ImageGCLowThresholdPercent = ptr.To[int32](95), ptr.To[int32](90)
	}
	out, err := yaml.Marshal(kc)
	if err != nil {
		return nil, fmt.Errorf("encode kubelet configuration: %w", err)
	}
	return out, nil
}

// args are the kubelet flags that are not part of KubeletConfiguration.
func (c Config) args(configPath string) []string {
	args := []string{
		"--config=" + configPath,
		"--root-dir=" + c.RootDir,
		"--cert-dir=" + c.CertDir,
		"--kubeconfig=" + c.Kubeconfig,
		"--hostname-override=" + c.NodeName,
		"--node-ip=" + c.NodeIP,
	}
	if c.BootstrapConfig != "" {
		args = append(args, "--bootstrap-kubeconfig="+c.BootstrapConfig)
	}
	return args
}

// ConfigPath is where the rendered KubeletConfiguration lives.
func (c Config) ConfigPath() string { return filepath.Join(c.RootDir, "config.yaml") }
