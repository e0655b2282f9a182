package e2eimages

import (
	"fmt"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	imageutils "k8s.io/kubernetes/test/utils/image"
)

// epoch keeps builds reproducible: the same inputs give the same digest.
var epoch = time.Unix(0, 0)

// Programs are the binaries built from upstream's Go code at the
// Kubernetes version under test, and where that code is.
type Programs struct {
	Agnhost, Nonewprivs, Consumer, ConsumeCPU, SampleAPIServer, Etcd, Pause string
	// Busybox is busybox built from Debian's source by
	// test/conformance/busybox.sh: its ash looks up PATH and passes on
	// environment variables that are not shell names, as upstream's busybox
	// image does. Debian's busybox-static runs its own applets before PATH
	// (and its wget crashes on -T, the tests' timeout flag); Debian's busybox
	// package drops those variables.
	Busybox string
	// KubernetesSource is k8s.io/kubernetes's module directory: kitten and
	// nautilus carry its pictures.
	KubernetesSource string
}

// Host programs (Debian packages) the images carry; Packages names them.
const (
	curlBin     = "/usr/bin/curl"
	digBin      = "/usr/bin/dig"
	nslookupBin = "/usr/bin/nslookup"
	bashBin     = "/bin/bash"
	ncBin       = "/bin/nc.openbsd"
	nginxBin    = "/usr/sbin/nginx"
	stressBin   = "/usr/bin/stress"
	getentBin   = "/usr/bin/getent" // libc-bin: the DNS tests check /etc/hosts with it
	wgetBin     = "/usr/bin/wget"
)

// Packages are the Debian packages the images are made from.
var Packages = []string{"bash", "wget", "curl", "dnsutils", "netcat-openbsd", "nginx", "stress"}

// RepoList maps every registry the e2e tests name to one under registry,
// as KUBE_TEST_REPO_LIST does; the invalid and private registries stay as
// they are, since tests expect pulls from them to fail.
func RepoList(registry string) imageutils.RegistryList {
	return imageutils.RegistryList{
		PromoterE2eRegistry:      registry + "/e2e-test-images",
		BuildImageRegistry:       registry + "/build-image",
		InvalidRegistry:          "invalid.registry.k8s.io/invalid",
		GcEtcdRegistry:           registry,
		GcRegistry:               registry,
		SigStorageRegistry:       registry + "/sig-storage",
		PrivateRegistry:          "gcr.io/k8s-authenticated-test",
		DockerLibraryRegistry:    registry + "/library",
		CloudProviderGcpRegistry: registry + "/cloud-provider-gcp",
	}
}

// Build returns the images Skiff can build, by upstream image ID; the
// rest (node-perf, volume servers, Windows images) are not used by the
// conformance tests.
func Build(p Programs) (map[imageutils.ImageID]v1.Image, error) {
	base, err := busybox(p.Busybox)
	if err != nil {
		return nil, err
	}
	agn, err := agnhostRoot(base, p)
	if err != nil {
		return nil, err
	}
	out := map[imageutils.ImageID]v1.Image{}
	add := func(id imageutils.ImageID, r *Rootfs, cfg v1.Config, err error) error {
		if err != nil {
			return fmt.Errorf("image %s: %w", imageutils.GetE2EImage(id), err)
		}
		img, err := image(r, cfg)
		if err != nil {
			return fmt.Errorf("image %s: %w", imageutils.GetE2EImage(id), err)
		}
		out[id] = img
		return nil
	}
	agnCfg := v1.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}}
	steps := []error{
		add(imageutils.BusyBox, base, v1.Config{Cmd: []string{"sh"}}, nil),
		add(imageutils.Agnhost, agn, agnCfg, nil),
		add(imageutils.AgnhostPrev, agn, agnCfg, nil),
		add(imageutils.NonRoot, base, v1.Config{Cmd: []string{"sh"}, User: "1234"}, nil),
	}
	for _, pic := range []struct {
		id   imageutils.ImageID
		name string
	}{{imageutils.Kitten, "kitten"}, {imageutils.Nautilus, "nautilus"}} {
		r, err := withFiles(agn, map[string]string{
			"/" + pic.name + ".jpg": filepath.Join(p.KubernetesSource, "test/images", pic.name, "html", pic.name+".jpg"),
			"/data.json":            filepath.Join(p.KubernetesSource, "test/images", pic.name, "html", "data.json"),
		})
		steps = append(steps, add(pic.id, r, v1.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"test-webserver"}}, err))
	}
	dns, err := dnsRoot(base)
	steps = append(steps, add(imageutils.GlibcDnsTesting, dns, v1.Config{Cmd: []string{"sh"}}, err))
	ng, err := nginxRoot(base)
	ngCfg := v1.Config{Cmd: []string{"nginx", "-g", "daemon off;"}, ExposedPorts: map[string]struct{}{"80/tcp": {}}}
	steps = append(steps, add(imageutils.Nginx, ng, ngCfg, err), add(imageutils.NginxNew, ng, ngCfg, err))

	nnp := base.Clone()
	err = nnp.Copy(p.Nonewprivs, "/usr/local/bin/nnp")
	nnp.Chmod("/usr/local/bin/nnp", 0o4755) // the test checks that no_new_privs stops this setuid bit
	steps = append(steps, add(imageutils.Nonewprivs, nnp, v1.Config{Cmd: []string{"nnp"}}, err))

	rc, err := withFiles(base, map[string]string{"/consumer": p.Consumer, "/consume-cpu/consume-cpu": p.ConsumeCPU})
	if err == nil {
		err = rc.Program(stressBin, stressBin)
	}
	steps = append(steps, add(imageutils.ResourceConsumer, rc, v1.Config{Entrypoint: []string{"/consumer"}}, err))

	api, err := withFiles(base, map[string]string{"/sample-apiserver": p.SampleAPIServer})
	steps = append(steps, add(imageutils.APIServer, api, v1.Config{Entrypoint: []string{"/sample-apiserver"}}, err))
	etcd, err := withFiles(base, map[string]string{"/usr/local/bin/etcd": p.Etcd})
	steps = append(steps, add(imageutils.Etcd, etcd, v1.Config{Cmd: []string{"/usr/local/bin/etcd"}}, err))
	pause, err := withFiles(NewRootfs(), map[string]string{"/pause": p.Pause})
	steps = append(steps, add(imageutils.Pause, pause, v1.Config{Entrypoint: []string{"/pause"}}, err))
	for _, err := range steps {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// busybox is the base of most images: busybox with every applet linked in
// place and ash as /bin/sh, as upstream's images have it (tests compare its
// error messages), GNU wget in front of the applet, bash beside it (the
// agnhost image has it upstream), and the users and groups the tests expect.
func busybox(bin string) (*Rootfs, error) {
	r := NewRootfs()
	if err := r.Program(bin, "/bin/busybox"); err != nil {
		return nil, fmt.Errorf("busybox (make conformance-tools unpacks Debian's busybox package there): %w", err)
	}
	out, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" {
			continue
		}
		// Upstream's busybox image has every applet in /bin as well
		// (tests run /bin/sysctl), Debian's list puts some in sbin.
		r.Symlink(applet, "/bin/busybox")
		r.Symlink("/bin/"+path.Base(applet), "/bin/busybox")
	}
	// Busybox's wget crashes with -T in Debian's build: GNU wget takes its
	// place at /usr/bin/wget, which comes first in PATH.
	for _, prog := range []string{bashBin, wgetBin} {
		if err := r.Program(prog, prog); err != nil {
			return nil, err
		}
	}
	r.File("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"+
		"nginx:x:101:101:nginx:/nonexistent:/bin/false\n"+
		"user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n"), 0o644)
	r.File("/etc/group", []byte("root:x:0:\nnogroup:x:65534:\nnginx:x:101:\n"+
		"user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"), 0o644)
	r.File("/etc/nsswitch.conf", []byte("passwd: files\ngroup: files\nhosts: files dns\n"), 0o644)
	return r, nil
}

// agnhostOSRelease names the distribution of the upstream image this one
// stands in for, not the Debian tools inside it.
const agnhostOSRelease = `# Skiff's offline rebuild of registry.k8s.io/e2e-test-images/agnhost (test/conformance/e2eimages).
# The upstream image is built on Alpine Linux; these fields are the upstream image's, so that tests
# reading them through an image volume see what they see upstream.
NAME="Alpine Linux"
ID=alpine
`

// agnhostRoot is upstream's agnhost image: the agnhost binary on a shell
// with the network tools its tests run (curl, dig, nc, getent), and the
// certificate its porter serves TLS with.
func agnhostRoot(base *Rootfs, p Programs) (*Rootfs, error) {
	porter := filepath.Join(p.KubernetesSource, "test/images/agnhost/porter")
	r, err := withFiles(base, map[string]string{
		"/agnhost":       p.Agnhost,
		"/localhost.crt": filepath.Join(porter, "localhost.crt"),
		"/localhost.key": filepath.Join(porter, "localhost.key"),
	})
	if err != nil {
		return nil, err
	}
	r.Symlink("/agnhost-2", "agnhost")
	// Upstream's agnhost (and kitten and nautilus, built on it) is
	// Alpine-based; tests that mount these images as image volumes read its
	// os-release to see that the whole root came through.
	r.File("/etc/os-release", []byte(agnhostOSRelease), 0o644)
	r.Dir("/uploads", 0o777)
	for _, prog := range [][2]string{{curlBin, "/usr/bin/curl"}, {digBin, "/usr/bin/dig"},
		{nslookupBin, "/usr/bin/nslookup"}, {ncBin, "/usr/bin/nc"}, {getentBin, "/usr/bin/getent"}} {
		if err := r.Program(prog[0], prog[1]); err != nil {
			return nil, err
		}
	}
	// curl checks certificates against the system bundle when asked to.
	if err := r.Copy("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt"); err != nil {
		return nil, err
	}
	return r, nil
}

// dnsRoot is the glibc-dns-testing image: Debian's dig and glibc's getent,
// the resolver tools the DNS tests compare with agnhost's.
func dnsRoot(base *Rootfs) (*Rootfs, error) {
	r := base.Clone()
	for _, prog := range []string{digBin, nslookupBin, getentBin} {
		if err := r.Program(prog, prog); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// nginxRoot serves /usr/share/nginx/html on port 80, as the nginx image
// the tests use does, logging to the container's output.
func nginxRoot(base *Rootfs) (*Rootfs, error) {
	r := base.Clone()
	if err := r.Program(nginxBin, "/usr/sbin/nginx"); err != nil {
		return nil, err
	}
	if err := r.Copy("/etc/nginx/mime.types", "/etc/nginx/mime.types"); err != nil {
		return nil, err
	}
	r.File("/etc/nginx/nginx.conf", []byte(`user nginx;
worker_processes 1;
error_log /dev/stderr notice;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    server {
        listen 80;
        location / { root /usr/share/nginx/html; index index.html; }
    }
}
`), 0o644)
	r.File("/usr/share/nginx/html/index.html", []byte("<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n<body><h1>Welcome to nginx!</h1></body></html>\n"), 0o644)
	for _, d := range []string{"/run", "/var/log/nginx", "/var/lib/nginx", "/var/cache/nginx"} {
		r.Dir(d, 0o755)
	}
	return r, nil
}

// withFiles is base with host files copied in (path in image → host path).
func withFiles(base *Rootfs, files map[string]string) (*Rootfs, error) {
	r := base.Clone()
	for dst, src := range files {
		if err := r.Copy(src, dst); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// image is r as a one-layer linux image of this machine's architecture.
func image(r *Rootfs, c v1.Config) (v1.Image, error) {
	layer, err := r.Layer()
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Created = v1.Time{Time: epoch}
	if c.Env == nil {
		c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	if c.WorkingDir == "" {
		c.WorkingDir = "/"
	}
	cfg.Config = c
	return mutate.ConfigFile(img, cfg)
}
