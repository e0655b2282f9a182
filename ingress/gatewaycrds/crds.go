// Package gatewaycrds embeds the standard-channel install of the Gateway API
// (sigs.k8s.io/gateway-api v1.6.3, config/crd/standard, copied unchanged)
// so the server can install the CRDs at bootstrap, with no network.
//
// To move to another release, copy that directory of the module cache over
// the YAML files here and update Version.
package gatewaycrds

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/skiffnet/skiff/controlplane/crds"
)

// Version is the Gateway API release of the embedded files.
const Version = "v1.6.3"

//go:embed *.yaml
var files embed.FS

// Bundle is the decoded standard install: CRDs and the admission policy
// that stops unsafe downgrades to experimental CRDs.
type Bundle struct {
	CRDs     []*apiextensionsv1.CustomResourceDefinition
	Policies []*admissionv1.ValidatingAdmissionPolicy
	Bindings []*admissionv1.ValidatingAdmissionPolicyBinding
}

// Files returns the embedded YAML files by name.
func Files() map[string][]byte {
	out := map[string][]byte{}
	names, _ := fs.Glob(files, "*.yaml")
	for _, n := range names {
		b, _ := files.ReadFile(n)
		out[n] = b
	}
	return out
}

// Load decodes the embedded files.
func Load() (*Bundle, error) {
	fm := Files()
	names := make([]string, 0, len(fm))
	for n := range fm {
		names = append(names, n)
	}
	sort.Strings(names)
	b := &Bundle{}
	for _, n := range names {
		for i, doc := range bytes.Split(fm[n], []byte("\n---")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return nil, fmt.Errorf("%s document %d: %w", n, i, err)
			}
			var obj any
			switch meta.Kind {
			case "CustomResourceDefinition":
				crd := &apiextensionsv1.CustomResourceDefinition{}
				b.CRDs, obj = append(b.CRDs, crd), crd
			case "ValidatingAdmissionPolicy":
				p := &admissionv1.ValidatingAdmissionPolicy{}
				b.Policies, obj = append(b.Policies, p), p
			case "ValidatingAdmissionPolicyBinding":
				p := &admissionv1.ValidatingAdmissionPolicyBinding{}
				b.Bindings, obj = append(b.Bindings, p), p
			default:
				return nil, fmt.Errorf("%s document %d: unexpected kind %q", n, i, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				return nil, fmt.Errorf("%s document %d (%s): %w", n, i, meta.Kind, err)
			}
		}
	}
	return b, nil
}

// Install creates the CRDs and policies that are missing and updates the
// CRDs of another bundle version (controlplane/crds), so a server upgrade
// brings its CRDs along. Objects of the same version are left alone.
func Install(ctx context.Context, ext apiextensionsclient.Interface, kube kubernetes.Interface) error {
	b, err := Load()
	if err != nil {
		return err
	}
	if err := crds.Ensure(ctx, ext, bundleVersion, b.CRDs...); err != nil {
		return err
	}
	pols := kube.AdmissionregistrationV1().ValidatingAdmissionPolicies()
	for _, p := range b.Policies {
		if _, err := pols.Create(ctx, p, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating ValidatingAdmissionPolicy %s: %w", p.Name, err)
		}
	}
	binds := kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings()
	for _, p := range b.Bindings {
		if _, err := binds.Create(ctx, p, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating ValidatingAdmissionPolicyBinding %s: %w", p.Name, err)
		}
	}
	return nil
}

const bundleVersion = "gateway.networking.k8s.io/bundle-version"
