package gatewayconformance

import (
	"fmt"
	"io/fs"
	"regexp"
	"testing/fstest"

	"sigs.k8s.io/gateway-api/conformance"
)

var (
	// echoBasicImage matches every tag of the suite's backend image (the
	// base manifests and the tests' own pin different development tags).
	echoBasicImage = regexp.MustCompile(`registry\.k8s\.io/gateway-api/echo-basic:[^\s"']+`)
	// corednsImage is the UDPRoute tests' DNS backend. GATEWAY-HTTP never
	// sends it traffic, but setup waits for every pod in the infra
	// namespace to be Ready, and there is no internet to pull it from; the
	// echo-basic image (which ignores coredns's arguments) stands in.
	corednsImage = regexp.MustCompile(`registry\.k8s\.io/coredns/coredns:[^\s"']+`)
)

// manifests is the conformance module's embedded manifests (base/, tests/,
// mesh/) with its images replaced by ref, an image in the cluster's
// registry. The suite reads its manifests only through ManifestFS, which
// makes this the place to point it at another image.
func manifests(ref string) (fs.FS, int, error) {
	out := fstest.MapFS{}
	replaced := 0
	err := fs.WalkDir(conformance.Manifests, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(conformance.Manifests, p)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		replaced += len(echoBasicImage.FindAllIndex(b, -1)) + len(corednsImage.FindAllIndex(b, -1))
		b = echoBasicImage.ReplaceAll(b, []byte(ref))
		b = corednsImage.ReplaceAll(b, []byte(ref))
		out[p] = &fstest.MapFile{Data: b, Mode: 0o644}
		return nil
	})
	return out, replaced, err
}
